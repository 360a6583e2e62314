"""The offline tokenizer: features -> k-means -> label stores -> quality report; or, for PBERT targets,
a phoneme recognizer's frame labels -> label stores -> quality report.

    python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py            # fit, assign, report
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py fit        # or one step
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py --config.checkpoint=DIR --config.layer=6
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py --config.dataset=audio_dir/NAME
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_pbert.py --config.checkpoint=PHONE_MODEL
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_ctc.py --config.checkpoint=CTC_MODEL --config.layer=L

Outputs in `config.workdir`: kmeans.npz/.json (centroids with provenance), labels/<split>/ (label
stores the data pipeline joins), report_<split>.json/.png (the code distribution: cluster histogram,
entropy, perplexity, unused clusters, largest cluster, label/audio length agreement; plus PNMI and
purities against the corpus' phone alignment when it has one, as the embedded eSpeak corpus does).

Datasets are read from the one data dir (`wavlm_jax.data.paths.data_dir`: config.data_dir, else
$WAVLM_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets). Splits: the fit split must exist;
assign splits the dataset lacks are skipped (a folder dataset has only "train" unless it was prepared
with a validation fraction), and the report falls back to the first assigned split that exists.

Multi-host (`jax.distributed`, as the trainer: config.distributed or JAX_COORDINATOR_ADDRESS / SLURM):
every host featurizes its share of the utterances on its own devices, k-means reduces the per-cluster
sums over all hosts, every host labels its share into a part store, and host 0 merges the parts.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import numpy as np
from tqdm import tqdm

from wavlm_jax import audio, storage
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.data import mixture as mixture_lib
from wavlm_jax.data import paths, pipeline
from wavlm_jax.data.config import data_config
from wavlm_jax.targets import features as features_lib
from wavlm_jax.targets import kmeans as kmeans_lib
from wavlm_jax.targets import quality as quality_lib

STEPS = ("fit", "assign", "report")


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def _share(indices):
  """This host's share of a list of utterance indices (all of them on one host)."""
  return list(indices)[jax.process_index()::jax.process_count()]


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


class Featurizer:
  """Features of a list of waveforms per the config: MFCC at 100 Hz or layer outputs at 50 Hz."""

  def __init__(self, cfg):
    self.kind = cfg.feature
    if self.kind == "mfcc":
      self.rate, self.hop = features_lib.MFCC_RATE, 160
      self._fn = features_lib.mfcc_batch
      self.provenance = {"feature": "mfcc", "dims": 39}
    elif self.kind == "hidden":
      if not cfg.checkpoint:
        raise ValueError("config.checkpoint: a model directory is required for hidden-unit features")
      self.rate, self.hop = features_lib.HIDDEN_RATE, 320
      self._fn = features_lib.HiddenFeatures(cfg.checkpoint, cfg.layer, batch_size=cfg.batch_size)
      self.provenance = {"feature": "hidden", "checkpoint": str(cfg.checkpoint), "layer": cfg.layer}
    else:
      raise ValueError(f"config.feature: {cfg.feature!r} is not 'mfcc', 'hidden' or 'pbert'")

  def __call__(self, waveforms):
    return self._fn(waveforms)


class KMeansLabeler:
  """Unit labels: the nearest k-means centroid of each feature frame."""

  def __init__(self, km: kmeans_lib.KMeans, featurize: Featurizer, source: str):
    self.km, self.featurize = km, featurize
    self.rate, self.num_classes = featurize.rate, km.k
    self.provenance = {**km.provenance, "kmeans": source}

  def __call__(self, waveforms) -> list[np.ndarray]:
    feats = self.featurize(waveforms)
    split_at = np.cumsum([len(f) for f in feats])[:-1]
    return np.split(self.km.assign(np.concatenate(feats)), split_at)


class PhoneLabeler:
  """PBERT targets (Wang et al. 2022): one phoneme per frame from a phoneme recognizer trained on the
  labelled subset only. Each utterance is decoded greedily with the recognizer and the decoded sequence
  aligned to the frames; for a greedy decode the forced alignment against the recognizer's own
  posteriors is the frame-wise argmax path itself (`decoding.align.greedy_frame_labels`), whose blank
  frames are then filled by the alignment. Only audio is read: the utterance's transcript, phonemes and
  alignment are never looked at. Labels are the recognizer's vocabulary ids (`ctc_vocab.json`; the
  blank id only for an utterance decoded as empty), at 50 Hz, or 100 Hz by repeating each frame. With
  `config.lm` (a phone n-gram) each utterance is decoded by beam search with it instead, and its phonemes
  are force-aligned to the posteriors by Viterbi (`decoding.align.frame_labels`)."""

  def __init__(self, cfg):
    from wavlm_jax.data.vocab import Vocabulary

    if not cfg.checkpoint:
      raise ValueError("config.checkpoint: a fine-tuned CTC model directory (with ctc_vocab.json) is required "
                       "for PBERT labels")
    self.vocab = Vocabulary.load(cfg.checkpoint)
    if cfg.label_rate not in (50, 100):
      raise ValueError(f"config.label_rate: {cfg.label_rate} is not 50 or 100")
    self.repeat = {50: 1, 100: 2}[int(cfg.label_rate)]
    self.rate, self.num_classes = float(cfg.label_rate), len(self.vocab)
    self._posteriors = features_lib.HiddenFeatures(cfg.checkpoint, None, batch_size=cfg.batch_size)
    if self._posteriors.dim != len(self.vocab):
      raise ValueError(f"{cfg.checkpoint}: the CTC head has {self._posteriors.dim} outputs but ctc_vocab.json "
                       f"{len(self.vocab)} tokens")
    self._beam = None
    decoder = "greedy"
    if cfg.get("lm"):  # a phone n-gram: beam search, then the forced alignment of its phonemes
      from wavlm_jax.decoding.beam import BeamDecoder

      if self.vocab.kind != "phonemes":
        raise ValueError(f"config.lm: a phone n-gram needs a phoneme recognizer; {cfg.checkpoint} spells "
                         f"{self.vocab.kind} (PBERT with letters: leave config.lm empty)")
      self._beam = BeamDecoder(self.vocab, lm_path=cfg.lm, lm_weight=cfg.lm_weight, beam_size=cfg.beam_size)
      decoder = {"beam": {"lm": str(cfg.lm), "lm_weight": cfg.lm_weight, "beam_size": cfg.beam_size}}
    self.provenance = {"feature": "pbert", "checkpoint": str(cfg.checkpoint), "vocabulary": self.vocab.kind,
                       "tokens": list(self.vocab.tokens), "decoder": decoder, "label_rate": self.rate}

  def __call__(self, waveforms) -> list[np.ndarray]:
    from wavlm_jax.decoding import align

    out = []
    for log_probs in self._posteriors(waveforms):
      if self._beam is None:
        _, labels = align.greedy_frame_labels(log_probs, self.vocab.blank)
      else:
        text = self._beam.decode(log_probs[None], [len(log_probs)])[0]
        labels = align.frame_labels(log_probs, self.vocab.encode(text), self.vocab.blank)
      out.append(np.repeat(labels, self.repeat).astype(np.int32))
    return out


def _labeler(cfg, workdir):
  """What assigns the labels: PBERT's phone labeler, or k-means over the configured features."""
  if cfg.feature == "pbert":
    return PhoneLabeler(cfg)
  km = kmeans_lib.KMeans.load(workdir / "kmeans")
  featurize = Featurizer(cfg)
  if km.provenance.get("feature") != featurize.provenance["feature"]:
    raise ValueError(f"{workdir / 'kmeans.json'} was fitted on {km.provenance.get('feature')!r} features, "
                     f"the config asks for {featurize.kind!r}")
  return KMeansLabeler(km, featurize, str(workdir / "kmeans"))


class MissingSplit(ValueError):
  """A split the run needs is not in the prepared dataset."""


def _data_dir(cfg) -> str:
  """The data dir every dataset read of this run uses (the one rule, `wavlm_jax.data.paths`)."""
  return paths.data_dir(cfg.data_dir)


def _source(cfg, split):
  c = data_config(dataset=cfg.dataset, data_dir=_data_dir(cfg), split=split, prepare=cfg.prepare)
  return pipeline.open_source(c)


def _builder(cfg):
  """The TFDS builder of cfg.dataset in the data dir (building the embedded corpus first if the config
  asks, as opening a source would), or None where TFDS knows no such dataset there."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders  # registers our builders with TFDS

  data_dir = _data_dir(cfg)
  if cfg.prepare and cfg.dataset.startswith("espeak_speech"):
    return builders.prepare(cfg.dataset, data_dir)
  try:
    return tfds.builder(cfg.dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:  # an unknown name
    return None
  except ValueError as e:  # a folder dataset's config that was never prepared here; anything else is real
    if "BuilderConfig" in str(e) and "not found" in str(e):
      return None
    raise


def available_splits(cfg) -> list[str]:
  """The splits of cfg.dataset prepared in the data dir (none if it is not prepared there)."""
  builder = _builder(cfg)
  if builder is None:
    return []
  return list(builder.info.splits.keys())


def _missing(cfg, what: str, split: str, available: list[str]) -> MissingSplit:
  has = f"it has {sorted(available)}" if available else "no split of it is prepared there"
  return MissingSplit(f"{what} split {split!r} of dataset {cfg.dataset!r} is not in data dir {_data_dir(cfg)} "
                      f"({has}); set config.{what}_split, or prepare the split (e.g. `python -m wavlm_jax.data.prepare "
                      "KIND FOLDER --name NAME --validation-fraction 0.01` makes a validation split)")


def _assign_splits(cfg, available: list[str]) -> list[str]:
  """The configured assign splits the dataset has, logging the ones it lacks (skipped, not an error)."""
  for split in cfg.assign_splits:
    if split not in available:
      _log(f"skipping assign split {split!r}: {cfg.dataset} in {_data_dir(cfg)} has only {sorted(available)}")
  return [s for s in cfg.assign_splits if s in available]


def _report_split(cfg, available: list[str]) -> str:
  """The report split, else the first assigned split that exists (logged)."""
  if cfg.report_split in available:
    return cfg.report_split
  for split in cfg.assign_splits:
    if split in available:
      _log(f"report split {cfg.report_split!r} is not in {cfg.dataset} (it has {sorted(available)}): reporting "
           f"on {split!r} instead")
      return split
  raise _missing(cfg, "report", cfg.report_split, available)


def _phone_inventory(cfg) -> list[str] | None:
  """The phone names of the dataset's frame-level phone alignment, or None where it has none."""
  builder = _builder(cfg)
  if builder is None:
    return None
  metadata = builder.info.metadata or {}
  if "phone_inventory" not in metadata or "phone_alignment" not in builder.info.features:
    return None
  return list(metadata["phone_inventory"])


def _batches(source, indices, cfg, desc):
  """(ids, waveforms) in groups of cfg.batch_size, with a progress bar."""
  utts = features_lib.iterate_utterances(source, indices, cfg.audio_key, cfg.id_key)
  bar = tqdm(total=len(indices), desc=desc, unit="utt", file=sys.stdout, mininterval=2.0,
             disable=jax.process_index() != 0)
  batch = []
  for item in utts:
    batch.append(item)
    if len(batch) == cfg.batch_size:
      yield [u for u, _ in batch], [w for _, w in batch]
      bar.update(len(batch))
      batch = []
  if batch:
    yield [u for u, _ in batch], [w for _, w in batch]
    bar.update(len(batch))
  bar.close()


def _fit_indices(cfg, n: int) -> np.ndarray:
  count = max(1, math.ceil(cfg.fit_fraction * n))
  return np.sort(np.random.default_rng(cfg.seed).permutation(n)[:count])


def _components(cfg) -> list[tuple[mixture_lib.Component, object]]:
  """A mixture tokenizer's components, each with the tokenizer config of its own dataset and split."""
  out = []
  for comp in mixture_lib.components(cfg.mixture):
    c = cfg.copy_and_resolve_references()
    with c.unlocked():
      c.dataset, c.fit_split, c.assign_splits, c.report_split, c.mixture = (
          comp.dataset, comp.split, (comp.split,), comp.split, ())
    out.append((comp, c))
  return out


def _fit_parts(cfg) -> tuple[list, dict]:
  """(source, utterance indices, name) to fit on, and what they are for the provenance. One dataset:
  cfg.fit_fraction of its fit split's utterances. A mixture: utterances holding that fraction of all its
  (usable) audio, drawn at random from each component so that each has its weight's share of the audio
  (by hours when the weights are 0), at most all of a component."""
  if not cfg.get("mixture"):
    available = available_splits(cfg)
    if cfg.fit_split not in available:
      raise _missing(cfg, "fit", cfg.fit_split, available)
    source = _source(cfg, cfg.fit_split)
    return [(source, _fit_indices(cfg, len(source)), cfg.fit_split)], {"dataset": cfg.dataset, "split": cfg.fit_split}
  comps = _components(cfg)
  for comp, c in comps:
    available = available_splits(c)
    if comp.split not in available:
      raise _missing(c, "fit", comp.split, available)
  sources = [_source(c, comp.split) for comp, c in comps]
  data_cfg = data_config(audio_key=cfg.audio_key, id_key=cfg.id_key)
  lengths = [pipeline.length_index(source, data_cfg) for source in sources]
  keep = [mixture_lib.usable(n, comp, 0.0) for n, (comp, _) in zip(lengths, comps)]
  weights = mixture_lib.resolve_weights([comp for comp, _ in comps], lengths, keep)
  # fit_fraction of the mixture's audio, each component's share of it by its weight (in audio, not in
  # utterances: the corpora's utterances differ in length), at most all of a component
  budget = cfg.fit_fraction * sum(float(np.sum(n[k])) for n, k in zip(lengths, keep))
  parts = []
  for k, ((comp, _), source, n, usable, w) in enumerate(zip(comps, sources, lengths, keep, weights)):
    order = np.random.default_rng([cfg.seed, k]).permutation(np.flatnonzero(usable))
    count = max(1, int(np.searchsorted(np.cumsum(n[order]), w * budget)) + 1)
    parts.append((source, np.sort(order[:count]), comp.name))
  described = {"mixture": [[comp.dataset, comp.split, round(w, 6), len(i)]
                           for (comp, _), w, (_, i, _) in zip(comps, weights, parts)]}
  return parts, described


def fit(cfg) -> kmeans_lib.KMeans | None:
  """Fits k-means on cfg.fit_fraction of the fit split's features; writes workdir/kmeans.npz/.json.
  PBERT labels have nothing to fit (the phone recognizer is the model)."""
  workdir = storage.path(cfg.workdir)
  if cfg.feature == "pbert":
    _log("fit: nothing to fit for PBERT labels (they come from the phone recognizer in config.checkpoint)")
    return None
  featurize = Featurizer(cfg)
  parts, described = _fit_parts(cfg)
  provenance = {**featurize.provenance, **described, "fraction": cfg.fit_fraction,
                "utterances": sum(len(i) for _, i, _ in parts), "label_rate": featurize.rate}

  def waveforms():
    for source, all_indices, name in parts:
      for _, waves in _batches(source, _share(all_indices), cfg, f"features ({name})"):
        yield waves

  if cfg.streaming:
    def chunks():
      for waves in waveforms():
        yield np.concatenate(featurize(waves))
    km = kmeans_lib.fit_streaming(chunks, cfg.k, seed=cfg.seed, max_iter=cfg.max_iter, provenance=provenance, log=_log)
  else:
    feats = [f for waves in waveforms() for f in featurize(waves)]
    x = np.concatenate(feats)
    hosts = f" on this host, of {jax.process_count()} hosts" if jax.process_count() > 1 else ""
    _log(f"fitting k-means k={cfg.k} on {len(x):,} frames x {x.shape[1]} dims{hosts}")
    km = kmeans_lib.fit(x, cfg.k, seed=cfg.seed, n_init=cfg.n_init, max_iter=cfg.max_iter, provenance=provenance,
                        log=_log)
  if jax.process_index() == 0:
    km.save(workdir / "kmeans")
  _barrier("kmeans saved")
  _log(f"wrote {workdir / 'kmeans.npz'} (inertia {km.inertia:.6g})")
  return km


def assign(cfg) -> dict[str, os.PathLike]:
  """Labels every utterance of each assign split the dataset has; writes workdir/labels/<split>/. A
  mixture: every utterance of each component, into workdir/labels/<component name>/."""
  workdir = storage.path(cfg.workdir)
  labeler = _labeler(cfg, workdir)
  k = labeler.num_classes
  written = {}
  if cfg.get("mixture"):  # every component's split, into labels/<component name>/
    targets = [(c, comp.split, comp.name) for comp, c in _components(cfg)]
  else:
    targets = [(cfg, split, split) for split in _assign_splits(cfg, available_splits(cfg))]
  for dataset_cfg, split, name in targets:
    source = _source(dataset_cfg, split)
    histogram = np.zeros(k, np.int64)
    out = workdir / "labels" / name
    parts = workdir / "labels" / f".{name}.parts"
    mine = out if jax.process_count() == 1 else parts / f"part-{jax.process_index():05d}"
    meta = dict(label_rate=labeler.rate, num_classes=k, provenance=labeler.provenance)
    with labels_lib.LabelStoreWriter(mine, overwrite=True, **meta) as writer:
      for ids, waves in _batches(source, _share(range(len(source))), cfg, f"assign ({split})"):
        for uid, wave, labels in zip(ids, waves, labeler(waves)):
          labels_lib.check_length(uid, len(labels), len(wave), labeler.rate)
          histogram += np.bincount(labels, minlength=k)
          writer.add(uid, labels)
    if jax.process_count() > 1:
      histogram = kmeans_lib.sum_over_hosts(histogram)[0]
      _barrier(f"labels {name} written")
      if jax.process_index() == 0:
        labels_lib.merge_stores(sorted(parts.glob("part-*")), out, **meta)
        storage.remove_tree(parts)
      _barrier(f"labels {name} merged")
    for warning in quality_lib.degenerate_warnings(histogram, k):
      _log(f"WARNING ({split}): degenerate dictionary: {warning}")
    _log(f"wrote {out} ({histogram.sum():,} frames, {np.sum(histogram > 0)}/{k} clusters used)")
    written[name] = out
  return written


def reference_at_rate(alignment: np.ndarray, rate: float, num_frames: int, ref_hop: int = 160) -> np.ndarray:
  """The reference phone at the centre of each label frame (label frame t covers samples
  [t*hop, t*hop + 400), centre t*hop + 200; reference frame f is centred at f*160 + 80)."""
  hop = audio.SAMPLE_RATE / rate
  idx = np.round((np.arange(num_frames) * hop + 200 - ref_hop / 2) / ref_hop).astype(np.int64)
  return alignment[idx[idx < len(alignment)]]


def report(cfg) -> tuple[quality_lib.CodeDistribution, quality_lib.Quality | None]:
  """Measures the labels of the report split: the code distribution always, and PNMI/purities when the
  dataset has a phone alignment (else the report says they need one). Writes workdir/report_<split>.json/.png.
  A mixture: each component's labels, report_<component name>.json/.png; returns the first's."""
  if cfg.get("mixture"):
    return [_report(c, comp.split, comp.name) for comp, c in _components(cfg)][0]
  return _report(cfg, _report_split(cfg, available_splits(cfg)), None)


def _report(cfg, split: str, name: str | None):
  workdir = storage.path(cfg.workdir)
  name = name or split
  store = labels_lib.LabelStore(workdir / "labels" / name)
  source = _source(cfg, split)
  inventory = _phone_inventory(cfg)
  codes = quality_lib.CodeAccumulator(store.num_classes, store.label_rate)
  acc = quality_lib.QualityAccumulator(len(inventory), store.num_classes) if inventory is not None else None
  for i in tqdm(range(len(source)), desc=f"report ({split})", unit="utt", file=sys.stdout, mininterval=2.0):
    ex = source[i]
    uid = labels_lib.utterance_id(ex[cfg.id_key])
    hyp = store[uid]
    codes.add(hyp, len(ex[cfg.audio_key]), uid=f"{uid} in {store.directory}")
    if acc is not None:
      acc.add(reference_at_rate(np.asarray(ex["phone_alignment"]), store.label_rate, len(hyp)), hyp)
  dist = codes.result()
  q = acc.result() if acc is not None else None
  note = (f"PNMI, phone purity and cluster purity need a phone alignment; {cfg.dataset} has none "
          "(no phone_inventory metadata / phone_alignment feature): only the code distribution is reported")
  warnings = quality_lib.degenerate_warnings(codes.histogram, store.num_classes)
  title = f"target quality: {cfg.dataset}/{split}, {store.provenance.get('feature')} k={store.num_classes}"
  print(quality_lib.format_table(dist, q, title, note))
  for w in warnings:
    print(f"WARNING: degenerate dictionary: {w}")
  json_path, png_path = quality_lib.save_report(
      workdir / f"report_{name}", dist, q, acc.joint if acc is not None else None, inventory, warnings,
      {"dataset": cfg.dataset, "split": split, "label_store": str(store.directory), "provenance": store.provenance},
      note)
  _log(f"wrote {json_path} and {png_path}")
  return dist, q


def run(cfg, steps=STEPS):
  """Runs the steps (fit, assign, report) on this host; every host of a multi-host run calls it."""
  from wavlm_jax import cli

  if cfg.get("distributed") is not None:
    cli.initialize_distributed(cfg.distributed)
  if jax.process_count() > 1 and cfg.prepare:  # build the corpus once, on host 0, before the others read it
    if jax.process_index() == 0:
      available_splits(cfg)
    _barrier("corpus prepared")
  for step in steps:
    if step == "report" and jax.process_index() != 0:
      continue
    {"fit": fit, "assign": assign, "report": report}[step](cfg)


def main(argv):
  """The command line: optional step names after the flags (default: all)."""
  from absl import flags

  steps = tuple(argv[1:]) or STEPS
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise SystemExit(f"unknown step(s) {unknown}; steps are {STEPS}")
  try:
    run(flags.FLAGS.config, steps)
  except MissingSplit as e:  # a configuration mistake: the message says it all, no traceback
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  from ml_collections import config_flags

  from wavlm_jax import cli

  config_flags.DEFINE_config_file("config", None, "tokenizer config file (configs/tokenize_*.py)", lock_config=True)
  cli.run(main)
