"""Builders for the corpora WavLM Base+ and Large were pre-trained on (94k hours: Libri-Light 60k,
GigaSpeech 10k, VoxPopuli English 24k), reading each one in the layout its official download and
preparation scripts leave on disk (docs/data.md#the-pretraining-corpora).

    python -m wavlm_jax.data.prepare librilight_dir /data/librilight --subset small
    python -m wavlm_jax.data.prepare gigaspeech_dir /data/GigaSpeech --subset XL
    python -m wavlm_jax.data.prepare voxpopuli_dir /data/voxpopuli/unlabelled_data --languages en

Every builder lists its work first (`_items`: one long file, or one file with its segments, each) and then
turns one item into examples (`_pieces`), so that one bad file only ever costs its own examples: an
unreadable, empty, silent or too-short file or piece is left out and listed with its reason in
`skipped.json`, and the build goes on. Each example carries its `duration` (seconds) and `source` (the
recording it was cut from); a `validation_fraction` holds out whole recordings (by a stable hash of
`source`), never pieces of one recording on both sides.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from wavlm_jax.data import audio_io, builders

# Pieces of long recordings are at most this long by default: the longest crop the recipes pre-train on
# (crop_seconds 15.6: fairseq's max_sample_size of 250,000 samples, to whole frames), so a piece is never
# cropped (docs/data.md#the-pretraining-corpora).
DEFAULT_MAX_SECONDS = 15.6


class Skipped(NamedTuple):
  """A file or piece left out of the dataset, and why."""
  where: str
  reason: str


def vad_groups(voice_activity, max_seconds: float, duration: float | None = None) -> list[list[tuple[float, float]]]:
  """Consecutive voice-activity spans (start, end seconds) gathered into pieces of at most `max_seconds`
  of speech, as Libri-Light's `cut_by_vad.py` does: spans are added to the current piece until the next
  would take it past `max_seconds`; the silences between spans are left out. A single span longer than
  `max_seconds` is cut into equal parts no longer than it. Spans are clipped to `duration` if given."""
  groups, current, speech = [], [], 0.0
  for start, end in voice_activity:
    start, end = max(0.0, float(start)), float(end) if duration is None else min(float(end), duration)
    length = end - start
    if length <= 0:
      continue
    if length > max_seconds:
      if current:
        groups.append(current)
        current, speech = [], 0.0
      parts = math.ceil(length / max_seconds)
      edges = np.linspace(start, end, parts + 1)
      groups += [[(float(a), float(b))] for a, b in zip(edges[:-1], edges[1:])]
      continue
    if current and speech + length > max_seconds:
      groups.append(current)
      current, speech = [], 0.0
    current.append((start, end))
    speech += length
  if current:
    groups.append(current)
  return groups


def _held_out(source: str, fraction: float) -> bool:
  return zlib.crc32(source.encode()) % 10_000 < fraction * 10_000


def _seconds(audio: np.ndarray) -> np.float32:
  return np.float32(len(audio) / audio_io.SAMPLE_RATE)


class Reader:
  """How one corpus' layout becomes examples, apart from TFDS so that Beam workers can run it (it pickles:
  only the config). `items(root, report)` lists the work: (split, source id, item) for every recording,
  in a deterministic order, listing what it cannot use in `report`; `pieces(item)` cuts one item into
  (key, example) pairs and `Skipped` records."""

  OPTIONS: tuple[str, ...] = ()

  def __init__(self, config: builders.FolderConfig):
    self.config = config

  def features(self) -> dict:
    raise NotImplementedError

  @classmethod
  def check(cls, config) -> None:
    """Raises ValueError naming an option whose value the corpus does not have (before any build)."""

  def items(self, root: Path, report: audio_io.SkipReport) -> list[tuple[str, str, object]]:
    raise NotImplementedError

  def pieces(self, item) -> Iterator[tuple[str, dict] | Skipped]:
    raise NotImplementedError

  OWN_SPLITS = False  # the corpus has its own validation split: no validation_fraction

  def max_seconds(self) -> float:
    return self.config.max_seconds or DEFAULT_MAX_SECONDS

  def cut(self, path: Path, groups, name: str):
    """(index, audio) of each group of spans of `path` that makes an example, Skipped for the others."""
    try:
      pieces = audio_io.read_spans(path, groups, min_seconds=self.config.min_seconds)
    except audio_io.BadAudio as e:
      yield Skipped(str(path), str(e))
      return
    for i, (group, audio) in enumerate(zip(groups, pieces)):
      if isinstance(audio, audio_io.BadAudio):
        yield Skipped(f"{path} [{name} {i}: {group[0][0]:.2f}-{group[-1][1]:.2f} s]", str(audio))
      else:
        yield i, audio


class _CorpusBuilder(builders._FolderBuilder):
  """A corpus of long recordings, each cut into examples by its `READER`; in-process, or as a Beam
  pipeline when `use_beam` is set (`builders.prepare_folder(..., beam_options=...)`)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [builders.FolderConfig(name="default")]
  READER: type[Reader] = Reader
  use_beam = False  # set by builders.prepare_folder(..., beam_options=...)
  beam_skipped_dir = ""  # where Beam workers list what they leave out (merged into skipped.json)

  @property
  def reader(self) -> Reader:
    return self.READER(self.builder_config)

  def _info(self):
    features = {"id": tfds.features.Text(), "audio": builders._audio_feature(), "duration": np.float32,
                "source": tfds.features.Text(), **self.reader.features()}
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    root = Path(self.builder_config.path)
    if not root.is_dir():
      raise FileNotFoundError(f"{root}: not a directory")
    frac = self.builder_config.validation_fraction
    splits: dict[str, list] = {}
    for split, source, item in self.reader.items(root, self._report()):
      if split == "train" and frac > 0 and _held_out(source, frac):
        split = "validation"
      splits.setdefault(split, []).append(item)
    if not splits.get("train"):
      raise FileNotFoundError(f"{root}: no {self.name} recordings found ({self.__doc__.split(':')[0]})")
    if self.use_beam:
      from wavlm_jax.data import beam_prepare

      return {split: beam_prepare.cut(self.reader, split, items, self.beam_skipped_dir)
              for split, items in splits.items()}
    return {split: self._generate_examples(items=items) for split, items in splits.items()}

  def _generate_examples(self, items):
    reader = self.reader
    for item in items:
      for piece in reader.pieces(item):
        if isinstance(piece, Skipped):
          self._report().skip(*piece)
        else:
          yield piece


def _duration(path: Path) -> float | Skipped:
  import soundfile

  if path.stat().st_size == 0:
    return Skipped(str(path), "empty (0 bytes)")
  try:
    info = soundfile.info(str(path))
  except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
    return Skipped(str(path), f"unreadable ({type(e).__name__}: {e})")
  if info.frames == 0:
    return Skipped(str(path), "empty")
  return info.frames / info.samplerate


# ----------------------------------------------------------------------------------------------
# Libri-Light
# ----------------------------------------------------------------------------------------------
LIBRILIGHT_SUBSETS = ("small", "medium", "large", "duplicate")


class LibrilightReader(Reader):
  """How `librilight_dir` reads its layout (see LibrilightDir)."""

  OPTIONS = ("subset", "max_seconds")

  def features(self):
    return {"speaker": tfds.features.Text(), "book": tfds.features.Text(), "snr": np.float32}

  @classmethod
  def check(cls, config) -> None:
    unknown = sorted(set(s for s in config.subset.split(",") if s) - set(LIBRILIGHT_SUBSETS))
    if unknown:
      raise ValueError(f"librilight_dir: unknown subset(s) {unknown}; Libri-Light has {list(LIBRILIGHT_SUBSETS)}")

  def subset_dirs(self, root: Path) -> list[tuple[str, Path]]:
    self.check(self.config)
    wanted = [s for s in self.config.subset.split(",") if s]
    if root.name in LIBRILIGHT_SUBSETS:  # pointed at one subset's folder
      if wanted and wanted != [root.name]:
        raise ValueError(f"{root} is Libri-Light's {root.name!r} subset; --subset {','.join(wanted)} asks for others")
      return [(root.name, root)]
    present = [s for s in LIBRILIGHT_SUBSETS if (root / s).is_dir()]
    if not present:
      return [("", root)]  # a folder of SPEAKER/BOOK/... without the subset level
    missing = [s for s in wanted if s not in present]
    if missing:
      raise FileNotFoundError(f"{root}: no folder for subset(s) {missing} (found {present})")
    # duplicate (4,500 h of books the other subsets may also hold) only when asked for by name
    return [(s, root / s) for s in (wanted or [s for s in present if s != "duplicate"])]

  def items(self, root, report):
    items = []
    for subset, folder in self.subset_dirs(root):
      for path in audio_io.find_audio_files(folder):  # flac beside its json; an already-cut folder: any
        rel = path.relative_to(folder)
        parts = rel.parts
        speaker = parts[0] if len(parts) > 1 else ""
        book = parts[1] if len(parts) > 2 else ""
        source = "/".join(p for p in (subset, *rel.with_suffix("").parts) if p)
        items.append(("train", source, (str(path), source, speaker, book)))
    return items

  def pieces(self, item):
    path, source, speaker, book = item
    path = Path(path)
    meta_path = path.with_suffix(".json")
    duration = _duration(path)
    if isinstance(duration, Skipped):
      yield duration
      return
    snr = np.float32(np.nan)
    if meta_path.is_file():
      try:
        meta = json.loads(meta_path.read_text())
        spans = [(float(s), float(e)) for s, e in meta["voice_activity"]]
        speaker = str(meta.get("speaker", speaker))
        book = str((meta.get("book_meta") or {}).get("id", book))
        snr = np.float32(meta.get("snr", np.nan))
      except (ValueError, KeyError, TypeError) as e:
        yield Skipped(str(meta_path), f"unreadable voice-activity json ({type(e).__name__}: {e})")
        return
      if not spans:
        yield Skipped(str(path), "no voice activity (empty voice_activity in its .json)")
        return
    else:
      spans = [(0.0, duration)]
    groups = vad_groups(spans, self.max_seconds(), duration)
    for piece in self.cut(path, groups, "piece"):
      if isinstance(piece, Skipped):
        yield piece
        continue
      i, audio = piece
      key = f"{source}_{i:04d}"
      yield key, {"id": key, "audio": audio, "duration": _seconds(audio), "source": source, "speaker": speaker,
                  "book": book, "snr": snr}


class LibrilightDir(_CorpusBuilder):
  """Libri-Light (facebookresearch/libri-light): SUBSET/SPEAKER/BOOK/FILE.flac, each with FILE.json (its
  voice-activity spans, SNR and book metadata), SUBSET one of small, medium, large, duplicate. Every
  recording is cut at voice-activity boundaries into pieces of at most `max_seconds` of speech
  (`vad_groups`; default 15.6 s). Without --subset: small, medium and large (the paper's 60k h), not
  duplicate. An audio file without a .json beside it (an already-cut folder, such as `cut_by_vad.py`'s
  .wav pieces) is taken as one span, split evenly if longer than `max_seconds`."""

  READER = LibrilightReader
  OPTIONS = LibrilightReader.OPTIONS


# ----------------------------------------------------------------------------------------------
# GigaSpeech
# ----------------------------------------------------------------------------------------------
GIGASPEECH_SUBSETS = ("XS", "S", "M", "L", "XL")
GIGASPEECH_PUNCTUATION = {"<COMMA>": ",", "<PERIOD>": ".", "<QUESTIONMARK>": "?", "<EXCLAMATIONPOINT>": "!"}
GIGASPEECH_GARBAGE = ("<SIL>", "<MUSIC>", "<NOISE>", "<OTHER>")  # non-speech segments: the corpus says discard


def gigaspeech_text(text_tn: str) -> str:
  """GigaSpeech's normalised text without its punctuation tags (the words, upper case, as LibriSpeech's)."""
  words = [w for w in text_tn.split() if w not in GIGASPEECH_PUNCTUATION]
  return " ".join(words)


class GigaspeechReader(Reader):
  """How `gigaspeech_dir` reads its layout (see GigaspeechDir)."""

  OPTIONS = ("subset",)
  OWN_SPLITS = True  # {DEV} and {TEST}

  def features(self):
    return {"text": tfds.features.Text(), "speaker": tfds.features.Text(), "domain": tfds.features.Text()}

  def metadata(self, root: Path) -> tuple[Path, dict]:
    meta = root / "GigaSpeech.json"
    if not meta.is_file():
      raise FileNotFoundError(f"{root}: no GigaSpeech.json; point at the decrypted GigaSpeech folder")
    try:
      return meta, json.loads(meta.read_text())
    except ValueError as e:
      raise ValueError(f"{meta}: not valid JSON ({e})") from None

  @classmethod
  def check(cls, config) -> None:
    if (config.subset or "XL") not in GIGASPEECH_SUBSETS:
      raise ValueError(f"gigaspeech_dir: subset {config.subset!r}; GigaSpeech's training subsets are "
                       f"{list(GIGASPEECH_SUBSETS)} (DEV and TEST become the validation and test splits)")

  def items(self, root, report):
    self.check(self.config)
    subset = self.config.subset or "XL"
    meta_path, meta = self.metadata(root)
    tags = {"train": "{" + subset + "}", "validation": "{DEV}", "test": "{TEST}"}
    items = []
    for n, audio in enumerate(meta.get("audios") or []):
      try:
        aid, rel, segments = str(audio["aid"]), str(audio["path"]), audio["segments"]
      except (KeyError, TypeError) as e:
        report.skip(f"{meta_path} audios[{n}]", f"no {e} field")
        continue
      for split, tag in tags.items():
        mine = [s for s in segments if tag in (s.get("subsets") or [])]
        if mine:
          items.append((split, aid, (str(root / rel), aid, str(audio.get("source", "")), mine)))
    return items

  def pieces(self, item):
    path, aid, domain, segments = item
    path = Path(path)
    if not path.is_file():
      yield Skipped(str(path), f"missing (audio {aid} of GigaSpeech.json)")
      return
    kept = []
    for s in segments:
      text = str(s.get("text_tn", "")).strip()
      if text in GIGASPEECH_GARBAGE:
        yield Skipped(f"{path} [{s.get('sid')}]", f"garbage utterance tag {text}")
        continue
      try:
        kept.append((str(s["sid"]), [(float(s["begin_time"]), float(s["end_time"]))], gigaspeech_text(text),
                     str(s.get("speaker", ""))))
      except (KeyError, TypeError, ValueError) as e:
        yield Skipped(f"{path} [{s.get('sid')}]", f"segment without a usable {e}")
    cut = self.cut(path, [k[1] for k in kept], "segment")
    for piece in cut:
      if isinstance(piece, Skipped):
        yield piece
        continue
      i, audio = piece
      sid, _, text, speaker = kept[i]
      yield sid, {"id": sid, "audio": audio, "duration": _seconds(audio), "source": aid, "text": text,
                  "speaker": speaker, "domain": domain}


class GigaspeechDir(_CorpusBuilder):
  """GigaSpeech (SpeechColab/GigaSpeech), decrypted: GigaSpeech.json (every audio's `path`, `aid`,
  `source` and `segments`, each with `sid`, `begin_time`, `end_time`, `text_tn`, `subsets`) beside the
  Opus audio it names. `train` holds the segments of `--subset` (XS, S, M, L or XL; nested: XS is in all
  of them; default XL, the 10,000 h), `validation` the {DEV} and `test` the {TEST} segments. The text is
  kept without its punctuation tags; segments whose text is a garbage tag (<SIL>, <MUSIC>, <NOISE>,
  <OTHER>) are left out, as the corpus recommends."""

  READER = GigaspeechReader
  OPTIONS = GigaspeechReader.OPTIONS


# ----------------------------------------------------------------------------------------------
# VoxPopuli
# ----------------------------------------------------------------------------------------------
_VOXPOPULI_FILE = re.compile(r"^(?P<event>.+)_(?P<segment>\d+)$")


class VoxpopuliReader(Reader):
  """How `voxpopuli_dir` reads its layout (see VoxpopuliDir)."""

  OPTIONS = ("languages", "max_seconds")

  def features(self):
    return {"language": tfds.features.Text(), "year": tfds.features.Text()}

  def items(self, root, report):
    wanted = {s for s in self.config.languages if s}
    items = []
    for path in sorted(root.rglob("*.ogg")):
      if "raw_audios" in path.relative_to(root).parts:  # whole sessions, which unlabelled_data/ segments
        continue
      year, language = path.parent.name, path.parent.parent.name
      match = _VOXPOPULI_FILE.match(path.stem)
      if not (year.isdigit() and len(year) == 4) or match is None:
        report.skip(str(path), "not in VoxPopuli's LANG/YEAR/EVENT_SEGMENT.ogg layout")
        continue
      if wanted and language not in wanted:
        continue
      event = match["event"]
      source = f"{language}/{year}/{event}"
      items.append(("train", source, (str(path), source, language, year)))
    return items

  def pieces(self, item):
    path, source, language, year = item
    path = Path(path)
    duration = _duration(path)
    if isinstance(duration, Skipped):
      yield duration
      return
    groups = vad_groups([(0.0, duration)], self.max_seconds(), duration)
    stem = f"{language}/{year}/{path.stem}"
    for piece in self.cut(path, groups, "part"):
      if isinstance(piece, Skipped):
        yield piece
        continue
      i, audio = piece
      key = stem if len(groups) == 1 else f"{stem}_part{i}"
      yield key, {"id": key, "audio": audio, "duration": _seconds(audio), "source": source, "language": language,
                  "year": year}


class VoxpopuliDir(_CorpusBuilder):
  """VoxPopuli unlabelled speech (facebookresearch/voxpopuli) as its `get_unlabelled_data.py` writes it:
  unlabelled_data/LANG/YEAR/EVENT_SEGMENT.ogg, one voice-activity segment of a European Parliament
  session per file; language and year from the path, the session (EVENT) as the source (the whole
  sessions under raw_audios/, if the folder holds them, are not read).
  `--languages en` keeps English only (WavLM's 24k hours); files longer than `max_seconds` are split
  evenly."""

  READER = VoxpopuliReader
  OPTIONS = VoxpopuliReader.OPTIONS


CORPUS_BUILDERS = {"librilight_dir": LibrilightDir, "gigaspeech_dir": GigaspeechDir, "voxpopuli_dir": VoxpopuliDir}
