"""CTC forced alignment: the most probable frame path of a CTC model that spells a given token sequence
(Viterbi over the blank-extended sequence), and frame labels from it with the blank frames filled.

    path = align.viterbi(log_probs, tokens)           # (T,) ids: blank or a token, collapsing to `tokens`
    labels = align.frame_labels(log_probs, tokens)    # (T,) token ids, every frame one of `tokens`
    labels = align.greedy_frame_labels(log_probs)     # the same for the greedy decode's own tokens

Tokens from a greedy decode need no search: the frame-wise argmax path is the best path of all, so it is
also the best path that spells its own collapse (`greedy_frame_labels` takes it directly). The Viterbi
search is for tokens from elsewhere: a beam search with a lexicon or LM, or a transcript.

CTC paths are peaky: a token occupies a frame or two and blanks fill the rest. For frame-level targets
(PBERT-style phone labels) every frame needs a token: blank frames before the first token take the first,
after the last take the last, and a run of blanks between two tokens is split at its middle (the earlier
half, with an odd run's middle frame, to the token before, the rest to the token after).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEG_INF = -np.inf


def _extended(tokens: Sequence[int], blank: int) -> np.ndarray:
  ext = np.full(2 * len(tokens) + 1, blank, np.int64)
  ext[1::2] = tokens
  return ext


def viterbi(log_probs: np.ndarray, tokens: Sequence[int], blank: int = 0) -> np.ndarray:
  """The best CTC path (one state of the extended sequence [blank, t1, blank, t2, ..., blank] per frame)
  through `log_probs` (T, V) that collapses to `tokens`. Returns the extended-sequence state per frame
  (even: a blank, odd 2k+1: token k). Raises ValueError when T frames cannot spell the tokens (a token
  per frame, plus a blank between repeats)."""
  log_probs = np.asarray(log_probs, np.float64)
  tokens = np.asarray(tokens, np.int64)
  if log_probs.ndim != 2:
    raise ValueError(f"log_probs must be (frames, vocabulary), got shape {log_probs.shape}")
  if np.any(tokens == blank):
    raise ValueError(f"the token sequence holds the blank id {blank}")
  T, L = log_probs.shape[0], len(tokens)
  needed = L + int(np.sum(tokens[1:] == tokens[:-1])) if L else 0
  if T < max(needed, 1):
    raise ValueError(f"{T} frames cannot align {L} tokens ({needed} frames needed)")
  ext = _extended(tokens, blank)
  S = len(ext)
  emit = log_probs[:, ext]  # (T, S)
  # A skip (s-2 -> s) is allowed into a token that differs from the token two states back.
  skip = np.zeros(S, bool)
  skip[3::2] = ext[3::2] != ext[1:-2:2]
  delta = np.full(S, NEG_INF)
  delta[0] = emit[0, 0]
  if S > 1:
    delta[1] = emit[0, 1]
  back = np.zeros((T, S), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
  for t in range(1, T):
    stay = delta
    step = np.concatenate([[NEG_INF], delta[:-1]])
    jump = np.where(skip, np.concatenate([[NEG_INF, NEG_INF], delta[:-2]]), NEG_INF)
    choices = np.stack([stay, step, jump])
    back[t] = np.argmax(choices, axis=0)
    delta = choices[back[t], np.arange(S)] + emit[t]
  ends = [S - 1] + ([S - 2] if S > 1 else [])
  s = max(ends, key=lambda e: delta[e])
  if not np.isfinite(delta[s]):
    raise ValueError(f"no path of {T} frames spells the {L} tokens")
  states = np.empty(T, np.int64)
  for t in range(T - 1, -1, -1):
    states[t] = s
    s -= int(back[t, s])
  return states


def path_positions(path: np.ndarray, blank: int = 0) -> np.ndarray:
  """Per frame of a CTC path (one id per frame): the index of the token it emits in the path's collapse,
  or -1 on a blank."""
  path = np.asarray(path)
  emits = path != blank
  starts = emits & np.concatenate([[True], path[1:] != path[:-1]])
  return np.where(emits, np.cumsum(starts) - 1, -1)


def token_positions(states: np.ndarray) -> np.ndarray:
  """Per frame: the index k of the token a path state emits, or -1 on a blank."""
  states = np.asarray(states)
  return np.where(states % 2 == 1, (states - 1) // 2, -1)


def fill_blanks(positions: np.ndarray) -> np.ndarray:
  """Token index per frame with every blank (-1) given a token: leading blanks the first, trailing ones
  the last, a run between two tokens split at its middle. All -1 (no tokens) stays all -1."""
  positions = np.asarray(positions, np.int64)
  T = len(positions)
  idx = np.arange(T)
  emitted = positions >= 0
  if not emitted.any():
    return positions.copy()
  # nearest emitting frame to the left and to the right of every frame
  left = np.maximum.accumulate(np.where(emitted, idx, -1))
  right = np.minimum.accumulate(np.where(emitted, idx, T)[::-1])[::-1]
  out = positions.copy()
  gap = ~emitted
  has_left, has_right = left >= 0, right < T
  only_left = gap & has_left & ~has_right
  only_right = gap & has_right & ~has_left
  both = gap & has_left & has_right
  out[only_left] = positions[left[only_left]]
  out[only_right] = positions[right[only_right]]
  # between two emitting frames: the first half of the gap (the middle frame of an odd gap too) to the
  # token on the left, the rest to the token on the right
  mid = left + 1 + (right - left) // 2
  out[both] = np.where(idx[both] < mid[both], positions[left[both]], positions[right[both]])
  return out


def frame_labels(log_probs: np.ndarray, tokens: Sequence[int], blank: int = 0) -> np.ndarray:
  """One token id per frame from the forced alignment of `tokens`, blank frames filled (`fill_blanks`).
  No tokens: every frame is `blank`."""
  tokens = np.asarray(tokens, np.int64)
  T = np.asarray(log_probs).shape[0]
  if len(tokens) == 0:
    return np.full(T, blank, np.int64)
  return tokens[fill_blanks(token_positions(viterbi(log_probs, tokens, blank)))]


def greedy_frame_labels(log_probs: np.ndarray, blank: int = 0) -> tuple[list[int], np.ndarray]:
  """The greedy decode of `log_probs` (T, V) and one of its token ids per frame, blank frames filled
  (`fill_blanks`): `frame_labels(log_probs, tokens)` for those tokens, without the search."""
  path = np.argmax(np.asarray(log_probs), axis=-1)
  positions = path_positions(path, blank)
  tokens = path[(positions >= 0) & np.concatenate([[True], positions[1:] != positions[:-1]])]
  if len(tokens) == 0:
    return [], np.full(len(path), blank, np.int64)
  return [int(t) for t in tokens], tokens[fill_blanks(positions)].astype(np.int64)
