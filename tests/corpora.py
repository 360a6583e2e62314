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


def _recording(engine, spans, total: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
  """`total` seconds of near-silence (a faint hiss) with eSpeak speech exactly in each (start, end) span."""
  rng = np.random.default_rng(seed)
  out = (1e-3 * rng.standard_normal((int(round(total * rate)), channels))).astype(np.float32)
  for i, (start, end) in enumerate(spans):
    a, b = int(round(start * rate)), int(round(end * rate))
    out[a:b] += speech(engine, seed + i, (b - a) / rate, rate, channels)[:b - a]
  return out


# Libri-Light: (subset, speaker, book folder, file stem, voice-activity spans, length s, rate, channels).
# With pieces of at most 15.6 s of speech, the first file gives 4: 4+6 s, 7 s, and 20 s split in two.
LIBRILIGHT_FILES = (
    ("small", "100", "sea_fairies_0812_librivox", "sea_fairies_01_baum",
     ((0.5, 4.5), (5.5, 11.5), (12.2, 19.2), (20.2, 40.2)), 41.0, 16000, 1),
    ("small", "100", "sea_fairies_0812_librivox", "sea_fairies_02_baum", ((0.3, 3.3),), 4.0, 16000, 1),
    ("small", "2019", "history_of_holland_0907_librivox", "history_01_blok", ((1.0, 9.0), (9.5, 12.5)), 13.0,
     44100, 2),
    ("medium", "7", "poems_1203_librivox", "poems_03_frost", ((0.2, 5.2),), 6.0, 16000, 1),
)


def write_librilight(root: Path, engine) -> Path:
  """Libri-Light's layout (SUBSET/SPEAKER/BOOK/FILE.flac + FILE.json) with the files above, plus the damage a
  download can have: a corrupt flac with its json, a json that is not JSON, a recording with no voice
  activity, one of digital silence, an already-cut piece (a .wav without json) and a duplicate subset."""
  import json

  import soundfile

  for n, (subset, speaker, book, stem, spans, total, rate, channels) in enumerate(LIBRILIGHT_FILES):
    folder = root / subset / speaker / book
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / f"{stem}.flac", _recording(engine, spans, total, rate, channels, seed=n), rate)
    meta = {"speaker": speaker, "book_meta": {"id": str(300 + n), "title": book, "genre": ["Literature"]},
            "snr": 10.0 + n, "voice_activity": [list(s) for s in spans]}
    (folder / f"{stem}.json").write_text(json.dumps(meta))
  bad = root / "small" / "100" / "sea_fairies_0812_librivox"
  (bad / "sea_fairies_03_baum.flac").write_bytes(b"fLaC\x00\x00garbage" * 50)
  (bad / "sea_fairies_03_baum.json").write_text(json.dumps({"speaker": "100", "voice_activity": [[0, 2]]}))
  soundfile.write(bad / "sea_fairies_04_baum.flac", _recording(engine, ((0, 2),), 3.0, seed=9), 16000)
  (bad / "sea_fairies_04_baum.json").write_text("{not json")
  soundfile.write(bad / "sea_fairies_05_baum.flac", _recording(engine, (), 3.0, seed=10), 16000)
  (bad / "sea_fairies_05_baum.json").write_text(json.dumps({"speaker": "100", "voice_activity": []}))
  soundfile.write(bad / "sea_fairies_06_baum.flac", np.zeros(5 * 16000, np.float32), 16000)  # digital silence
  (bad / "sea_fairies_06_baum.json").write_text(json.dumps({"speaker": "100", "voice_activity": [[0, 2], [3, 5]]}))
  cut = root / "small" / "2019" / "history_of_holland_0907_librivox"  # cut_by_vad.py writes .wav pieces
  soundfile.write(cut / "history_02_blok_0000.wav", _recording(engine, ((0, 3.0),), 3.0, seed=11), 16000)
  (root / "duplicate" / "100" / "sea_fairies_0812_librivox").mkdir(parents=True)  # read only when asked for
  soundfile.write(root / "duplicate" / "100" / "sea_fairies_0812_librivox" / "sea_fairies_01_baum.flac",
                  _recording(engine, ((0, 3.0),), 3.0, seed=12), 16000)
  return root


def write_gigaspeech(root: Path, engine) -> Path:
  """GigaSpeech's decrypted layout: GigaSpeech.json beside audio/{podcast,youtube}/.../*.opus, with
  training segments in nested subsets, a DEV file holding a garbage-tag segment, an audio the metadata
  lists but the folder lacks, and a corrupt opus file."""
  import json

  import soundfile

  def segment(sid, begin, end, text, subsets, speaker="N/A"):
    return {"sid": sid, "speaker": speaker, "begin_time": begin, "end_time": end, "text_tn": text,
            "subsets": subsets}

  everything = ["{XL}", "{L}", "{M}", "{S}", "{XS}"]
  audios = [
      ("POD0000000001", "audio/podcast/P0000/POD0000000001.opus", "podcast", 20.0, [
          segment("POD0000000001_S0000000", 0.5, 4.0, "THE QUICK BROWN FOX <COMMA> JUMPS", everything),
          segment("POD0000000001_S0000001", 5.0, 9.5, "SHE SELLS SEA SHELLS <PERIOD>", everything),
          segment("POD0000000001_S0000002", 10.0, 13.0, "A STITCH IN TIME <QUESTIONMARK>", ["{XL}", "{L}"]),
          segment("POD0000000001_S0000003", 14.0, 19.0, "EVERY CLOUD", ["{XL}", "{L}", "{M}", "{S}"])]),
      ("YOU0000000002", "audio/youtube/P0001/YOU0000000002.opus", "youtube", 12.0, [
          segment("YOU0000000002_S0000000", 1.0, 5.0, "SEVEN WISE MEN", everything),
          segment("YOU0000000002_S0000001", 6.0, 7.0, "<NOISE>", everything)]),
      ("POD1000000003", "audio/podcast/P0002/POD1000000003.opus", "podcast", 10.0, [
          segment("POD1000000003_S0000000", 0.2, 4.2, "BIRDS OF A FEATHER <EXCLAMATIONPOINT>", ["{DEV}"]),
          segment("POD1000000003_S0000001", 4.5, 6.0, "<SIL>", ["{DEV}"])]),
      ("POD0000000009", "audio/podcast/P0009/POD0000000009.opus", "podcast", 8.0, [
          segment("POD0000000009_S0000000", 0.0, 3.0, "LISTED BUT MISSING", everything)]),
      ("YOU0000000010", "audio/youtube/P0010/YOU0000000010.opus", "youtube", 8.0, [
          segment("YOU0000000010_S0000000", 0.0, 3.0, "CORRUPT AUDIO", everything)]),
  ]
  meta = {"dataset": "GigaSpeech", "version": "v1.0.0", "audios": []}
  for n, (aid, rel, source, total, segments) in enumerate(audios):
    meta["audios"].append({"aid": aid, "title": aid, "source": source, "path": rel, "duration": total,
                           "format": "opus", "sample_rate": 16000, "channels": 1, "subsets": everything,
                           "segments": segments})
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if aid == "POD0000000009":
      continue
    if aid == "YOU0000000010":
      path.write_bytes(b"OggS\x00garbage" * 40)
      continue
    spans = [(s["begin_time"], s["end_time"]) for s in segments]
    soundfile.write(path, _recording(engine, spans, total, seed=20 + n), 16000, format="OGG", subtype="OPUS")
  (root / "GigaSpeech.json").write_text(json.dumps(meta, indent=1))
  return root


# VoxPopuli unlabelled: (language, year, file stem, seconds); the 20 s segment is cut into two pieces.
VOXPOPULI_FILES = (
    ("en", "2019", "20190114-0900-PLENARY-3_en_0", 5.0),
    ("en", "2019", "20190114-0900-PLENARY-3_en_1", 20.0),
    ("en", "2020", "20200210-0900-PLENARY-7_en_4", 3.0),
    ("de", "2019", "20190114-0900-PLENARY-3_de_0", 4.0),
)


def write_voxpopuli(root: Path, engine) -> Path:
  """VoxPopuli's unlabelled_data/LANG/YEAR/EVENT_SEGMENT.ogg (16 kHz Vorbis), plus an empty .ogg and a
  stray .ogg outside the LANG/YEAR layout."""
  import soundfile

  data = root / "unlabelled_data"
  for n, (language, year, stem, seconds) in enumerate(VOXPOPULI_FILES):
    folder = data / language / year
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / f"{stem}.ogg", speech(engine, n, seconds, 16000, 1), 16000, format="OGG",
                    subtype="VORBIS")
  (data / "en" / "2020" / "20200210-0900-PLENARY-7_en_5.ogg").write_bytes(b"")
  soundfile.write(data / "en" / "stray.ogg", speech(engine, 0, 2.0, 16000, 1), 16000, format="OGG", subtype="VORBIS")
  return data
