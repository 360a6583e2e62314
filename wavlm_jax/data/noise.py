"""Noise for WavLM's noise mixing: built-in synthetic noises (white, pink, brown, babble) so that it
works with nothing downloaded, and a bank loaded from a prepared `noise_dir` dataset."""

from __future__ import annotations

import numpy as np

from wavlm_jax.audio import SAMPLE_RATE, to_float
from wavlm_jax.data import espeak, text

KINDS = ("white", "pink", "brown", "babble")


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
  """Gaussian noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
  f[0] = f[1]
  spectrum *= f ** (-exponent / 2.0)
  spectrum[0] = 0.0  # no DC
  return np.fft.irfft(spectrum, n)


def _babble(rng: np.random.Generator, n: int, talkers: int = 6) -> np.ndarray:
  """Several eSpeak talkers speaking at once, looped to length n."""
  engine = espeak.Espeak()
  out = np.zeros(n)
  variants = [v for v in espeak.VARIANTS if v not in espeak.UNSEEN_VARIANTS]
  for _ in range(talkers):
    voice = f"en+{variants[int(rng.integers(len(variants)))]}"
    speech = engine.synthesize(text.sentence(rng, "en", 20, 30), voice, rate=int(rng.integers(140, 200)),
                               pitch=int(rng.integers(25, 75))).audio.astype(np.float64)
    speech = np.resize(speech, n) if len(speech) else np.zeros(n)
    out += np.roll(speech, int(rng.integers(n))) / (np.std(speech) + 1e-9)
  return out


def synthetic_noises(kinds=KINDS, clips_per_kind: int = 4, seconds: float = 10.0, seed: int = 0) -> list[np.ndarray]:
  """Deterministic synthetic noise clips (float32, unit RMS)."""
  n = int(seconds * SAMPLE_RATE)
  clips = []
  for k, kind in enumerate(kinds):
    if kind not in KINDS:
      raise ValueError(f"unknown synthetic noise {kind!r}; known: {KINDS}")
    for c in range(clips_per_kind):
      rng = np.random.default_rng([seed, k, c])
      x = {"white": lambda: rng.standard_normal(n), "pink": lambda: _coloured(rng, n, 1.0),
           "brown": lambda: _coloured(rng, n, 2.0), "babble": lambda: _babble(rng, n)}[kind]()
      clips.append((x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32))
  return clips


def load_noise_dataset(name: str, data_dir: str | None, split: str = "train", max_seconds: float = 3600.0) -> list[np.ndarray]:
  """Clips of a prepared noise dataset (e.g. `noise_dir/musan`), up to `max_seconds` in total."""
  import tensorflow_datasets as tfds

  source = tfds.data_source(name, split=split, data_dir=data_dir)
  clips, total = [], 0
  for i in range(len(source)):
    audio = to_float(source[i]["audio"])
    clips.append(audio)
    total += len(audio)
    if total >= max_seconds * SAMPLE_RATE:
      break
  if not clips:
    raise ValueError(f"noise dataset {name}/{split} is empty")
  return clips
