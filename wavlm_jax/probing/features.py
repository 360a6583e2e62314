"""Hidden states of every layer of a frozen model, extracted once per (model, dataset, split) and cached.

The upstream runs with LayerDrop off, no masking and no dropout (no PRNG key), padding-invariant
(GroupNorm statistics over valid frames), so each utterance's features equal those of encoding it alone.
Utterances are sorted by length and padded to a few static lengths (multiples of 320 samples) so that
jit compiles a few shapes; the batch axis is sharded over every device of a 1-D mesh.

A cached split is a folder (docs/probing.md#the-feature-cache):
    meta.json    what was extracted (the key: model, its config and parameter files, dataset, split, ...)
    hidden.npy   (num_layers + 1, total frames, D): utterance i is hidden[:, offsets[i]:offsets[i + 1]]
    index.npz    offsets, ids, source indices and lengths, and every non-audio field of the examples
It is written under a temporary name and renamed when complete, and reused while its key matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from wavlm_jax import audio, storage
from wavlm_jax.data import labels as labels_lib

FORMAT = 1
HIDDEN, INDEX, META = "hidden.npy", "index.npz", "meta.json"


# ================================================================================================
# Sources of audio
# ================================================================================================
class AudioSource(Protocol):
  """What the extractor reads: `len`, `info(i)` -> (num_samples, non-audio fields), `audio(i)` -> float32."""

  def __len__(self) -> int: ...

  def info(self, i: int) -> tuple[int, dict]: ...

  def audio(self, i: int) -> np.ndarray: ...


def open_split(dataset: str, split: str, data_dir: str | None = None):
  """The TFDS ArrayRecord data source of a split (the embedded eSpeak corpus is built on first use)."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders, paths

  root = paths.data_dir(data_dir)
  if dataset.startswith("espeak_speech"):
    builders.prepare(dataset, root)
  try:
    splits = sorted(tfds.builder(dataset, data_dir=root).info.splits)
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; say what to do
    raise FileNotFoundError(f"dataset {dataset!r} is not prepared in {root} ({e}); prepare it with "
                            "`python -m wavlm_jax.data.prepare` (or pass --data-dir)") from None
  if split.split("[")[0] not in splits:
    raise ValueError(f"dataset {dataset!r} in {root} has no split {split!r}; it has {splits}")
  return tfds.data_source(dataset, split=split, data_dir=root)


def _plain(value):
  """A TFDS field value as stored in the index: text as str, arrays as numpy."""
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  return value if isinstance(value, str) else np.asarray(value)


class DatasetAudio:
  """The examples of a TFDS data source; `fields` names the non-audio fields kept (default: all)."""

  def __init__(self, source, *, audio_field: str = "audio", name: str = "dataset"):
    self.source, self.audio_field, self.name = source, audio_field, name

  def __len__(self) -> int:
    return len(self.source)

  def info(self, i: int) -> tuple[int, dict]:
    ex = self.source[int(i)]
    if self.audio_field not in ex:
      raise KeyError(f"{self.name}: examples have no audio field {self.audio_field!r}; fields: {sorted(ex)}")
    return len(ex[self.audio_field]), {k: _plain(v) for k, v in ex.items() if k != self.audio_field}

  def audio(self, i: int) -> np.ndarray:
    return audio.to_float(self.source[int(i)][self.audio_field])


# ================================================================================================
# The cache
# ================================================================================================
@dataclasses.dataclass
class Features:
  """One cached split: per-utterance hidden states of all layers and the examples' other fields."""
  path: Path
  hidden: np.ndarray  # (L, F, D), memory-mapped
  offsets: np.ndarray  # (N + 1,)
  ids: list[str]
  meta: dict
  from_cache: bool
  _fields: dict = dataclasses.field(default_factory=dict, repr=False)

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def num_layers(self) -> int:
    """Hidden states per utterance (the model's num_layers + 1)."""
    return self.hidden.shape[0]

  @property
  def dim(self) -> int:
    return self.hidden.shape[2]

  @property
  def lengths(self) -> np.ndarray:
    """Frames per utterance."""
    return np.diff(self.offsets)

  def utterance(self, i: int, layers=slice(None)) -> np.ndarray:
    """(layers, frames, D) float32 of utterance i."""
    return np.asarray(self.hidden[layers, self.offsets[i]:self.offsets[i + 1]], np.float32)

  def layer(self, layer: int) -> np.ndarray:
    """(total frames, D) of one hidden state, every utterance concatenated."""
    return np.asarray(self.hidden[layer], np.float32)

  @property
  def field_names(self) -> list[str]:
    return sorted(self.meta["fields"])

  def field(self, name: str, flag: str = "") -> list:
    """The values of a non-audio field, one per utterance; a missing field is an error naming the
    dataset and the fields it has (and the flag that chooses the field, if given)."""
    if name not in self.meta["fields"]:
      how = f" (choose another with {flag})" if flag else ""
      raise KeyError(f"{self.meta['dataset']} split {self.meta['split']!r} has no field {name!r}{how}; "
                     f"its fields: {self.field_names}")
    if name not in self._fields:
      with np.load(self.path / INDEX, allow_pickle=False) as z:
        if f"f_{name}" in z:
          self._fields[name] = [str(v) for v in z[f"f_{name}"]] if z[f"f_{name}"].dtype.kind == "U" else list(z[f"f_{name}"])
        else:
          values, offsets = z[f"v_{name}"], z[f"o_{name}"]
          self._fields[name] = [values[a:b] for a, b in itertools.pairwise(offsets)]
    return self._fields[name]


def _fingerprint(model_dir: os.PathLike) -> dict:
  """What identifies a model directory's content: its config text and its parameter files' sizes and times."""
  h = hashlib.sha1((model_dir / "config.json").read_bytes())
  for p in storage.files_under(model_dir / "params"):
    st = p.stat()
    h.update(f"{p.relative_to(model_dir)}:{st.length}:{st.mtime}".encode())  # epath (gs:// too)
  return {"model": str(model_dir.absolute()), "model_sha1": h.hexdigest()}


def slug(name: str) -> str:
  """A dataset or split name as a folder name."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load(path: str | os.PathLike, key: dict | None = None) -> Features | None:
  """The cached split in `path`, or None when absent or made for another key."""
  path = Path(path)
  try:
    meta = json.loads((path / META).read_text())
  except (OSError, json.JSONDecodeError):
    return None
  if key is not None and meta.get("key") != key:
    return None
  hidden = np.load(path / HIDDEN, mmap_mode="r")
  with np.load(path / INDEX, allow_pickle=False) as z:
    offsets, ids = z["offsets"], [str(v) for v in z["ids"]]
  return Features(path, hidden, offsets, ids, meta, from_cache=True)


def _store_fields(records: list[dict], kept: list[int]) -> dict[str, np.ndarray]:
  """Non-audio fields as index arrays: text and scalars one per utterance, arrays concatenated along
  their first axis with offsets (`v_NAME`, `o_NAME`)."""
  out = {}
  for name in records[0] if records else ():
    values = [records[i][name] for i in kept]
    if all(isinstance(v, str) for v in values):
      out[f"f_{name}"] = np.array(values, dtype=str)
    elif all(np.ndim(v) == 0 for v in values):
      out[f"f_{name}"] = np.array(values)
    else:
      arrays = [np.asarray(v) for v in values]
      out[f"v_{name}"] = np.concatenate(arrays) if arrays else np.zeros(0)
      out[f"o_{name}"] = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
  return out


def length_levels(lengths: np.ndarray, count: int, multiple: int) -> np.ndarray:
  """At most `count` padded lengths (multiples of `multiple`) covering `lengths`: their quantiles,
  rounded up. A batch pads to the smallest level that holds its longest member."""
  lengths = np.asarray(lengths)
  if len(lengths) == 0:
    return np.array([multiple])
  qs = np.quantile(lengths, np.linspace(0, 1, count + 1)[1:], method="higher")
  return np.unique(-(-np.maximum(qs, 1) // multiple) * multiple).astype(np.int64)


class Extractor:
  """The frozen upstream: `encode_sorted(waveforms, padded)` -> per utterance (num_layers + 1, frames, D)
  float32. The model is loaded on first use, so a run whose features are all cached never loads it."""

  def __init__(self, model_dir: str | os.PathLike, *, batch_size: int = 8, levels: int = 4):
    import jax

    from wavlm_jax.models import directory

    self.model_dir = storage.path(model_dir)  # may be gs://
    self.config = directory.load_config(self.model_dir, layerdrop=0.0)
    self.levels = levels
    self.hop = audio.samples_per_frame(self.config.conv_stride)
    self.batch_size = -(-batch_size // jax.device_count()) * jax.device_count()  # rows: a multiple of the devices
    self._encode = None
    self.calls = 0  # batches encoded (tests count them to prove the cache is reused)

  def _build(self) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from wavlm_jax.models import directory

    model = directory.load_model(self.model_dir, layerdrop=0.0)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    self._rows = NamedSharding(mesh, P("data"))  # the batch axis over every device
    graphdef, state = nnx.split(model)
    normalize = bool(self.config.normalize_waveform)

    def encode(state, waveforms, padding_mask):
      m = nnx.merge(graphdef, state)
      if normalize:
        waveforms = audio.normalize_waveform(waveforms, padding_mask, xp=jnp)
      out = m(waveforms, padding_mask, padding_invariant=True)  # no key: no dropout, LayerDrop, masking
      return jnp.stack(out.hidden_states, axis=1)  # (B, L, T, D)

    self._encode = jax.jit(encode)
    self._state = jax.device_put(state, NamedSharding(mesh, P()))

  @property
  def num_states(self) -> int:
    return self.config.num_layers + 1

  def frames(self, num_samples: int) -> int:
    from wavlm_jax.models.config import conv_output_length
    return max(0, int(conv_output_length(int(num_samples), self.config)))

  def encode_sorted(self, waveforms: list[np.ndarray], padded: int) -> list[np.ndarray]:
    """One batch, padded to `padded` samples."""
    import jax

    if self._encode is None:
      self._build()
    x = np.zeros((self.batch_size, padded), np.float32)
    pad = np.ones((self.batch_size, padded), bool)
    for row, w in enumerate(waveforms):
      x[row, :len(w)], pad[row, :len(w)] = w, False
    self.calls += 1
    h = np.asarray(self._encode(self._state, jax.device_put(x, self._rows), jax.device_put(pad, self._rows)))
    return [h[row, :, :self.frames(len(w))] for row, w in enumerate(waveforms)]

  def run(self, source: AudioSource, lengths: np.ndarray, order: Iterable[int],
          write: Callable[[int, np.ndarray], None], log: Callable[[str], None] = print) -> None:
    """Encodes the utterances `order` (sorted by length) batch by batch, handing each to `write`."""
    order = list(order)
    levels = length_levels(lengths[order], self.levels, self.hop)
    for b in range(0, len(order), self.batch_size):
      group = order[b:b + self.batch_size]
      longest = max(int(lengths[i]) for i in group)
      padded = int(levels[np.searchsorted(levels, longest)])
      for i, h in zip(group, self.encode_sorted([source.audio(i) for i in group], padded)):
        write(i, h)
      if log and (b // self.batch_size) % 50 == 49:
        log(f"  encoded {b + len(group)}/{len(order)} utterances")


def extract(extractor: Extractor, source: AudioSource, path: str | os.PathLike, key: dict, *,
            dtype: str = "float32", max_seconds: float = 60.0, max_utterances: int = 0,
            log: Callable[[str], None] = print) -> Features:
  """The cached features in `path` for `key` (extended with the model's fingerprint), extracting them
  first when absent or stale. Utterances too short for one frame (400 samples) or longer than
  `max_seconds` are skipped and counted (meta.json: skipped_short, skipped_long); `max_utterances` > 0 keeps the first."""
  path = Path(path)
  key = {"format": FORMAT, **_fingerprint(extractor.model_dir), **key, "dtype": dtype,
         "max_seconds": max_seconds, "max_utterances": max_utterances}
  cached = load(path, key)
  if cached is not None:
    return cached
  stale = " (replacing a cache made for another model, dataset or setting)" if (path / META).exists() else ""
  n = len(source) if max_utterances <= 0 else min(len(source), max_utterances)
  log(f"extracting {extractor.num_states} hidden states of {n} utterances of {key.get('dataset')} "
      f"{key.get('split')} into {path}{stale}")
  records, lengths = [], np.zeros(n, np.int64)
  for i in range(n):
    lengths[i], fields = source.info(i)
    records.append(fields)
  limit = int(max_seconds * audio.SAMPLE_RATE)
  short = [i for i in range(n) if extractor.frames(lengths[i]) < 1]
  long = [i for i in range(n) if lengths[i] > limit]
  kept = [i for i in range(n) if extractor.frames(lengths[i]) >= 1 and lengths[i] <= limit]
  if not kept:
    raise ValueError(f"{key.get('dataset')} split {key.get('split')!r}: no utterance of at least one frame "
                     f"and at most {max_seconds} s ({len(short)} shorter, {len(long)} longer)")
  frames = np.array([extractor.frames(lengths[i]) for i in kept], np.int64)
  offsets = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
  row = {i: r for r, i in enumerate(kept)}

  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
  tmp.mkdir(parents=True)
  try:
    dim = extractor.config.embed_dim
    hidden = np.lib.format.open_memmap(tmp / HIDDEN, mode="w+", dtype=np.dtype(dtype),
                                       shape=(extractor.num_states, int(offsets[-1]), dim))

    def write(i, h):
      r = row[i]
      hidden[:, offsets[r]:offsets[r + 1]] = h

    extractor.run(source, lengths, sorted(kept, key=lambda i: lengths[i]), write, log)
    hidden.flush()
    ids = [labels_lib.utterance_id(records[i].get("id", str(i))) for i in kept]
    np.savez(tmp / INDEX, offsets=offsets, ids=np.array(ids, dtype=str), source_index=np.array(kept),
             num_samples=lengths[kept], **_store_fields(records, kept))
    meta = {"key": key, "dataset": key.get("dataset"), "split": key.get("split"), "utterances": len(kept),
            "frames": int(offsets[-1]), "num_states": extractor.num_states, "dim": dim,
            "skipped_short": len(short), "skipped_long": len(long),
            "fields": sorted(records[0]) if records else []}
    (tmp / META).write_text(json.dumps(meta, indent=1))
    if path.exists():
      shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  if short or long:
    log(f"  skipped {len(short)} utterances too short for one frame and {len(long)} over {max_seconds} s")
  features = load(path, key)
  features.from_cache = False
  return features


def dataset_features(extractor: Extractor, dataset: str, split: str, workdir: str | os.PathLike, *,
                     data_dir: str | None = None, audio_field: str = "audio", dtype: str = "float32",
                     max_seconds: float = 60.0, max_utterances: int = 0,
                     log: Callable[[str], None] = print) -> Features:
  """The cached hidden states of a dataset split, in WORKDIR/features/<dataset>/<split> (the layout the
  probe and the layer-wise analysis share: give both one --workdir and they share the cache)."""
  from wavlm_jax.data import paths

  source = DatasetAudio(open_split(dataset, split, data_dir), audio_field=audio_field, name=dataset)
  key = {"dataset": dataset, "data_dir": storage.as_str(paths.data_dir(data_dir)), "split": split,
         "audio_field": audio_field, "utterances": len(source)}  # a re-prepared dataset of another size: new
  return extract(extractor, source, Path(workdir) / "features" / slug(dataset) / slug(split), key, dtype=dtype,
                 max_seconds=max_seconds, max_utterances=max_utterances, log=log)


def usage_error(model: str | os.PathLike, counts: dict[str, int | None]) -> str | None:
  """What is wrong with the probing command lines' --model and count flags (each at least 1 when given),
  or None."""
  for flag, value in counts.items():
    if value is not None and value < 1:
      return f"{flag} must be at least 1, got {value}"
  if not (storage.path(model) / "config.json").is_file():
    return f"--model {model}: no config.json; not a wavlm_jax model directory"
  return None


def model_name(model: str | os.PathLike) -> str:
  """A model directory's name for default workdirs and titles, with its parent's for the generic names
  training writes (runs/ft_tiny/best -> ft_tiny_best, runs/tiny/model -> tiny_model)."""
  model = Path(model).absolute()
  return f"{model.parent.name}_{model.name}" if model.name in ("model", "best") else model.name
