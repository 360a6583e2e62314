"""The input pipeline: Grain over TFDS ArrayRecord data sources, one shard per host. Two ways to batch:

`batching="duration"` (pretraining; `wavlm_jax.data.buckets`): batches of one crop length from a few
length buckets, rows per batch chosen so that audio per step stays near `batch_size x crop_seconds`;
every row is real audio (no padding), and only the buckets' shapes ever exist.

    utterance lengths (indexed once, cached beside the dataset) -> plan of global batches per epoch
    -> this host's rows of batch i: decode, random crop to the bucket, join labels  (seeded by (seed, i, row))
    -> utterance / noise mixing, waveform normalisation                             (seeded by (seed, i, host))

`batching="padded"` (CTC fine-tuning; `buckets.make_padded_plan`): whole utterances, never cropped, each
zero-padded to the shortest of a few bucket lengths that holds it, with its transcript as vocabulary ids
(`labels`, -1 padded to one id per 20 ms frame of the bucket) and `label_length`. `eval_batches` reads a
split once, in length order, for validation and scoring.

`batching="fixed"` (inference, feature extraction, fine-tuning-style padded batches): every utterance of
at least `min_seconds` is cropped to `crop_seconds` or zero-padded to it, `padding_mask` True on padding.

    source -> drop too-short utterances -> global shuffle (new order every epoch) -> repeat
           -> decode, random crop or pad, join labels -> this host's rows of each global batch -> batch -> mix

Every host reads only its own rows, and a run sees the same global batches (before mixing, whose
partners come from each host's own rows) whatever the number of hosts, for the same number of
data-parallel devices (too-short utterances are dropped before the rows are split among hosts). The iterator state
(Grain's) is small JSON; restoring it yields exactly the next batch.
"""

from __future__ import annotations

import io
import json
import os
import sys
import uuid

import grain
import numpy as np

from wavlm_jax import storage
from wavlm_jax.data import buckets as buckets_lib, labels as labels_lib, mixing, mixture as mixture_lib
from wavlm_jax.data import noise as noise_lib, paths
from wavlm_jax.audio import SAMPLE_RATE, label_count, label_start, normalize_waveform, to_float



def _data_dir(cfg) -> str:
  return paths.data_dir(cfg.data_dir)


def length_index(source, cfg) -> np.ndarray:
  """Samples per utterance of the split, in source order (`split_index`)."""
  if isinstance(source, TranscribedSource):  # a subset of a split: the split's (cached) index, subset
    return length_index(source.split_source, cfg)[source.indices]
  return split_index(source, cfg)[0]


def split_index(source, cfg) -> tuple[np.ndarray, np.ndarray]:
  """(samples, utterance ids) of every utterance of the split, in source order: read in one pass over the
  split (audio included) and cached beside the dataset (`lengths-<split>-<audio_key>.npy`,
  `ids-<split>-<id_key>.npy`), or recomputed when that directory is not writable."""
  def compute():
    rows = _scan(source, cfg, lambda ex: (len(ex[cfg.audio_key]), labels_lib.utterance_id(ex[cfg.id_key])))
    return np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], dtype=str)

  lengths, ids = _cached_index(source, (f"lengths-{{split}}-{cfg.audio_key}.npy", f"ids-{{split}}-{cfg.id_key}.npy"),
                               compute)
  return lengths, ids


def empty_transcripts(source, cfg, key: str) -> np.ndarray:
  """True for each utterance of the split (in source order) whose `key` transcript is empty or blank:
  fine-tuning leaves those out (a CTC target of nothing teaches the model to say nothing). Read in one
  pass and cached beside the dataset (`empty-<split>-<key>.npy`), or from a transcripts file's rows."""
  if isinstance(source, TranscribedSource):  # the file's rows replace the dataset's transcripts
    return np.array([not _text(source.transcript(i, key)).strip() for i in range(len(source))], bool)
  compute = lambda: (np.array(_scan(source, cfg, lambda ex: key in ex and not _text(ex[key]).strip()), bool),)
  return _cached_index(source, (f"empty-{{split}}-{key}.npy",), compute)[0].astype(bool)


def _cached_index(source, names: tuple[str, ...], compute) -> tuple[np.ndarray, ...]:
  """Per-utterance arrays of the split, cached as `names` ("{split}" filled in) beside the dataset: read
  from there when every one is present and whole, else `compute()`d and written (by process 0 only: a
  bucket takes ~1 write/s per object); recomputed each time where the dataset has no directory or it is
  not writable."""
  info = getattr(source, "dataset_info", None)
  caches = None
  if info is not None and getattr(info, "data_dir", None):
    caches = [storage.path(info.data_dir) / name.format(split=source.split) for name in names]
    cached = [_read_index(c, len(source)) for c in caches]
    if all(c is not None for c in cached):
      return tuple(cached)
  values = compute()
  import jax

  if caches is not None and jax.process_index() == 0:
    for cache, value in zip(caches, values):
      _write_index(cache, value)
  return values


def _scan(source, cfg, value) -> list:
  """`value(example)` for every example of the source, in order: one pass, read in chunks by threads."""
  import concurrent.futures

  n = len(source)
  chunks = [range(i, min(i + 256, n)) for i in range(0, n, 256)]
  read = lambda r: [value(ex) for ex in source.__getitems__(list(r))]
  with concurrent.futures.ThreadPoolExecutor(max(1, cfg.num_threads)) as pool:
    return [x for part in pool.map(read, chunks) for x in part]


def _read_index(cache, n: int) -> np.ndarray | None:
  if not cache.is_file():
    return None
  try:
    values = np.load(io.BytesIO(cache.read_bytes()), allow_pickle=False)
  except (OSError, ValueError, EOFError):  # an empty, truncated or foreign file: index again, replace it
    return None
  return values if len(values) == n else None


def _write_index(cache, values: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, values)
  # one object write on a bucket; a renamed temporary file on disk (hosts may share a file system)
  tmp = cache if storage.is_url(cache) else cache.parent / f"{cache.name}.{uuid.uuid4().hex}.tmp"
  try:
    tmp.write_bytes(buffer.getvalue())
    if tmp != cache:
      os.replace(tmp, cache)
  except Exception:  # noqa: BLE001 - a read-only dataset or bucket, any client's error: index again next time
    if tmp != cache and tmp.exists():
      tmp.unlink()


def open_source(cfg):
  """The TFDS ArrayRecord data source of cfg.dataset / cfg.split (building the eSpeak corpus if asked)."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders

  data_dir = _data_dir(cfg)
  if cfg.prepare and cfg.dataset.startswith("espeak_speech"):
    builders.prepare(cfg.dataset, data_dir)
  try:
    source = tfds.data_source(cfg.dataset, split=cfg.split, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; say what to do
    raise FileNotFoundError(f"dataset {cfg.dataset!r} split {cfg.split!r} is not prepared in {data_dir} ({e}); "
                            "prepare it with `python -m wavlm_jax.data.prepare`") from None
  if cfg.get("transcripts"):
    source = TranscribedSource(source, cfg, f"{cfg.dataset} split {cfg.split!r}")
  return source


def read_transcripts(path) -> dict[str, dict[str, str]]:
  """A transcripts file: JSON lines {"id": ..., FIELD: text, ...} -> {id: {FIELD: text, ...}}."""
  out = {}
  for n, line in enumerate(storage.path(path).read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      uid = str(row.pop("id"))
    except (ValueError, KeyError, AttributeError) as e:
      raise ValueError(f"{path}, line {n}: not a JSON object with an \"id\" ({type(e).__name__}: {e})") from None
    if uid in out:
      raise ValueError(f"{path}, line {n}: utterance {uid!r} is listed twice")
    out[uid] = {k: str(v) for k, v in row.items()}
  if not out:
    raise ValueError(f"{path}: no utterances")
  return out


class TranscribedSource:
  """The utterances of a split that a transcripts file lists (`data.transcripts`), in split order, each
  with the file's fields (its transcript) in place of the dataset's. A listed id the split lacks is an
  error. The split's ids come from its cached index (`split_index`: one pass over the split the first
  time)."""

  def __init__(self, source, cfg, where: str):
    path = cfg.transcripts
    self.split_source, self.path = source, str(path)
    self._rows = read_transcripts(path)
    ids = [str(i) for i in split_index(source, cfg)[1]]
    position = {uid: i for i, uid in enumerate(ids)}
    missing = [uid for uid in self._rows if uid not in position]
    if missing:
      raise ValueError(f"{path}: {len(missing)} utterance(s) are not in {where}, e.g. {missing[:3]}")
    self.indices = np.array(sorted(position[uid] for uid in self._rows), np.int64)
    self._ids = [ids[i] for i in self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def transcript(self, i: int, key: str):
    """Utterance i's `key` field: the file's, else (a field the file lacks) the dataset's."""
    row = self._rows[self._ids[i]]
    return row[key] if key in row else self[i].get(key, "")

  def __getitem__(self, i):
    example = dict(self.split_source[int(self.indices[i])])
    example.update(self._rows[self._ids[i]])
    return example

  def __getitems__(self, indices):
    return [self[int(i)] for i in indices]


class _Example:
  """Per-example work: decode, crop or pad to `crop` samples, join labels (a label store's, or the
  transcript's vocabulary ids). Picklable."""

  def __init__(self, cfg, store: labels_lib.LabelStore | None, vocab=None):
    self.crop = int(round(cfg.crop_seconds * SAMPLE_RATE))
    self.audio_key, self.id_key = cfg.audio_key, cfg.id_key
    self.store, self.vocab = store, vocab
    self.transcript_key = (cfg.transcript_key or vocab.field) if vocab is not None else None

  def __call__(self, example: dict, rng: np.random.Generator, crop: int | None = None):
    crop = crop or self.crop
    audio = np.asarray(example[self.audio_key])
    uid = labels_lib.utterance_id(example[self.id_key])
    n = len(audio)
    start = int(rng.integers(0, n - crop + 1)) if n > crop else 0
    piece = to_float(audio[start:start + crop])  # only the crop is converted
    out = {"audio": np.zeros(crop, np.float32), "padding_mask": np.ones(crop, bool), "id": uid}
    out["audio"][:len(piece)] = piece
    out["padding_mask"][:len(piece)] = False
    if self.store is not None:
      out["labels"] = self._labels(uid, n, start, crop)
    if self.vocab is not None:
      out["labels"], out["label_length"] = transcript_ids(example, self.transcript_key, self.vocab, crop)
    return out

  def _labels(self, uid: str, num_samples: int, start: int, crop: int) -> np.ndarray:
    rate = self.store.label_rate
    full = self.store[uid]
    labels_lib.check_length(uid, len(full), num_samples, rate)
    first = label_start(start, rate)
    count = label_count(crop, rate)
    out = np.full(count, -1, np.int32)
    piece = full[first:first + count]
    out[:len(piece)] = piece
    return out


def transcript_ids(example: dict, key: str, vocab, samples: int) -> tuple[np.ndarray, np.int32]:
  """The transcript's ids, -1 padded to one slot per 20 ms frame of `samples` (more cannot align), and
  the true length (longer than the slots: the utterance cannot align, and the loss counts it)."""
  if key not in example:
    raise KeyError(f"no transcript field {key!r} in the dataset (fields: {sorted(example)}); set "
                   "data.transcript_key")
  value = example[key]
  ids = vocab.encode(_text(value))
  slots = samples // buckets_lib.FRAME
  out = np.full(slots, -1, np.int32)
  out[:min(len(ids), slots)] = ids[:slots]
  return out, np.int32(len(ids))


class _Mix:
  """Per-batch work: mixing and normalisation, seeded by (seed, a mixture component's salt, batch index,
  host)."""

  def __init__(self, cfg, noises, process_index: int):
    self.cfg, self.noises, self.process_index = cfg, noises, process_index

  def __call__(self, index: int, batch: dict, salt: tuple[int, ...] = ()) -> dict:
    c = self.cfg
    audio, pad = batch["audio"], batch["padding_mask"]
    batch["mixed"] = np.zeros(len(audio), bool)
    if c.mix_prob > 0:
      rng = np.random.default_rng([c.seed, *salt, index, self.process_index, 1])
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


class _FilteredSource:
  """The source restricted to `indices` (utterances long enough), as a random-access sequence."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]


class _DurationBatches(grain.MapDataset):
  """Element i: this host's rows of global batch i of the plan, cropped and mixed (a dict of arrays). In a
  mixture, `component` k is the component's index (in the batch as `component`, and in its seeds)."""

  def __init__(self, source, plan: buckets_lib.Plan, example: _Example, mix, cfg, process_index: int,
               process_count: int, component: int | None = None):
    super().__init__()
    self._source, self._plan, self._example, self._mix = source, plan, example, mix
    self._seed, self._process_index, self._process_count = cfg.seed, process_index, process_count
    self._component = component
    self._salt = () if component is None else (0xC0, component)

  def __len__(self) -> int:
    return sys.maxsize  # endless: epoch after epoch

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    bucket, rows = self._plan.batch(index)
    local = bucket.rows // self._process_count
    first = self._process_index * local
    examples = [self._example(self._source[int(rows[r])],
                              np.random.default_rng([self._seed, *self._salt, index, r, 3]), bucket.samples)
                for r in range(first, first + local)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    if self._component is not None:
      batch["component"] = np.full(local, self._component, np.int32)
    return self._mix(index, batch, self._salt)

  def __str__(self) -> str:
    return f"DurationBatches({len(self._plan.buckets)} buckets)"


def build_dataset(cfg, *, process_index: int = 0, process_count: int = 1, batch_multiple: int = 1, vocab=None):
  """The per-host Grain dataset of batches (dicts of NumPy arrays) and, for duration or padded batching,
  its plan. `batch_multiple`: every global batch is a multiple of it (the trainer passes the
  data-parallel size). `vocab`: a CTC vocabulary; batches then carry the transcripts' ids."""
  read = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch)
  mix = _Mix(cfg, _noises(cfg), process_index)
  if cfg.get("mixture"):
    if cfg.batching != "duration":
      raise ValueError(f"data.mixture is for pretraining's duration batching; data.batching={cfg.batching!r}")
    ds, plan = _mixture(cfg, mix, process_index, process_count, buckets_lib.lcm(batch_multiple, process_count))
    return ds.to_iter_dataset(read), plan
  source = open_source(cfg)
  store = labels_lib.LabelStore(cfg.labels) if cfg.labels else None
  if cfg.batching in ("duration", "padded"):
    multiple = buckets_lib.lcm(batch_multiple, process_count)
    if cfg.batching == "duration":
      plan = buckets_lib.make_plan(length_index(source, cfg), cfg, batch_multiple=multiple)
    else:
      empty = empty_transcripts(source, cfg, cfg.transcript_key or vocab.field) if vocab is not None else None
      plan = buckets_lib.make_padded_plan(length_index(source, cfg), cfg, batch_multiple=multiple, exclude=empty)
    ds = _DurationBatches(source, plan, _Example(cfg, store, vocab), mix, cfg, process_index, process_count)
    return ds.to_iter_dataset(read), plan
  if cfg.batching != "fixed":
    raise ValueError(f"data.batching={cfg.batching!r}: 'duration', 'padded' or 'fixed'")
  local = host_batch_size(cfg, process_count)
  if cfg.batch_size % batch_multiple:
    raise ValueError(f"data.batch_size={cfg.batch_size} is not a multiple of {batch_multiple} (data-parallel devices)")
  if cfg.min_seconds > 0:  # before the host split, so that every host drops the same utterances
    lengths = length_index(source, cfg)
    source = _FilteredSource(source, np.flatnonzero(lengths >= int(round(cfg.min_seconds * SAMPLE_RATE))))
  example = _Example(cfg, store, vocab)
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=cfg.seed).repeat()  # the same global order on every host, reshuffled every epoch
  ds = ds.random_map(example, seed=cfg.seed)  # crops seeded by the global index
  ds = _HostSlice(ds, cfg.batch_size, local, process_index * local)
  it = ds.to_iter_dataset(read).batch(local, drop_remainder=True)
  return it.map_with_index(mix), None


def component_config(cfg, component: mixture_lib.Component):
  """The `data` block of one mixture component: its dataset, split, labels and length limits."""
  out = cfg.copy_and_resolve_references()
  with out.unlocked():
    out.dataset, out.split, out.mixture = component.dataset, component.split, ()
    out.labels = component.labels or cfg.labels
    if component.min_seconds is not None:
      out.min_seconds = component.min_seconds
  return out


def _mixture(cfg, mix, process_index: int, process_count: int, multiple: int):
  """The components' duration batches, planned over shared bucket lengths, interleaved by Grain's
  MapDataset.mix (docs/data.md#mixtures); and their MixturePlan."""
  comps = mixture_lib.components(cfg.mixture)
  cfgs = [component_config(cfg, c) for c in comps]
  sources = [open_source(c) for c in cfgs]
  lengths = [length_index(s, c) for s, c in zip(sources, cfgs)]
  keep = [mixture_lib.usable(n, comp, cfg.min_seconds) for n, comp in zip(lengths, comps)]
  weights = mixture_lib.resolve_weights(comps, lengths, keep)
  samples = None
  if not cfg.bucket_seconds:
    low = min(int(round(c.min_seconds * SAMPLE_RATE)) for c in cfgs)
    samples = buckets_lib.choose_lengths(mixture_lib.pooled_lengths(lengths, keep, weights, cfg.seed),
                                         cfg.num_buckets, max(low, buckets_lib.FRAME),
                                         int(round(cfg.crop_seconds * SAMPLE_RATE)))
  plans, parts = [], []
  for k, (c, source, n, usable) in enumerate(zip(cfgs, sources, lengths, keep)):
    try:
      plan = buckets_lib.make_plan(n, c, batch_multiple=multiple, exclude=~usable, samples=samples)
    except ValueError as e:
      raise ValueError(f"data.mixture[{k}] ({comps[k].dataset} {comps[k].split!r}): {e}") from None
    store = labels_lib.LabelStore(c.labels) if c.labels else None
    plans.append(plan)
    parts.append(_DurationBatches(source, plan, _Example(c, store), mix, cfg, process_index, process_count,
                                  component=k))
  return grain.MapDataset.mix(parts, weights), mixture_lib.MixturePlan(comps, plans, weights)


class HostIterator:
  """This host's batches; `get_state()`/`set_state()` give exact resumption (JSON-serialisable)."""

  def __init__(self, cfg, *, process_index: int | None = None, process_count: int | None = None,
               batch_multiple: int = 1, vocab=None):
    import jax

    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self.config = cfg
    dataset, self.plan = build_dataset(cfg, process_index=self.process_index, process_count=self.process_count,
                                       batch_multiple=batch_multiple, vocab=vocab)
    self._iter = iter(dataset)

  def shapes(self) -> list[tuple[int, int]]:
    """Every (global rows, samples) a batch can have, shortest crop first."""
    if self.plan is None:
      return [(self.config.batch_size, int(round(self.config.crop_seconds * SAMPLE_RATE)))]
    return self.plan.shapes()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._iter)

  def _fingerprint(self) -> dict:
    c = self.config
    where = {"dataset": c.dataset, "split": c.split} if not c.get("mixture") else {}
    if self.plan is None:
      return {"batching": "fixed", **where, "batch_size": c.batch_size, "processes": self.process_count,
              "crop_seconds": c.crop_seconds, "min_seconds": c.min_seconds, "seed": c.seed}
    return {"batching": c.batching, **where, **self.plan.fingerprint()}

  def get_state(self) -> dict:
    """Grain's position plus what it means (the batching and, for duration batching, the plan)."""
    return json.loads(json.dumps({"grain": self._iter.get_state(), "batching": self._fingerprint()}, default=int))

  def set_state(self, state: dict) -> None:
    """Resumes at `state`; a position saved under other batching (another plan: other buckets, rows,
    data-parallel size or data) is refused, since it would silently read other batches."""
    if "grain" not in state:  # saved by a version whose data position did not say what it meant
      saved = {"batching": "unknown: saved by an earlier version, which did not record it; cannot be verified"}
      grain_state = state
    else:
      saved, grain_state = state["batching"], state["grain"]
    if saved != self._fingerprint():
      raise ValueError(
          f"the checkpoint's data position was saved under other batching than this run's, so it would read "
          f"other batches: saved {json.dumps(saved)}, now {json.dumps(self._fingerprint())}. Resume with the "
          "same data config, data-parallel size and dataset (data.batching, batch_size, crop_seconds, "
          "min_seconds, num_buckets/bucket_seconds, seed; data.mixture: the same components and weights), "
          "or start a new workdir")
    self._iter.set_state(grain_state)


def create_iterator(cfg, **kwargs) -> HostIterator:
  """The function the trainer calls: this host's iterator for a `data` config block."""
  return HostIterator(cfg, **kwargs)


def eval_batches(cfg, vocab, *, batch_multiple: int = 1, max_utterances: int = 0, references: bool = True):
  """Every utterance of `cfg.split` once (the first `max_utterances` in source order, if > 0), shortest
  first, as padded global batches (all hosts get the same batches: validation sets are small) with the
  transcripts' ids. The bucket lengths are `padded_lengths` of the split, plus the longest utterance's
  (never dropped: a test set is scored whole); rows per batch keep the padded audio near
  batch_size x crop_seconds, a multiple of `batch_multiple`. The last batch of a length is filled with
  copies of its first row, marked `rows` False. Yields dicts: audio, padding_mask, labels, label_length,
  rows (numeric) and id, transcript (host-side). `references=False`: transcripts are never read (unlabelled
  audio, pseudo-labelling): labels are empty and every transcript is ""."""
  source = open_source(cfg)
  lengths = length_index(source, cfg)
  if max_utterances > 0:
    lengths = lengths[:max_utterances]
  if len(lengths) == 0:
    return
  key = cfg.transcript_key or vocab.field
  example = _Example(cfg, None, vocab if references else None)
  longest = -(-int(lengths.max()) // buckets_lib.FRAME) * buckets_lib.FRAME
  sizes = sorted(set(buckets_lib.padded_lengths(lengths, cfg.num_buckets, 0, int(lengths.max()))) | {longest})
  budget = -(-cfg.batch_size // batch_multiple) * batch_multiple * int(round(cfg.crop_seconds * SAMPLE_RATE))
  order = np.argsort(lengths, kind="stable")
  which = np.searchsorted(sizes, lengths[order], side="left")
  rng = np.random.default_rng(0)  # _Example's crop offset: always 0 here (every bucket holds its utterances)
  for b, samples in enumerate(sizes):
    members = order[which == b]
    rows = buckets_lib.bucket_rows([samples], budget, batch_multiple)[0]
    for i in range(0, len(members), rows):
      chunk = list(members[i:i + rows])
      examples = [source[int(j)] for j in chunk]
      parts = [example(ex, rng, samples) for ex in examples]
      if not references:
        for part in parts:
          part["labels"], part["label_length"] = np.full(1, -1, np.int32), np.int32(0)
      batch = {k: np.stack([p[k] for p in parts] + [parts[0][k]] * (rows - len(parts))) for k in
               ("audio", "padding_mask", "labels", "label_length")}
      if cfg.normalize:
        batch["audio"] = normalize_waveform(batch["audio"], batch["padding_mask"], xp=np)
      batch["rows"] = np.arange(rows) < len(parts)
      batch["id"] = [p["id"] for p in parts]
      batch["transcript"] = [_text(ex[key]) if references else "" for ex in examples]
      yield batch


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_global(batch: dict, sharding) -> dict:
  """Host-local NumPy batch -> global jax.Arrays (batch axis sharded as `sharding` says)."""
  import jax

  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()
          if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
