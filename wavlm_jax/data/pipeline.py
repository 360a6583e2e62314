"""The input pipeline: Grain over TFDS ArrayRecord data sources, one shard per host.

    source -> global shuffle (new order every epoch) -> repeat
           -> decode, random crop or pad to a fixed length, join labels       (per example, seeded)
           -> this host's rows of each global batch -> drop too-short utterances -> batch
           -> utterance / noise mixing, waveform normalisation                 (per host batch, seeded)

Every host reads only its own examples (disjoint, together covering each epoch), and a multi-host
run sees the same global batches as a single-host run. Every random choice derives from (seed, index):
crops from the example's global index, mixing from (seed, batch index, host); utterance-mixing
partners come from the host's own rows of the batch. The iterator state (Grain's) is small JSON; restoring it
yields exactly the next batch. Shapes are static: audio is cropped to `crop_seconds` and shorter
utterances (at least `min_seconds`) are zero-padded with `padding_mask` True on the padding. (fairseq
instead crops each batch to its shortest utterance, which needs a new shape per batch.)
"""

from __future__ import annotations

import json
from typing import Any

import grain
import ml_collections
import numpy as np

from wavlm_jax.data import labels as labels_lib, mixing, noise as noise_lib
from wavlm_jax.models.frontend import normalize_waveform

SAMPLE_RATE = 16000


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `data` block of a run config (locked)."""
  c = ml_collections.ConfigDict()
  c.dataset = "espeak_speech/tiny"  # a TFDS name: our builders or a catalog dataset prepared by the user
  c.data_dir = ""  # "" = $WAVLM_DATA_DIR or ~/tensorflow_datasets
  c.split = "train"
  c.prepare = True  # build the embedded eSpeak corpus if absent
  c.audio_key = "audio"  # feature names (catalog datasets differ: librispeech uses "speech")
  c.id_key = "id"
  c.crop_seconds = 4.0
  c.min_seconds = 2.0
  c.batch_size = 8  # global; each host loads batch_size / process_count
  c.normalize = False  # per-utterance waveform normalisation (after mixing)
  c.seed = 0
  c.labels = ""  # a label store directory ("" = no labels)
  # WavLM denoising (SPEC.md §7.5).
  c.mix_prob = 0.0
  c.noise_prob = 0.0
  c.noise = "synthetic"  # "synthetic" or a prepared noise dataset name, e.g. "noise_dir/musan"
  c.noise_seconds = 600.0  # at most this much noise audio is held in memory
  c.max_mix_fraction = 0.5
  c.utterance_snr = (-5.0, 5.0)
  c.noise_snr = (-5.0, 20.0)
  c.reference_mixing = False
  # Throughput.
  c.num_threads = 4
  c.prefetch = 4
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"unknown data config field {key!r}")
    c[key] = value
  c.lock()
  return c


def _data_dir(cfg) -> str:
  from wavlm_jax.data import builders  # TFDS (and TensorFlow) only where a dataset is opened

  return cfg.data_dir or builders.default_data_dir()


def open_source(cfg):
  """The TFDS ArrayRecord data source of cfg.dataset / cfg.split (building the eSpeak corpus if asked)."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders

  data_dir = _data_dir(cfg)
  if cfg.prepare and cfg.dataset.startswith("espeak_speech"):
    builders.prepare(cfg.dataset, data_dir)
  try:
    return tfds.data_source(cfg.dataset, split=cfg.split, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; say what to do
    raise FileNotFoundError(f"dataset {cfg.dataset!r} split {cfg.split!r} is not prepared in {data_dir} ({e}); "
                            "prepare it with wavlm_jax.data.builders.prepare or prepare_folder") from None


class _Example:
  """Per-example work: decode, crop or pad, join labels. Picklable (for Grain worker processes)."""

  def __init__(self, cfg, store: labels_lib.LabelStore | None):
    self.crop = int(round(cfg.crop_seconds * SAMPLE_RATE))
    self.min_samples = int(round(cfg.min_seconds * SAMPLE_RATE))
    self.audio_key, self.id_key = cfg.audio_key, cfg.id_key
    self.store = store

  def __call__(self, example: dict, rng: np.random.Generator):
    audio = np.asarray(example[self.audio_key])
    uid = example[self.id_key]
    uid = uid.decode() if isinstance(uid, bytes) else str(uid)
    n = len(audio)
    if n < self.min_samples:
      return None
    if np.issubdtype(audio.dtype, np.integer):
      audio = audio.astype(np.float32) / 32768.0
    start = int(rng.integers(0, n - self.crop + 1)) if n > self.crop else 0
    piece = audio[start:start + self.crop].astype(np.float32)
    out = {"audio": np.zeros(self.crop, np.float32), "padding_mask": np.ones(self.crop, bool), "id": uid}
    out["audio"][:len(piece)] = piece
    out["padding_mask"][:len(piece)] = False
    if self.store is not None:
      out["labels"] = self._labels(uid, n, start)
    return out

  def _labels(self, uid: str, num_samples: int, start: int) -> np.ndarray:
    rate = self.store.label_rate
    full = self.store[uid]
    labels_lib.check_length(uid, len(full), num_samples, rate)
    first = int(round(start * rate / SAMPLE_RATE))
    count = int(round(self.crop * rate / SAMPLE_RATE))
    out = np.full(count, -1, np.int32)
    piece = full[first:first + count]
    out[:len(piece)] = piece
    return out


class _Mix:
  """Per-batch work: mixing and normalisation, seeded by (seed, batch index, host)."""

  def __init__(self, cfg, noises, process_index: int):
    self.cfg, self.noises, self.process_index = cfg, noises, process_index

  def __call__(self, index: int, batch: dict) -> dict:
    c = self.cfg
    audio, pad = batch["audio"], batch["padding_mask"]
    batch["mixed"] = np.zeros(len(audio), bool)
    if c.mix_prob > 0:
      rng = np.random.default_rng([c.seed, index, self.process_index, 1])
      audio, info = mixing.mix_batch(audio, pad, rng, mix_prob=c.mix_prob, noise_prob=c.noise_prob,
                                     noises=self.noises, max_fraction=c.max_mix_fraction,
                                     utterance_snr=tuple(c.utterance_snr), noise_snr=tuple(c.noise_snr),
                                     reference_behaviour=c.reference_mixing)
      batch["mixed"] = info.mixed
    if c.normalize:
      audio = normalize_waveform(audio, pad, xp=np)
    batch["audio"] = audio
    return batch


def _noises(cfg):
  if cfg.mix_prob <= 0 or cfg.noise_prob <= 0 or not cfg.noise:
    return None
  if cfg.noise == "synthetic":
    return noise_lib.synthetic_noises(seed=cfg.seed)
  return noise_lib.load_noise_dataset(cfg.noise, _data_dir(cfg), max_seconds=cfg.noise_seconds)


def host_batch_size(cfg, process_count: int) -> int:
  if cfg.batch_size % process_count:
    raise ValueError(f"data.batch_size={cfg.batch_size} is not divisible by the {process_count} hosts")
  return cfg.batch_size // process_count


class _HostSlice(grain.MapDataset):
  """This host's rows of every global batch: element j is global element
  (j // local) * global + offset + j % local. All hosts see the same global shuffled stream, so a
  multi-host run reads exactly the batches of a single-host run, split by rows."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, local_batch: int, offset: int):
    super().__init__(parent)
    self._global, self._local, self._offset = global_batch, local_batch, offset

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._offset + row]

  def __str__(self) -> str:
    return f"HostSlice(global={self._global}, local={self._local}, offset={self._offset})"


def build_dataset(cfg, *, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The per-host Grain dataset of batches (dicts of NumPy arrays)."""
  source = open_source(cfg)
  store = labels_lib.LabelStore(cfg.labels) if cfg.labels else None
  local = host_batch_size(cfg, process_count)
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=cfg.seed).repeat()  # the same global order on every host, reshuffled every epoch
  ds = ds.random_map(_Example(cfg, store), seed=cfg.seed)  # crops seeded by the global index
  ds = _HostSlice(ds, cfg.batch_size, local, process_index * local)
  ds = ds.filter(lambda e: e is not None)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch))
  it = it.batch(local, drop_remainder=True)
  return it.map_with_index(_Mix(cfg, _noises(cfg), process_index))


class HostIterator:
  """This host's batches; `get_state()`/`set_state()` give exact resumption (JSON-serialisable)."""

  def __init__(self, cfg, *, process_index: int | None = None, process_count: int | None = None):
    import jax

    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.config = cfg
    self._iter = iter(build_dataset(cfg, process_index=self.process_index, process_count=self.process_count))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._iter)

  def get_state(self) -> dict:
    return json.loads(json.dumps(self._iter.get_state(), default=int))

  def set_state(self, state: dict) -> None:
    self._iter.set_state(state)


def create_iterator(cfg, **kwargs) -> HostIterator:
  """The function the trainer calls: this host's iterator for a `data` config block."""
  return HostIterator(cfg, **kwargs)


def to_global(batch: dict, sharding) -> dict:
  """Host-local NumPy batch -> global jax.Arrays (batch axis sharded as `sharding` says)."""
  import jax

  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()
          if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
