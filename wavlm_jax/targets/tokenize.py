"""The offline tokenizer: features -> k-means -> label stores -> quality report.

    python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py            # fit, assign, report
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py fit        # or one step
    python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py --config.checkpoint=DIR --config.layer=6

Outputs in `config.workdir`: kmeans.npz/.json (centroids with provenance), labels/<split>/ (label
stores the data pipeline joins), report_<split>.json/.png (target quality against the corpus' phone
alignment, when it has one).

Multi-host (`jax.distributed`, as the trainer: config.distributed or JAX_COORDINATOR_ADDRESS / SLURM):
every host featurizes its share of the utterances on its own devices, k-means reduces the per-cluster
sums over all hosts, every host labels its share into a part store, and host 0 merges the parts.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from wavlm_jax.data import labels as labels_lib
from wavlm_jax.data import pipeline
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
      raise ValueError(f"config.feature: {cfg.feature!r} is not 'mfcc' or 'hidden'")

  def __call__(self, waveforms):
    return self._fn(waveforms)


def _source(cfg, split):
  c = pipeline.data_config(dataset=cfg.dataset, data_dir=cfg.data_dir, split=split, prepare=cfg.prepare)
  return pipeline.open_source(c)


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


def fit(cfg) -> kmeans_lib.KMeans:
  workdir = Path(cfg.workdir)
  featurize = Featurizer(cfg)
  source = _source(cfg, cfg.fit_split)
  all_indices = _fit_indices(cfg, len(source))
  indices = _share(all_indices)
  provenance = {**featurize.provenance, "dataset": cfg.dataset, "split": cfg.fit_split,
                "fraction": cfg.fit_fraction, "utterances": len(all_indices), "label_rate": featurize.rate}
  if cfg.streaming:
    def chunks():
      for _, waves in _batches(source, indices, cfg, "features"):
        yield np.concatenate(featurize(waves))
    km = kmeans_lib.fit_streaming(chunks, cfg.k, seed=cfg.seed, max_iter=cfg.max_iter, provenance=provenance, log=_log)
  else:
    feats = [f for _, waves in _batches(source, indices, cfg, f"features ({cfg.fit_split})") for f in featurize(waves)]
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


def assign(cfg) -> dict[str, Path]:
  workdir = Path(cfg.workdir)
  km = kmeans_lib.KMeans.load(workdir / "kmeans")
  featurize = Featurizer(cfg)
  if km.provenance.get("feature") != featurize.provenance["feature"]:
    raise ValueError(f"{workdir / 'kmeans.json'} was fitted on {km.provenance.get('feature')!r} features, "
                     f"the config asks for {featurize.kind!r}")
  written = {}
  for split in cfg.assign_splits:
    source = _source(cfg, split)
    histogram = np.zeros(km.k, np.int64)
    out = workdir / "labels" / split
    parts = workdir / "labels" / f".{split}.parts"
    mine = out if jax.process_count() == 1 else parts / f"part-{jax.process_index():05d}"
    meta = dict(label_rate=featurize.rate, num_classes=km.k,
                provenance={**km.provenance, "kmeans": str(workdir / "kmeans")})
    with labels_lib.LabelStoreWriter(mine, overwrite=True, **meta) as writer:
      for ids, waves in _batches(source, _share(range(len(source))), cfg, f"assign ({split})"):
        feats = featurize(waves)
        split_at = np.cumsum([len(f) for f in feats])[:-1]
        for uid, wave, labels in zip(ids, waves, np.split(km.assign(np.concatenate(feats)), split_at)):
          labels_lib.check_length(uid, len(labels), len(wave), featurize.rate)
          histogram += np.bincount(labels, minlength=km.k)
          writer.add(uid, labels)
    if jax.process_count() > 1:
      histogram = kmeans_lib.sum_over_hosts(histogram)[0]
      _barrier(f"labels {split} written")
      if jax.process_index() == 0:
        labels_lib.merge_stores(sorted(parts.glob("part-*")), out, **meta)
        shutil.rmtree(parts)
      _barrier(f"labels {split} merged")
    for warning in quality_lib.degenerate_warnings(histogram, km.k):
      _log(f"WARNING ({split}): degenerate dictionary: {warning}")
    _log(f"wrote {out} ({histogram.sum():,} frames, {np.sum(histogram > 0)}/{km.k} clusters used)")
    written[split] = out
  return written


def reference_at_rate(alignment: np.ndarray, rate: float, num_frames: int, ref_hop: int = 160) -> np.ndarray:
  """The reference phone at the centre of each label frame (label frame t covers samples
  [t*hop, t*hop + 400), centre t*hop + 200; reference frame f is centred at f*160 + 80)."""
  hop = 16000 / rate
  idx = np.round((np.arange(num_frames) * hop + 200 - ref_hop / 2) / ref_hop).astype(np.int64)
  return alignment[idx[idx < len(alignment)]]


def report(cfg) -> quality_lib.Quality:
  workdir = Path(cfg.workdir)
  split = cfg.report_split
  store = labels_lib.LabelStore(workdir / "labels" / split)
  source = _source(cfg, split)
  import tensorflow_datasets as tfds

  builder = tfds.builder(cfg.dataset, data_dir=cfg.data_dir or None)
  inventory = builder.info.metadata.get("phone_inventory") if builder.info.metadata else None
  if inventory is None:
    raise ValueError(f"{cfg.dataset} has no phone alignment to score against (phone_inventory metadata)")
  acc = quality_lib.QualityAccumulator(len(inventory), store.num_classes)
  for i in tqdm(range(len(source)), desc=f"report ({split})", unit="utt", file=sys.stdout, mininterval=2.0):
    ex = source[i]
    uid = ex[cfg.id_key].decode()
    hyp = store[uid]
    acc.add(reference_at_rate(np.asarray(ex["phone_alignment"]), store.label_rate, len(hyp)), hyp)
  q = acc.result()
  warnings = quality_lib.degenerate_warnings(acc.joint.sum(axis=0), store.num_classes)
  title = f"target quality: {cfg.dataset}/{split}, {store.provenance.get('feature')} k={store.num_classes}"
  print(quality_lib.format_table(q, title))
  for w in warnings:
    print(f"WARNING: degenerate dictionary: {w}")
  json_path, png_path = quality_lib.save_report(workdir / f"report_{split}", q, acc.joint, inventory, warnings,
                                                {"label_store": str(store.directory), "provenance": store.provenance})
  _log(f"wrote {json_path} and {png_path}")
  return q


def run(cfg, steps=STEPS):
  from wavlm_jax import sharding

  if cfg.get("distributed") is not None:
    sharding.initialize_distributed(cfg.distributed)
  if jax.process_count() > 1 and cfg.prepare:  # build the corpus once, on host 0, before the others read it
    if jax.process_index() == 0:
      for split in {cfg.fit_split, *cfg.assign_splits}:
        _source(cfg, split)
    _barrier("corpus prepared")
  for step in steps:
    if step == "report" and jax.process_index() != 0:
      continue
    {"fit": fit, "assign": assign, "report": report}[step](cfg)


def main(argv):
  from absl import flags

  steps = tuple(argv[1:]) or STEPS
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise SystemExit(f"unknown step(s) {unknown}; steps are {STEPS}")
  run(flags.FLAGS.config, steps)


if __name__ == "__main__":
  from ml_collections import config_flags

  from wavlm_jax import cli

  config_flags.DEFINE_config_file("config", None, "tokenizer config file (configs/tokenize_*.py)", lock_config=True)
  cli.run(main)
