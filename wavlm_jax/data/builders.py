"""TFDS builders writing ArrayRecord (random access): the embedded eSpeak corpus, any folder of audio,
the LibriSpeech layout, and a folder of noises (the pretraining corpora's builders, which build on these
classes, are in `wavlm_jax/data/corpora.py`).

    from wavlm_jax.data import builders
    builders.prepare("espeak_speech/tiny", data_dir)            # embedded corpus, no download
    builders.prepare_folder("audio_dir", "/data/librilight", data_dir, name="librilight")

Builders never die on one bad file: unreadable, empty, NaN/Inf, silent or too short files are skipped
and listed with the reason (a report is printed and stored as `skipped.json` beside the dataset, with the
examples kept with a note, such as an empty transcript); non-16 kHz audio is resampled and multi-channel
audio down-mixed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from wavlm_jax import storage
from wavlm_jax.data import audio_io, espeak, paths, text

ARRAY_RECORD = "array_record"


def _audio_feature():
  return tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=audio_io.SAMPLE_RATE)


# ----------------------------------------------------------------------------------------------
# The embedded corpus
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EspeakConfig(tfds.core.BuilderConfig):
  utterances: tuple[tuple[str, int], ...] = ()  # (split, count)
  languages: tuple[str, ...] = ("en-us",)
  seed: int = 0


class EspeakSpeech(tfds.core.GeneratorBasedBuilder):
  """Sentences spoken by eSpeak NG voices with varied rate and pitch, 16 kHz int16, with a phone per
  10 ms frame. Splits train/validation/test share speakers; test_unseen has held-out voices."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      EspeakConfig(name="tiny", description="~100 utterances (~6 min), en-us; for tests",
                   utterances=(("train", 70), ("validation", 10), ("test", 10), ("test_unseen", 10))),
      # With tiny, the three small corpora of the recipes' runlocal mixture (configs/common.py).
      EspeakConfig(name="tiny_gb", description="~50 utterances, en-gb voices",
                   utterances=(("train", 40), ("validation", 5), ("test", 5)), languages=("en-gb",), seed=1),
      EspeakConfig(name="tiny_fr", description="~50 utterances, fr voices",
                   utterances=(("train", 40), ("validation", 5), ("test", 5)), languages=("fr",), seed=2),
      EspeakConfig(name="small", description="~800 utterances (~1 h), en-us and en-gb",
                   utterances=(("train", 640), ("validation", 60), ("test", 60), ("test_unseen", 40)),
                   languages=("en-us", "en-gb")),
      EspeakConfig(name="base", description="~8000 utterances (~10 h), 7 languages",
                   utterances=(("train", 6800), ("validation", 400), ("test", 400), ("test_unseen", 400)),
                   languages=text.LANGUAGES),
  ]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "audio": _audio_feature(),
            "text": tfds.features.Text(),
            "phonemes": tfds.features.Text(),  # space-separated phones (stress marks removed)
            "phone_alignment": tfds.features.Tensor(shape=(None,), dtype=np.int32),  # inventory index / 10 ms
            "speaker": tfds.features.Text(),
            "language": tfds.features.Text(),
        }),
        supervised_keys=None,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    self._inventory = {espeak.SILENCE: 0}
    return {split: self._generate_examples(split=split, count=count) for split, count in self.builder_config.utterances}

  def _generate_examples(self, split: str, count: int):
    cfg = self.builder_config
    engine = espeak.Espeak()
    variants = espeak.UNSEEN_VARIANTS if split == "test_unseen" else tuple(
        v for v in espeak.VARIANTS if v not in espeak.UNSEEN_VARIANTS)
    split_id = zlib.crc32(split.encode())
    for i in range(count):
      rng = np.random.default_rng([cfg.seed, split_id, i])
      language = cfg.languages[i % len(cfg.languages)]
      variant = variants[int(rng.integers(len(variants)))]
      sentence = text.sentence(rng, text.text_language(language))
      rate, pitch = int(rng.integers(130, 211)), int(rng.integers(25, 76))
      voice = f"{text.voice_language(language)}+{variant}"
      utt = engine.synthesize(sentence, voice, rate=rate, pitch=pitch)
      frames = espeak.frame_phones(utt.phones, len(utt.audio))
      ids = [self._inventory.setdefault(p, len(self._inventory)) for p in frames]
      key = f"{cfg.name}-{split}-{i:06d}"
      yield key, {
          "id": key, "audio": utt.audio, "text": sentence,
          "phonemes": " ".join(p for _, p in utt.phones if p != espeak.SILENCE),
          "phone_alignment": np.asarray(ids, np.int32), "speaker": f"{language}+{variant}", "language": language,
      }
    # Written with dataset_info after all splits (in order of first appearance: deterministic).
    self.info.metadata["phone_inventory"] = sorted(self._inventory, key=self._inventory.get)
    self.info.metadata["alignment_hop_seconds"] = 0.01


# ----------------------------------------------------------------------------------------------
# Folders of audio
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  path: str = ""
  min_seconds: float = 0.5
  validation_fraction: float = 0.0  # held out by a stable hash of the relative path (the source, for corpora)
  # The pretraining corpora's options (wavlm_jax/data/corpora.py); a kind refuses those it does not read.
  subset: str = ""  # librilight_dir: small,medium,large,duplicate (comma-separated); gigaspeech_dir: XS..XL
  max_seconds: float = 0.0  # longest piece cut from a long recording (0: corpora.DEFAULT_MAX_SECONDS)
  languages: tuple[str, ...] = ()  # voxpopuli_dir: languages kept (() = all)


class _FolderBuilder(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  OPTIONS: tuple[str, ...] = ()  # the FolderConfig options beyond path/min_seconds/validation_fraction it reads

  def _report(self):
    if not hasattr(self, "_skips"):
      self._skips = audio_io.SkipReport()
    return self._skips

  def _files(self):
    root = Path(self.builder_config.path)
    return root, audio_io.find_audio_files(root)

  def _split_files(self, root, files):
    frac = self.builder_config.validation_fraction
    held = lambda p: zlib.crc32(str(p.relative_to(root)).encode()) % 10_000 < frac * 10_000
    splits = {"train": [p for p in files if not held(p)]}
    if frac > 0:
      splits["validation"] = [p for p in files if held(p)]
    return splits

  def _read(self, path):
    try:
      return audio_io.read_audio(path, min_seconds=self.builder_config.min_seconds)
    except audio_io.BadAudio as e:
      self._report().skip(path, str(e))
      return None

  def download_and_prepare(self, *args, **kwargs):
    kwargs.setdefault("file_format", ARRAY_RECORD)
    if self.is_prepared():  # TFDS reuses it; its skipped.json stays the one its build wrote
      return super().download_and_prepare(*args, **kwargs)
    super().download_and_prepare(*args, **kwargs)
    report = self._report()
    if getattr(self, "use_beam", False):  # what the workers left out, listed beside the launcher's own
      from wavlm_jax.data import beam_prepare

      for where, reason in beam_prepare.read_skipped(self.beam_skipped_dir):
        report.skip(where, reason)
    print(f"{self.name}/{self.builder_config.name}: {report.summary()}")
    Path(self.data_dir, "skipped.json").write_text(json.dumps(report.to_json(), indent=2))


class AudioDir(_FolderBuilder):
  """Any folder tree of audio files (wav/flac/ogg/mp3) as unlabelled examples (Libri-Light style)."""

  BUILDER_CONFIGS = [FolderConfig(name="default")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "audio": _audio_feature(), "path": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    root, files = self._files()
    return {split: self._generate_examples(root=root, files=fs) for split, fs in self._split_files(root, files).items()}

  def _generate_examples(self, root, files):
    for path in files:
      audio = self._read(path)
      if audio is not None:
        rel = str(path.relative_to(root))
        key = rel.rsplit(".", 1)[0].replace(os.sep, "/")
        yield key, {"id": key, "audio": audio, "path": rel}


class NoiseDir(AudioDir):
  """A folder of noise recordings (DNS-challenge or MUSAN style); the top folder is the category."""

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "audio": _audio_feature(), "path": tfds.features.Text(),
        "category": tfds.features.Text()}))

  def _generate_examples(self, root, files):
    for key, example in super()._generate_examples(root, files):
      parts = Path(example["path"]).parts
      example["category"] = parts[0] if len(parts) > 1 else "noise"
      yield key, example


class LibrispeechDir(_FolderBuilder):
  """The LibriSpeech layout: SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt plus one flac per utterance. Each
  transcript also gets its phonemes by eSpeak NG's text-to-phoneme rules (American English, offline):
  the phone set of the embedded corpus, for phoneme recognizers (fine-tuning's `vocab.kind=phonemes`)
  and PBERT targets."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "phonemes: eSpeak NG text-to-phoneme (en-us) of each transcript"}
  BUILDER_CONFIGS = [FolderConfig(name="default")]
  G2P_VOICE = "en-us"

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "audio": _audio_feature(), "text": tfds.features.Text(),
        "phonemes": tfds.features.Text(),  # space-separated phones, as espeak_speech's
        "speaker": tfds.features.Text(), "chapter": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    root = Path(self.builder_config.path)
    if not root.is_dir():
      raise FileNotFoundError(f"{root}: not a directory")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
      raise FileNotFoundError(f"{root}: no *.trans.txt files; is this a LibriSpeech-layout folder?")
    utts, listed = [], set()
    for trans in transcripts:
      for n, line in enumerate(trans.read_text().splitlines(), 1):
        if not line.strip():
          continue
        uid, _, words = line.strip().partition(" ")
        where = f"{trans}:{n}"
        path = trans.parent / f"{uid}.flac"
        if path in listed:
          self._report().skip(path, f"listed twice (again at {where}); the first line is kept")
          continue
        listed.add(path)
        if not words.strip():  # kept for pretraining; fine-tuning leaves it out (data/pipeline.py)
          self._report().flag(path, f"empty transcript (at {where})")
        utts.append((path, uid, words.strip(), where))
    for path in audio_io.find_audio_files(root):
      if path not in listed:
        trans = f"{path.parent.parent.name}-{path.parent.name}.trans.txt"
        self._report().skip(path, f"no transcript line for it (in {trans} beside it)")
    phonemes = espeak.Espeak().phone_sequences([u[2] for u in utts], self.G2P_VOICE)  # one eSpeak session
    utts = [(*u, p) for u, p in zip(utts, phonemes)]
    frac = self.builder_config.validation_fraction
    held = lambda uid: zlib.crc32(uid.encode()) % 10_000 < frac * 10_000
    splits = {"train": [u for u in utts if not held(u[1])]}
    if frac > 0:
      splits["validation"] = [u for u in utts if held(u[1])]
    return {split: self._generate_examples(utts=us) for split, us in splits.items()}

  def _generate_examples(self, utts):
    for path, uid, words, where, phonemes in utts:
      if not path.is_file():
        self._report().skip(path, f"missing (listed at {where})")
        continue
      audio = self._read(path)
      if audio is not None:
        speaker, chapter = (uid.split("-") + ["", ""])[:2]
        yield uid, {"id": uid, "audio": audio, "text": words, "phonemes": phonemes, "speaker": speaker,
                    "chapter": chapter}


FOLDER_BUILDERS = {"audio_dir": AudioDir, "noise_dir": NoiseDir, "librispeech_dir": LibrispeechDir}


def default_data_dir() -> str:
  """The data dir when none is configured (`wavlm_jax.data.paths.data_dir`)."""
  return paths.data_dir()


def _build(make: Callable[[str], tfds.core.DatasetBuilder], data_dir: str,
           beam_options: str = "") -> tfds.core.DatasetBuilder:
  """`make(data_dir)` prepared in `data_dir`, in-process or, with `beam_options`, as a Beam pipeline.
  ArrayRecord files are written locally only, so a dataset for a bucket (gs://...) is built in a local
  temporary data dir and uploaded, dataset_info.json last (TFDS takes a version directory without it as
  not prepared)."""
  if not storage.is_url(data_dir):
    builder = make(data_dir)
    _prepare(builder, data_dir, beam_options)
    return builder
  remote = make(data_dir)
  if remote.is_prepared():
    return remote
  with tempfile.TemporaryDirectory(prefix="wavlm_jax-build-") as tmp:
    local = make(tmp)
    _prepare(local, tmp, beam_options)
    version_dir = os.path.relpath(local.data_dir, tmp)
    storage.upload_tree(local.data_dir, storage.path(data_dir) / version_dir, last="dataset_info.json")
  return make(data_dir)


def _prepare(builder: tfds.core.DatasetBuilder, data_dir: str, beam_options: str) -> None:
  if not beam_options:
    builder.download_and_prepare(file_format=ARRAY_RECORD)
    return
  from wavlm_jax.data import beam_prepare

  options = beam_prepare.pipeline_options(beam_options)
  os.makedirs(data_dir, exist_ok=True)  # the workers' list of what they skip is kept beside the dataset
  with tempfile.TemporaryDirectory(prefix=".wavlm_jax-skipped-", dir=data_dir) as skipped:
    builder.use_beam, builder.beam_skipped_dir = True, skipped
    builder.download_and_prepare(file_format=ARRAY_RECORD,
                                 download_config=tfds.download.DownloadConfig(beam_options=options))


def prepare(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds (if absent) a registered dataset, e.g. "espeak_speech/tiny", as ArrayRecord; `data_dir` may
  be a bucket (gs://...)."""
  return _build(lambda d: tfds.builder(name, data_dir=d, file_format=ARRAY_RECORD), paths.data_dir(data_dir))


def folder_builders() -> dict[str, type]:
  """Every folder kind: this module's (audio_dir, noise_dir, librispeech_dir) and the pretraining corpora's
  (librilight_dir, gigaspeech_dir, voxpopuli_dir), which build on the classes here."""
  from wavlm_jax.data import corpora

  return {**FOLDER_BUILDERS, **corpora.CORPUS_BUILDERS}


def default_name(path: str | os.PathLike, subset: str = "") -> str:
  """A folder dataset's NAME when none is given: the subset, else the folder's own name (lower case,
  [a-z0-9_]). Never "default": TFDS refuses a custom config under the name of the class's own."""
  import re

  name = re.sub(r"[^a-z0-9]+", "_", (subset or Path(path).absolute().name).lower()).strip("_") or "data"
  return "data" if name == "default" else name


def folder_config(kind: str, path: str | os.PathLike, *, name: str = "", min_seconds: float = 0.5,
                  validation_fraction: float = 0.0, **options) -> FolderConfig:
  """The config of a folder dataset (`name`: `default_name` when empty); `options` (subset, max_seconds,
  languages) only for the kinds that read them, so that an option a kind would ignore is an error naming it."""
  name = name or default_name(path, options.get("subset", ""))
  kinds = folder_builders()
  if kind not in kinds:
    raise KeyError(f"unknown folder builder {kind!r}; known: {sorted(kinds)}")
  given = {k: v for k, v in options.items() if v not in ("", 0, 0.0, (), None)}
  ignored = sorted(set(given) - set(kinds[kind].OPTIONS))
  if ignored:
    raise ValueError(f"{kind} does not read {', '.join(ignored)} (it reads: {', '.join(kinds[kind].OPTIONS) or 'none'})")
  if "languages" in given:
    given["languages"] = tuple(given["languages"])
  reader = getattr(kinds[kind], "READER", None)
  if validation_fraction and reader is not None and reader.OWN_SPLITS:
    raise ValueError(f"{kind} has its own validation and test splits; validation_fraction would mix held-out "
                     "training recordings into them")
  config = FolderConfig(name=name, path=str(Path(path).absolute()), min_seconds=min_seconds,
                        validation_fraction=validation_fraction, **given)
  if reader is not None:
    reader.check(config)
  return config


def prepare_folder(kind: str, path: str | os.PathLike, data_dir: str | None = None, *, name: str = "",
                   min_seconds: float = 0.5, validation_fraction: float = 0.0, beam_options: str = "",
                   **options) -> tfds.core.DatasetBuilder:
  """Builds a folder dataset (`folder_builders()`: audio_dir, noise_dir, librispeech_dir, librilight_dir,
  gigaspeech_dir, voxpopuli_dir) under config `name` (default: `default_name`, the subset or the folder's
  name); `options`: subset, max_seconds, languages.
  `beam_options` ("runner=DirectRunner,direct_num_workers=2,..."): the pretraining corpora only, built as
  an Apache Beam pipeline (`wavlm_jax/data/beam_prepare.py`) into the same dataset."""
  config = folder_config(kind, path, name=name, min_seconds=min_seconds, validation_fraction=validation_fraction,
                         **options)
  builder = folder_builders()[kind]
  if beam_options and not getattr(builder, "READER", None):
    raise ValueError(f"{kind} is built in-process only; Beam preparation is for "
                     "librilight_dir, gigaspeech_dir and voxpopuli_dir")
  data_dir = paths.data_dir(data_dir)
  if beam_options:
    from wavlm_jax.data import beam_prepare

    beam_prepare.check_data_dir(beam_options, data_dir)
  return _build(lambda d: builder(data_dir=d, config=config, file_format=ARRAY_RECORD), data_dir, beam_options)
