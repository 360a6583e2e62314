"""Real-format audio for tests: eSpeak NG speech written as WAV/FLAC files at any rate and channel count,
and folders in the LibriSpeech layout with transcripts."""

from pathlib import Path

import numpy as np

SENTENCES = ("the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
             "a stitch in time saves nine", "every cloud has a silver lining", "seven wise men sat under a tree",
             "birds of a feather flock together")


def speech(engine, i: int, seconds: float, rate: int, channels: int) -> np.ndarray:
  """eSpeak speech of exactly `seconds` at `rate` (repeated or cut), float32 (frames, channels)."""
  voice = ("en-us+m1", "en-us+f2", "en-us+m3")[i % 3]
  audio = engine.synthesize(SENTENCES[i % len(SENTENCES)], voice, rate=150 + 10 * i).audio.astype(np.float32) / 32768
  n16 = int(seconds * 16000)
  audio = np.tile(audio, -(-n16 // len(audio)))[:n16]
  if rate != 16000:
    import soxr
    audio = soxr.resample(audio, 16000, rate)
  if channels == 2:  # a second channel a little quieter, so the down-mix is not a copy of either
    return np.stack([audio, 0.5 * audio], axis=1)
  return audio[:, None]


def write_librispeech(root: Path, utterances, engine, *, corrupt=(), empty=()) -> Path:
  """SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac plus SPEAKER-CHAPTER.trans.txt under `root`.
  utterances: (uid, seconds, sample rate, channels); `corrupt` and `empty` uids get bad files (listed in
  the transcripts, as a damaged download would have them)."""
  import soundfile

  chapters = {}
  for i, (uid, seconds, rate, channels) in enumerate(utterances):
    speaker, chapter, _ = uid.split("-")
    folder = root / speaker / chapter
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / f"{uid}.flac", speech(engine, i, seconds, rate, channels), rate)
    chapters.setdefault(folder, []).append(uid)
  for uid in (*corrupt, *empty):
    speaker, chapter, _ = uid.split("-")
    folder = root / speaker / chapter
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uid}.flac").write_bytes(b"\x00\x01garbage" * 100 if uid in corrupt else b"")
    chapters.setdefault(folder, []).append(uid)
  for folder, uids in chapters.items():
    speaker, chapter = folder.parent.name, folder.name
    (folder / f"{speaker}-{chapter}.trans.txt").write_text(
        "".join(f"{u} {SENTENCES[i % len(SENTENCES)].upper()}\n" for i, u in enumerate(sorted(uids))))
  return root
