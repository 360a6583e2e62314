"""Reading audio files for the dataset builders: any format soundfile or librosa reads, converted to
16 kHz mono int16; files that cannot be used raise `BadAudio` with the reason, so builders skip and
count them instead of dying."""

from __future__ import annotations

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
  """The file as int16 mono at 16 kHz: resampled, down-mixed, checked for emptiness, NaN/Inf and silence."""
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
  return to_pcm16(data, rate, min_seconds=min_seconds)


def read_spans(path: str | os.PathLike, groups, *, min_seconds: float = 0.0):
  """Pieces of one long file, read one at a time without reading the rest of it: for each group of
  (start, end) spans in seconds, yields the spans' audio joined end to end (int16 mono, 16 kHz), or the
  `BadAudio` saying why that piece cannot be used (a span the file ends inside of: truncated). Spans are
  clipped to the file's stated length. Raises `BadAudio` at once if the file cannot be opened."""
  import soundfile

  try:
    f = soundfile.SoundFile(str(path))
  except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
    raise BadAudio(f"unreadable ({type(e).__name__}: {e})") from None
  return _pieces(f, groups, min_seconds)


def _pieces(f, groups, min_seconds: float):
  with f:
    rate, frames = f.samplerate, f.frames
    for group in groups:
      parts = []
      try:
        for start, end in group:
          first, last = max(0, int(round(start * rate))), min(frames, int(round(end * rate)))
          if last > first:
            f.seek(first)
            part = f.read(last - first, dtype="float32", always_2d=True)
            if len(part) < last - first:
              raise BadAudio(f"truncated (the file ends at {(first + len(part)) / rate:.2f} s of the "
                             f"{frames / rate:.2f} s its header states)")
            parts.append(part)
        data = np.concatenate(parts) if parts else np.zeros((0, f.channels), np.float32)
        yield to_pcm16(data, rate, min_seconds=min_seconds)
      except BadAudio as e:
        yield e
      except Exception as e:  # noqa: BLE001 - a damaged file fails where the damage starts
        yield BadAudio(f"unreadable ({type(e).__name__}: {e})")


def to_pcm16(data: np.ndarray, rate: int, *, min_seconds: float = 0.0) -> np.ndarray:
  """Decoded (frames, channels) float audio at `rate` as int16 mono at 16 kHz, or `BadAudio`: empty,
  NaN/Inf samples, shorter than `min_seconds`, or silent (every sample zero at 16 bits)."""
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
  pcm = to_int16(mono)
  if not pcm.any():
    raise BadAudio("silent (every sample is zero)")
  return pcm


@dataclasses.dataclass
class SkipReport:
  """Files (or pieces of files) a build left out, with reasons, and examples kept with a note (an empty
  transcript, say); printed at the end of a build and saved with the dataset as `skipped.json`."""
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  flagged: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def skip(self, path, reason: str) -> None:
    self.skipped.append((str(path), reason))

  def flag(self, path, note: str) -> None:
    self.flagged.append((str(path), note))

  def to_json(self) -> dict:
    return {"skipped": [{"file": f, "reason": r} for f, r in self.skipped], "num_skipped": len(self.skipped),
            "flagged": [{"file": f, "note": n} for f, n in self.flagged], "num_flagged": len(self.flagged)}

  def summary(self) -> str:
    lines = ["no files skipped"]
    if self.skipped:
      lines = [f"skipped {len(self.skipped)} file(s):"] + [f"  {f}: {r}" for f, r in self.skipped]
    if self.flagged:
      lines += [f"kept {len(self.flagged)} with a note:"] + [f"  {f}: {n}" for f, n in self.flagged]
    return "\n".join(lines)


def find_audio_files(root: str | os.PathLike) -> list[Path]:
  """Audio files below `root`, sorted (deterministic order)."""
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: not a directory")
  return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
