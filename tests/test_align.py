"""CTC forced alignment (wavlm_jax/decoding/align.py): monotonic, every token covered, a known path
recovered from synthetic posteriors, blanks filled by the alignment; checked against brute force."""

import itertools

import numpy as np
import pytest

from wavlm_jax.decoding import align, greedy


def _posteriors(path, vocab, sharp=4.0, noise=0.5, seed=0):
  """log-softmax of noisy logits whose argmax follows `path` (one id per frame)."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, noise, (len(path), vocab))
  logits[np.arange(len(path)), path] += sharp
  return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def test_recovers_a_known_path_and_fills_blanks_by_it():
  path = np.array([0, 0, 3, 0, 0, 0, 5, 5, 0, 5, 0, 2, 0, 0])
  tokens = greedy.collapse(path, 0)
  assert tokens == [3, 5, 5, 2]
  lp = _posteriors(path, 7)
  states = align.viterbi(lp, tokens)
  ext = np.array([0, 3, 0, 5, 0, 5, 0, 2, 0])
  np.testing.assert_array_equal(ext[states], path)
  labels = align.frame_labels(lp, tokens)
  # leading blanks -> the first token; a gap between two tokens split at its middle (an odd one's middle
  # frame to the left); trailing blanks -> the last token
  np.testing.assert_array_equal(labels, [3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 2, 2, 2])


def test_path_is_monotonic_covers_every_token_and_is_the_best():
  rng = np.random.default_rng(1)
  for trial in range(30):
    T, V = rng.integers(4, 9), 4
    lp = rng.normal(size=(T, V))
    lp -= np.logaddexp.reduce(lp, axis=1, keepdims=True)
    tokens = list(rng.integers(1, V, rng.integers(1, 4)))
    needed = len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:]))
    if needed > T:
      with pytest.raises(ValueError, match="cannot align"):
        align.viterbi(lp, tokens)
      continue
    states = align.viterbi(lp, tokens)
    assert np.all(np.diff(states) >= 0) and np.all(np.diff(states) <= 2)  # monotonic, no token skipped
    positions = align.token_positions(states)
    assert set(positions[positions >= 0]) == set(range(len(tokens)))  # every token emitted
    ext = np.zeros(2 * len(tokens) + 1, int)
    ext[1::2] = tokens
    assert greedy.collapse(ext[states], 0) == tokens
    score = lp[np.arange(T), ext[states]].sum()
    best = max(lp[np.arange(T), list(p)].sum() for p in itertools.product(range(V), repeat=T)
               if greedy.collapse(list(p), 0) == tokens)  # brute force over every path
    assert score == pytest.approx(best)
    labels = align.frame_labels(lp, tokens)
    assert greedy.collapse(list(labels), -1) == [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]


def test_fill_blanks_edges():
  np.testing.assert_array_equal(align.fill_blanks(np.array([-1, -1, 0, -1, 1, -1])), [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(align.fill_blanks(np.array([-1, 0, -1, -1, -1, -1, 1])), [0, 0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(align.fill_blanks(np.array([-1, -1])), [-1, -1])
  assert list(align.frame_labels(np.zeros((3, 4)), [])) == [0, 0, 0]
  with pytest.raises(ValueError, match="blank"):
    align.viterbi(np.zeros((3, 4)), [1, 0])


def test_greedy_labels_are_the_forced_alignment_of_the_greedy_decode():
  # The argmax path is the best path that spells its own collapse: taking it directly gives what the
  # Viterbi search over the greedy tokens gives.
  rng = np.random.default_rng(2)
  for trial in range(50):
    T, V = int(rng.integers(1, 40)), int(rng.integers(2, 6))
    lp = rng.normal(0, 2, (T, V))
    lp -= np.logaddexp.reduce(lp, axis=1, keepdims=True)
    tokens, labels = align.greedy_frame_labels(lp)
    assert tokens == greedy.collapse(np.argmax(lp, axis=-1), 0)
    np.testing.assert_array_equal(labels, align.frame_labels(lp, tokens))
