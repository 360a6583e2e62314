"""WavLM's denoising augmentation: utterance mixing and noise mixing of a cropped batch
(docs/objectives.md#utterance-mixing).

With probability `mix_prob` a row gets a secondary signal added on a segment of at most `max_fraction`
of its valid length: with probability `noise_prob` a noise clip at an SNR from U(noise_snr), otherwise a
segment of another utterance of the batch at an energy ratio from U(utterance_snr). Energies are over
the whole primary and secondary signals, as in the reference. Targets are untouched: the model still
predicts the primary speaker's units.

Differences from the reference (UniSpeech `utterance_mixing_dataset.py`), on by default:
  - a row is never mixed with itself (the reference may pick its own index);
  - secondaries are taken from the unmixed batch (the reference mixes in place in loop order, so a
    later row can receive an already-mixed secondary).
`reference_behaviour=True` restores both.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class MixInfo:
  """What was mixed, per row (for tests, TensorBoard and debugging)."""
  mixed: np.ndarray  # bool (B,)
  noise: np.ndarray  # bool (B,): noise branch (else utterance branch where mixed)
  partner: np.ndarray  # int (B,): secondary row (utterance branch), -1 otherwise
  start: np.ndarray  # int (B,): first primary sample of the segment
  length: np.ndarray  # int (B,): segment length in samples
  snr_db: np.ndarray  # float (B,)
  scale: np.ndarray  # float (B,): gain applied to the secondary


def _energy(x: np.ndarray, n: np.ndarray) -> np.ndarray:
  return np.sum(np.square(x, dtype=np.float64), axis=-1) / np.maximum(n, 1)


def _gain(e_primary, e_secondary, snr_db):
  with np.errstate(divide="ignore", invalid="ignore"):
    g = np.sqrt(e_primary / (e_secondary * 10.0 ** (snr_db / 10.0)))
  return np.where(e_secondary > 0, g, 0.0)


def mix_batch(audio: np.ndarray, padding_mask: np.ndarray | None, rng: np.random.Generator, *, mix_prob: float,
              noise_prob: float = 0.0, noises: list[np.ndarray] | None = None, max_fraction: float = 0.5,
              utterance_snr=(-5.0, 5.0), noise_snr=(-5.0, 20.0), reference_behaviour: bool = False):
  """Returns (mixed audio (B, N) float32, MixInfo). `audio` is not modified."""
  b, n = audio.shape
  valid = np.full(b, n) if padding_mask is None else n - padding_mask.sum(axis=1)
  mixed = rng.random(b) < mix_prob
  noise = mixed & (rng.random(b) < noise_prob) if noises else np.zeros(b, bool)
  utter = mixed & ~noise
  if b < 2 and not reference_behaviour:
    utter[:] = False
    mixed = noise.copy()
  if reference_behaviour:
    partner = rng.integers(0, b, size=b)
  else:
    partner = (np.arange(b) + rng.integers(1, max(b, 2), size=b)) % b
  partner = np.where(utter, partner, -1)
  max_len = np.floor(valid * max_fraction).astype(np.int64)
  length = rng.integers(0, max_len + 1)
  snr = np.where(noise, rng.uniform(*noise_snr, size=b), rng.uniform(*utterance_snr, size=b))
  noise_id = rng.integers(0, len(noises), size=b) if noises else np.zeros(b, np.int64)

  # Secondary sources and their lengths.
  sec_len = np.where(utter, valid[np.maximum(partner, 0)], 0)
  if noises:
    sec_len = np.where(noise, [len(noises[i]) for i in noise_id], sec_len)
  length = np.where(mixed, np.minimum(length, sec_len), 0)
  start = rng.integers(0, np.maximum(valid - length, 0) + 1)
  sec_start = rng.integers(0, np.maximum(sec_len - length, 0) + 1)

  out = audio.astype(np.float32, copy=True)
  e_primary = _energy(audio, valid)
  scale = np.zeros(b)
  if reference_behaviour:
    for i in np.flatnonzero(mixed):  # in place, in loop order, as the reference
      src = noises[noise_id[i]] if noise[i] else out[partner[i], :sec_len[i]]
      e_sec = float(np.mean(np.square(src, dtype=np.float64))) if len(src) else 0.0
      e_pri = float(np.mean(np.square(out[i, :valid[i]], dtype=np.float64)))
      scale[i] = _gain(e_pri, e_sec, snr[i])
      seg = src[sec_start[i]:sec_start[i] + length[i]]
      out[i, start[i]:start[i] + length[i]] += (scale[i] * seg).astype(np.float32)
  else:
    t = np.arange(n)[None, :] - start[:, None]
    inside = (t >= 0) & (t < length[:, None])
    rows = np.flatnonzero(utter)
    if len(rows):
      src_index = np.clip(sec_start[rows, None] + t[rows], 0, n - 1)
      seg = np.take_along_axis(audio[partner[rows]], src_index, axis=1)
      e_sec = _energy(audio[partner[rows]], valid[partner[rows]])
      scale[rows] = _gain(e_primary[rows], e_sec, snr[rows])
      out[rows] += np.where(inside[rows], scale[rows, None] * seg, 0.0).astype(np.float32)
    for i in np.flatnonzero(noise):
      clip = noises[noise_id[i]]
      scale[i] = _gain(e_primary[i], float(np.mean(np.square(clip, dtype=np.float64))), snr[i])
      out[i, start[i]:start[i] + length[i]] += (scale[i] * clip[sec_start[i]:sec_start[i] + length[i]]).astype(
          np.float32)
  return out, MixInfo(mixed, noise, partner, start, length, snr, scale)
