"""Weighted mixtures of corpora (data.mixture): Grain's MapDataset.mix over each component's duration
batches, shared bucket shapes, labels per component, exact resume, the multi-host guarantee, refusals
naming the field, and the runlocal mixture recipe trained, stopped and resumed exactly, its shares in
the metrics."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from wavlm_jax import data
from wavlm_jax.data import labels as labels_lib, mixture as mixture_lib, pipeline

# Three disjoint parts of the embedded corpus stand for three corpora.
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def time_labels(espeak_data_dir, tmp_path_factory):
  """One 50 Hz label store per component whose label at frame f is f: crops can be checked exactly."""
  stores = {}
  for split in SPLITS:
    path = tmp_path_factory.mktemp("labels") / split
    with labels_lib.LabelStoreWriter(path, label_rate=50, num_classes=100_000) as writer:
      src = tfds.data_source("espeak_speech/tiny", split=split, data_dir=espeak_data_dir)
      for i in range(len(src)):
        ex = src[i]
        writer.add(ex["id"].decode(), np.arange(int(round(len(ex["audio"]) * 50 / 16000))))
    stores[split] = str(path)
  return stores


def _cfg(data_dir, labels, weights=(0.6, 0.3, 0.1), **kw):
  mixture = tuple(("espeak_speech/tiny", s, w, {"labels": labels[s]}) for s, w in zip(SPLITS, weights))
  return data.data_config(**{"data_dir": data_dir, "batch_size": 4, "num_threads": 2, "crop_seconds": 2.0,
                             "min_seconds": 1.0, "mixture": mixture, **kw})


def _it(cfg, **kw):
  return pipeline.HostIterator(cfg, **{"process_index": 0, "process_count": 1, **kw})


def test_batches_follow_the_weights_and_share_shapes(espeak_data_dir, time_labels):
  it = _it(_cfg(espeak_data_dir, time_labels))
  plan = it.plan
  assert [p.shapes() for p in plan.plans] == [it.shapes()] * 3  # one set of shapes for the whole mixture
  counts, seconds = np.zeros(3), np.zeros(3)
  prefixes = [f"tiny-{s}-" for s in SPLITS]
  for _ in range(100):
    batch = next(it)
    k = int(batch["component"][0])
    assert (batch["component"] == k).all() and not batch["padding_mask"].any()
    assert all(uid.startswith(prefixes[k]) for uid in batch["id"])  # each batch is one component's
    # labels joined from the component's own store: frame f of a crop starting at s carries s/320 + f
    starts = batch["labels"][:, 0]
    np.testing.assert_array_equal(batch["labels"], starts[:, None] + np.arange(batch["labels"].shape[1]))
    counts[k] += 1
    seconds[k] += batch["audio"].size / 16000
  np.testing.assert_array_equal(counts, [60, 30, 10])  # Grain's exact interleaving of the weights
  np.testing.assert_allclose(seconds / seconds.sum(), [0.6, 0.3, 0.1], atol=0.02)


def test_exact_resume_and_multi_host_rows(espeak_data_dir, time_labels):
  cfg = _cfg(espeak_data_dir, time_labels)
  it = _it(cfg)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed = _it(cfg)
  resumed.set_state(json.loads(json.dumps(state)))
  for want in expected:
    got = next(resumed)
    for key in ("audio", "labels", "component"):
      np.testing.assert_array_equal(got[key], want[key])
  # Two hosts read the rows of the same global batches.
  hosts = [_it(cfg, process_index=p, process_count=2) for p in (0, 1)]
  single = _it(cfg)
  for _ in range(6):
    whole, halves = next(single), [next(h) for h in hosts]
    for key in ("audio", "labels", "component"):
      np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_changed_weights_on_resume_are_refused_naming_the_field(espeak_data_dir, time_labels):
  state = _it(_cfg(espeak_data_dir, time_labels)).get_state()
  other = _it(_cfg(espeak_data_dir, time_labels, weights=(0.5, 0.3, 0.2)))
  with pytest.raises(ValueError, match="data.mixture"):
    other.set_state(state)


def test_by_hours_limits_and_errors(espeak_data_dir, time_labels):
  src = {s: tfds.data_source("espeak_speech/tiny", split=s, data_dir=espeak_data_dir) for s in SPLITS}
  hours = np.array([sum(len(src[s][i]["audio"]) for i in range(len(src[s]))) for s in SPLITS], float)
  it = _it(_cfg(espeak_data_dir, time_labels, weights=(0, 0, 0)))
  np.testing.assert_allclose(it.plan.weights, hours / hours.sum(), rtol=1e-9)
  # A component's max_seconds leaves its longer utterances out (counted), min_seconds its shorter ones.
  cfg = _cfg(espeak_data_dir, time_labels)
  with cfg.unlocked():
    cfg.mixture = (cfg.mixture[0][:3] + ({"labels": time_labels["train"], "max_seconds": 4.0, "min_seconds": 2.5},),
                   *cfg.mixture[1:])
  it = _it(cfg)
  lengths = np.array([len(src["train"][i]["audio"]) for i in range(len(src["train"]))])
  kept = set(np.flatnonzero((lengths >= 40000) & (lengths <= 64000)))
  used = {int(r) for i in range(it.plan.plans[0].batches_per_epoch) for r in it.plan.plans[0].batch(i)[1]}
  assert used and used <= kept and len(kept) - len(used) < 8  # the rest wait for the next epoch's batches
  for bad, message in [((("espeak_speech/tiny", "train"),), r"data.mixture\[0\]"),
                       ((("espeak_speech/tiny", "train", 1.0, {"max_secs": 2}),), "unknown option"),
                       ((("espeak_speech/tiny", "train", 1.0), ("espeak_speech/tiny", "test", 0.0)), "every component"),
                       ((("espeak_speech/tiny", "train", 1.0), ("espeak_speech/tiny", "train", 2.0)), "twice")]:
    with pytest.raises(ValueError, match=message):
      mixture_lib.components(bad)
  with pytest.raises(ValueError, match="duration batching"):
    _it(_cfg(espeak_data_dir, time_labels, batching="fixed"))


@pytest.mark.slow
def test_runlocal_mixture_recipe_trains_stops_and_resumes_exactly(espeak_data_dir, tmp_path):
  """The chain of configs/wavlm_base_plus.py:runlocal: the tokenizer over three embedded corpora (k-means
  fitted on all of them by weight, each labelled), then pretraining on their mixture; stopped at step 4
  and resumed, it ends as the uninterrupted run does, and its metrics carry each corpus' share."""
  from configs import common, wavlm_base_plus
  from wavlm_jax import train
  from wavlm_jax.models import directory

  def config(total_steps, tokenizer_dir):
    c = wavlm_base_plus.get_config("runlocal")
    c.data.data_dir = c.tokenizer.data_dir = espeak_data_dir
    c.tokenizer.workdir = str(tokenizer_dir)
    c.total_steps, c.log_every, c.checkpoint.every_steps = total_steps, 1, 100
    c.model.num_layers = 1
    return c

  tokens = tmp_path / "tokenizer"
  straight = train.train(config(8, tokens), str(tmp_path / "a"))
  assert straight["status"] == "finished"
  for comp in mixture_lib.components(common.LOCAL_MIXTURE):  # labelled per component, one k-means
    store = labels_lib.LabelStore(tokens / "labels" / comp.name)
    assert store.num_classes == 100 and store.provenance["mixture"][0][0] == "espeak_speech/tiny"
  train.train(config(4, tokens), str(tmp_path / "b"))
  train.train(config(8, tokens), str(tmp_path / "b"))

  def metrics(workdir):
    return {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}

  a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
  assert [a[s]["loss"] for s in range(1, 9)] == [b[s]["loss"] for s in range(1, 9)]
  flat_a = directory.load_flat_params(tmp_path / "a" / "model")
  flat_b = directory.load_flat_params(tmp_path / "b" / "model")
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)
  shares = {k: v for k, v in a[8].items() if k.startswith("data/share/")}
  assert set(shares) == {"data/share/espeak_speech_tiny", "data/share/espeak_speech_tiny_gb",
                         "data/share/espeak_speech_tiny_fr"}
  assert abs(sum(shares.values()) - 1) < 1e-6 and all(v > 0 for v in shares.values())
  assert Path(tmp_path / "a" / "tensorboard").is_dir()
