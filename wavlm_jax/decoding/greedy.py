"""Greedy (best-path) CTC decoding: the most likely token per frame, repeats merged, blanks removed."""

from __future__ import annotations

import numpy as np


def collapse(path: np.ndarray, blank: int = 0) -> list[int]:
  """A frame-level token path -> the label sequence (merge repeats, then drop blanks)."""
  path = np.asarray(path)
  if path.size == 0:
    return []
  keep = np.ones(len(path), bool)
  keep[1:] = path[1:] != path[:-1]
  return [int(t) for t in path[keep] if t != blank]


def decode(log_probs: np.ndarray, lengths: np.ndarray, blank: int = 0) -> list[list[int]]:
  """log_probs (B, T, V) (or logits), lengths (B,) valid frames -> one id sequence per utterance."""
  best = np.argmax(np.asarray(log_probs), axis=-1)
  return [collapse(best[i, :int(n)], blank) for i, n in enumerate(np.asarray(lengths))]
