"""The audio conventions every layer shares, with no dependency on the rest of the package: the sample
rate, int16 <-> float, per-utterance waveform normalisation, and the frame / label rate rules.

Frames: the conv frontend (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2) turns N samples into
floor((N - 400) / 320) + 1 frames, 50 per second: 320 samples per frame, a 400-sample receptive field
(docs/model.md). Labels at 50 or 100 Hz go with audio in two halves of one rule:
  - cropping (the input pipeline): a crop of S samples starting at sample s carries
    label_count(S, rate) labels starting at label round(s * rate / 16000);
  - alignment (the loss): model frame t takes label floor(t * rate / frame_rate), fairseq's
    `target_inds` (docs/objectives.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
INT16_SCALE = 32768.0  # int16 -> [-1, 1): x / 32768, as soundfile and torchaudio read PCM16


def to_float(audio) -> np.ndarray:
  """A waveform as float32 in [-1, 1): int16 PCM is scaled by 1/32768, floats are passed through."""
  audio = np.asarray(audio)
  if np.issubdtype(audio.dtype, np.integer):
    return audio.astype(np.float32) / INT16_SCALE
  return audio.astype(np.float32, copy=False)


def to_int16(audio) -> np.ndarray:
  """Float audio in [-1, 1] -> int16 PCM (rounded, clipped)."""
  return np.clip(np.round(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def check_batch(waveforms, padding_mask=None) -> None:
  """Raises ValueError unless `waveforms` is (batch, samples) and `padding_mask`, if given, the same shape
  (NumPy or JAX arrays: only the shapes are read)."""
  if np.ndim(waveforms) != 2:
    raise ValueError(f"waveforms must be (batch, samples), got shape {np.shape(waveforms)}")
  if padding_mask is not None and np.shape(padding_mask) != np.shape(waveforms):
    raise ValueError(f"padding_mask shape {np.shape(padding_mask)} != waveforms shape {np.shape(waveforms)}")


def normalize_waveform(waveforms, padding_mask=None, eps: float = 1e-5, xp=np):
  """Per-utterance zero mean, unit variance over the valid samples (fairseq `F.layer_norm(wav, shape)`,
  eps 1e-5, biased variance); padding is set to zero afterwards. `xp` is numpy (the input pipeline, on
  the host) or jax.numpy (inside a jitted model)."""
  x = waveforms.astype(xp.float32)
  valid = xp.ones(x.shape, bool) if padding_mask is None else ~padding_mask
  count = xp.maximum(xp.sum(valid, axis=-1, keepdims=True), 1)
  mean = xp.sum(xp.where(valid, x, 0), axis=-1, keepdims=True) / count
  var = xp.sum(xp.where(valid, xp.square(x - mean), 0), axis=-1, keepdims=True) / count
  return xp.where(valid, (x - mean) / xp.sqrt(var + eps), 0).astype(xp.float32)


def samples_per_frame(conv_stride: Sequence[int]) -> int:
  """The frontend's total stride (320 for every WavLM/HuBERT card)."""
  return math.prod(conv_stride)


def frame_rate(conv_stride: Sequence[int]) -> float:
  """Model frames per second (50 Hz for every card), derived from the conv strides."""
  return SAMPLE_RATE / samples_per_frame(conv_stride)


def label_count(samples: int, label_rate: float) -> int:
  """Labels that go with `samples` of audio at `label_rate` Hz (the cropping half of the rule)."""
  return int(round(samples * label_rate / SAMPLE_RATE))


def label_start(sample: int, label_rate: float) -> int:
  """The first label of a crop starting at `sample` (the cropping half of the rule)."""
  return int(round(sample * label_rate / SAMPLE_RATE))
