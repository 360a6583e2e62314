"""Reading audio files for the dataset builders: any format soundfile or librosa reads, converted to
16 kHz mono int16; files that cannot be used raise `BadAudio` with the reason, so builders skip and
count them instead of dying."""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

import numpy as np

from wavlm_jax.audio import SAMPLE_RATE, to_int16
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".m4a")
_LIBROSA_ONLY = (".mp3", ".opus", ".m4a")  # formats an older libsndfile may not decode


class BadAudio(ValueError):
  """An audio file that cannot become an example; str(e) is the reason."""


def read_audio(path: str | os.PathLike, *, min_seconds: float = 0.0) -> np.ndarray:
  """The file as int16 mono at 16 kHz: resampled, down-mixed, checked for emptiness and NaN/Inf."""
  import soundfile

  path = Path(path)
  try:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
    if path.suffix.lower() not in _LIBROSA_ONLY:
      raise BadAudio(f"unreadable ({type(e).__name__}: {e})") from None
    try:
      import librosa
      data, rate = librosa.load(str(path), sr=None, mono=False)
      data = np.atleast_2d(data).T.astype(np.float32)
    except Exception:  # noqa: BLE001
      raise BadAudio(f"unreadable ({type(e).__name__}: {e})") from None
  if data.size == 0:
    raise BadAudio("empty")
  if not np.all(np.isfinite(data)):
    raise BadAudio("contains NaN or Inf samples")
  mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
  if rate != SAMPLE_RATE:
    import soxr
    mono = soxr.resample(mono, rate, SAMPLE_RATE)
  if len(mono) < min_seconds * SAMPLE_RATE:
    raise BadAudio(f"too short ({len(mono) / SAMPLE_RATE:.2f} s < {min_seconds} s)")
  return to_int16(mono)


@dataclasses.dataclass
class SkipReport:
  """Files a build skipped, with reasons; printed at the end of a build and saved with the dataset."""
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def skip(self, path, reason: str) -> None:
    self.skipped.append((str(path), reason))

  def to_json(self) -> dict:
    return {"skipped": [{"file": f, "reason": r} for f, r in self.skipped], "num_skipped": len(self.skipped)}

  def summary(self) -> str:
    if not self.skipped:
      return "no files skipped"
    lines = [f"skipped {len(self.skipped)} file(s):"] + [f"  {f}: {r}" for f, r in self.skipped]
    return "\n".join(lines)


def find_audio_files(root: str | os.PathLike) -> list[Path]:
  """Audio files below `root`, sorted (deterministic order)."""
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: not a directory")
  return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
