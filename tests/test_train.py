"""The trainer: every sharding preset on 8 devices equals one device, golden PartitionSpecs, ILS heads,
the NaN guard, warm start, exact resume after SIGTERM, and two processes equal one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import multiprocess

from configs import tiny as tiny_recipe
from wavlm_jax import data, train
from wavlm_jax.models import directory, partitioning
from wavlm_jax.training import mesh as mesh_lib
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params as params_lib, wavlm

SPEC = labels_lib.LabelSpec(100.0, 100)  # the phone labels' rate and the tiny run config's classes

REPO = Path(__file__).resolve().parents[1]


def run_config(data_dir, labels, **overrides):
  cfg = tiny_recipe.get_config()
  cfg.data.data_dir, cfg.data.labels = data_dir, labels
  cfg.data.crop_seconds, cfg.data.batch_size, cfg.data.min_seconds = 1.0, 8, 0.5
  cfg.total_steps, cfg.log_every = 6, 1
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def _batch(cfg, mesh):
  it = data.create_iterator(cfg.data, process_index=0, process_count=1)
  host = next(it)
  return data.to_global({k: host[k] for k in train.BATCH_KEYS}, jax.NamedSharding(mesh, jax.P(mesh_lib.BATCH)))


MESHES = {"dp": {"data": 8}, "fsdp": {"data": 2, "fsdp": 4}, "fsdp_tp": {"data": 2, "fsdp": 2, "tensor": 2}}
GOLDEN_TINY = {  # (layers, embed, heads) / (layers, embed, mlp) / (layers, mlp, embed)
    "dp": ((None, None, None), (None, None, None), (None, None, None)),
    "fsdp": ((None, "fsdp", None), (None, "fsdp", None), (None, None, "fsdp")),
    "fsdp_tp": ((None, "fsdp", "tensor"), (None, "fsdp", "tensor"), (None, "tensor", "fsdp")),
}


def _two_steps(cfg, mesh, preset):
  run = train.build(cfg, mesh, mesh_lib.rules_for(preset), SPEC)
  state = run.init()
  batch = _batch(cfg, mesh)
  state, m1 = run.step(state, batch)
  state, m2 = run.step(state, batch)
  return state, float(m1["loss"]), float(m2["loss"])


@pytest.fixture(scope="module")
def one_device_losses(espeak_data_dir, phone_labels):
  cfg = run_config(espeak_data_dir, phone_labels)
  _, ref1, ref2 = _two_steps(cfg, mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]), "dp")
  return ref1, ref2


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_presets_shard_as_declared_and_match_one_device(preset, espeak_data_dir, phone_labels, one_device_losses):
  cfg = run_config(espeak_data_dir, phone_labels, sharding=preset)
  mesh = mesh_lib.make_mesh(MESHES[preset])
  state, loss1, loss2 = _two_steps(cfg, mesh, preset)
  layers = state["params"]["wavlm"]["encoder"]["layers"]
  q = layers["attention"]["q_proj"]["kernel"]
  ff_in = layers["feed_forward"]["intermediate_dense"]["kernel"]
  ff_out = layers["feed_forward"]["output_dense"]["kernel"]
  assert (tuple(q.sharding.spec), tuple(ff_in.sharding.spec), tuple(ff_out.sharding.spec)) == GOLDEN_TINY[preset]
  if preset != "dp":
    assert len({s.data.shape for s in q.addressable_shards}) == 1 and q.addressable_shards[0].data.shape[1] < 64
    mu = state["opt_state"][1][0].mu["wavlm"]["encoder"]["layers"]["attention"]["q_proj"]["kernel"]
    assert mu.sharding.spec == q.sharding.spec  # optimizer state sharded like its parameter
  ref1, ref2 = one_device_losses
  assert abs(loss1 - ref1) < 1e-5 * abs(ref1) and abs(loss2 - ref2) < 1e-4 * abs(ref2)


def test_golden_partition_specs_wavlm_base():
  binder = params_lib.Binder(wavlm.abstract(config_lib.model_card("wavlm_base")))
  mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  golden = {
      "fsdp": {"wavlm/encoder/layers/attention/q_proj/kernel": (None, "fsdp", None),
               "wavlm/encoder/layers/attention/out_proj/kernel": (None, None, "fsdp"),
               "wavlm/encoder/layers/feed_forward/intermediate_dense/kernel": (None, "fsdp", None),
               "wavlm/feature_extractor/conv_layers/1/conv/kernel": (None, None, "fsdp"),
               "wavlm/encoder/pos_conv_embed/weight_v": ("fsdp", None, None),
               "wavlm/encoder/rel_attn_embed": (None, None),
               "pretrain_head/label_embs_concat": (None, None)},
      "fsdp_tp": {"wavlm/encoder/layers/attention/q_proj/kernel": (None, "fsdp", "tensor"),
                  "wavlm/encoder/layers/attention/out_proj/kernel": (None, "tensor", "fsdp"),
                  "wavlm/encoder/layers/feed_forward/intermediate_dense/kernel": (None, "fsdp", "tensor"),
                  "wavlm/encoder/layers/feed_forward/output_dense/bias": (None, "fsdp"),
                  "wavlm/encoder/layers/attention/gru_rel_pos_linear/kernel": (None, None, None),
                  "wavlm/feature_projection/projection/kernel": ("fsdp", None)},
  }
  for preset, expected in golden.items():
    rules = mesh_lib.rules_for(preset)
    for key, spec in expected.items():
      got = partitioning.spec_for(binder.logical_axes[key], binder.shapes[key], mesh, rules)
      assert tuple(got) == spec, (preset, key)
  dp = mesh_lib.rules_for("dp")
  assert all(all(a is None for a in partitioning.spec_for(binder.logical_axes[k], binder.shapes[k], mesh, dp))
             for k in binder.keys)


def test_ils_heads_only_when_configured(espeak_data_dir, phone_labels):
  mesh = mesh_lib.make_mesh({"data": 8})
  cfg = run_config(espeak_data_dir, phone_labels, **{"model.predict_layers": (1, 2), "model.num_layers": 2})
  run = train.build(cfg, mesh, mesh_lib.rules_for("dp"), SPEC)
  state = run.init()
  assert "ils_heads" in state["params"] and "pretrain_head" not in state["params"]
  before = jax.device_get(state["params"]["ils_heads"])
  batch = _batch(cfg, mesh)
  state, m = run.step(state, batch)  # the first step has learning rate 0 (warmup)
  state, m = run.step(state, batch)
  assert {"loss_masked/layer1", "loss_masked/layer2", "acc_masked/layer1"} <= set(m)
  after = jax.device_get(state["params"]["ils_heads"])
  for head in ("0", "1"):
    assert not np.allclose(before[head]["final_proj"]["kernel"], after[head]["final_proj"]["kernel"])
  plain = train.build(run_config(espeak_data_dir, phone_labels), mesh, mesh_lib.rules_for("dp"), SPEC)
  assert "ils_heads" not in plain.abstract_state["params"]


def test_nan_guard_skips_poisoned_batches(espeak_data_dir, phone_labels):
  mesh = mesh_lib.make_mesh({"data": 8})
  cfg = run_config(espeak_data_dir, phone_labels)
  run = train.build(cfg, mesh, mesh_lib.rules_for("dp"), SPEC)
  state = run.init()
  batch = _batch(cfg, mesh)
  poisoned = dict(batch, audio=batch["audio"].at[3, 100].set(np.nan))
  before = jax.device_get(state["params"])
  state, m = run.step(state, poisoned)
  assert int(m["nonfinite"]) == 1 and int(state["skipped"]) == 1 and int(state["bad_streak"]) == 1
  same = jax.device_get(state["params"])
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(same)))
  state, m = run.step(state, batch)
  assert int(m["nonfinite"]) == 0 and int(state["bad_streak"]) == 0 and int(state["step"]) == 2
  assert float(m["learning_rate"]) == 0.0  # the schedule counts applied updates: this was the first
  state, m = run.step(state, batch)
  assert float(m["learning_rate"]) > 0
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(jax.device_get(state["params"]))))


def test_rbg_prng_steps_are_deterministic_and_bad_names_refused(espeak_data_dir, phone_labels):
  # config.prng_impl = "rbg": the step draws its randomness with XLA's
  # RngBitGenerator, and resuming from a copy of a state repeats the next step bit for bit (exact resume:
  # keys come from (seed, step), nothing stateful); an unknown name is refused.
  mesh = mesh_lib.make_mesh({"data": 8})
  cfg = run_config(espeak_data_dir, phone_labels)
  with cfg.unlocked():
    cfg.prng_impl = "rbg"
  batch = _batch(cfg, mesh)
  run = train.build(cfg, mesh, mesh_lib.rules_for("dp"), SPEC)
  assert "rng_bit_generator" in run.step.lower(run.abstract_state, batch).as_text()
  first, _ = run.step(run.init(), batch)
  saved = jax.device_get(first)
  second, metrics = run.step(first, batch)  # donates `first`
  again, metrics_again = run.step(jax.device_put(saved, run.state_sharding), batch)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) == float(metrics_again["loss"])
  for a, b in zip(jax.tree.leaves(jax.device_get(second)), jax.tree.leaves(jax.device_get(again))):
    np.testing.assert_array_equal(a, b)
  with cfg.unlocked():
    cfg.prng_impl = "philox"
  with pytest.raises(ValueError, match="config.prng_impl"):
    train.build(cfg, mesh, mesh_lib.rules_for("dp"), SPEC)


def test_nan_streak_stops_the_run_keeping_the_last_good_checkpoint(espeak_data_dir, phone_labels, tmp_path,
                                                                   monkeypatch):
  real = data.create_iterator

  class Poisoned:
    def __init__(self, it):
      self.it, self.n = it, 0

    def __next__(self):
      batch = next(self.it)
      self.n += 1
      if self.n > 3:
        batch["audio"] = np.full_like(batch["audio"], np.nan)
      return batch

    def __getattr__(self, name):
      return getattr(self.it, name)

  monkeypatch.setattr(data, "create_iterator", lambda *a, **k: Poisoned(real(*a, **k)))
  cfg = run_config(espeak_data_dir, phone_labels, total_steps=20, nan_patience=3,
                   **{"checkpoint.every_steps": 2, "checkpoint.asynchronous": False})
  with pytest.raises(train.NonFiniteError, match="3 non-finite steps in a row.*the last at step 6.*last good checkpoint is step 6"):
    train.train(cfg, str(tmp_path / "run"))


def test_warm_start_from_a_model_directory(espeak_data_dir, phone_labels, tmp_path):
  cfg = run_config(espeak_data_dir, phone_labels)
  source = wavlm.build(config_lib.model_card("tiny", num_label_classes=0, vocab_size=7), seed=42)
  flat = params_lib.get_params(source)
  directory.save_model(tmp_path / "released", flat, source.config)
  mesh = mesh_lib.make_mesh({"data": 8})
  run = train.build(cfg, mesh, mesh_lib.rules_for("dp"), SPEC)
  other = wavlm.build(config_lib.model_card("tiny", conv_dim=(32,) * 7, num_label_classes=0), seed=1)
  directory.save_model(tmp_path / "other", params_lib.get_params(other), other.config)
  with pytest.raises(ValueError, match="conv_layers/0/conv/kernel has shape"):
    train._warm_start(run.init(), run_config(espeak_data_dir, phone_labels, init_from=str(tmp_path / "other")),
                      run.state_sharding)
  cfg = run_config(espeak_data_dir, phone_labels, init_from=str(tmp_path / "released"))
  state = train._warm_start(run.init(), cfg, run.state_sharding)
  got = params_lib.flatten(jax.device_get(state["params"]))
  np.testing.assert_array_equal(got["wavlm/encoder/layers/attention/q_proj/kernel"],
                                flat["wavlm/encoder/layers/attention/q_proj/kernel"])
  assert "pretrain_head/final_proj/kernel" in got  # the head the released model lacks starts fresh


def _train_cmd(workdir, data_dir, labels, *extra):
  return [sys.executable, "-m", "wavlm_jax.train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir", str(workdir),
          f"--config.data.data_dir={data_dir}", f"--config.data.labels={labels}", "--config.data.crop_seconds=1.0",
          "--config.data.min_seconds=0.5", "--config.log_every=1", "--config.total_steps=8",
          "--config.checkpoint.every_steps=100", *extra]


def _final(workdir):
  flat = directory.load_flat_params(Path(workdir) / "model")
  losses = {}
  for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    losses[row["step"]] = row["loss"]
  return flat, losses


@pytest.mark.slow
def test_exact_resume_after_sigterm(espeak_data_dir, phone_labels, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  subprocess.run(_train_cmd(tmp_path / "a", espeak_data_dir, phone_labels), check=True, env=env, cwd=REPO,
                 capture_output=True)
  b = tmp_path / "b"
  proc = subprocess.Popen(_train_cmd(b, espeak_data_dir, phone_labels), env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline:
    metrics = b / "metrics.jsonl"
    if metrics.is_file() and any(json.loads(l)["step"] >= 2 for l in metrics.read_text().splitlines() if l):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  summary = json.loads((b / "summary.json").read_text())
  assert summary["status"] == "preempted" and 2 <= summary["step"] < 8, summary
  assert not (b / "model").exists()
  subprocess.run(_train_cmd(b, espeak_data_dir, phone_labels), check=True, env=env, cwd=REPO, capture_output=True)
  assert json.loads((b / "summary.json").read_text())["status"] == "finished"
  params_a, losses_a = _final(tmp_path / "a")
  params_b, losses_b = _final(b)
  for k in params_a:
    np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)
  assert set(losses_a) == set(range(1, 9)) and set(losses_b) == set(range(1, 9))
  assert losses_a == losses_b


@pytest.mark.slow
def test_two_processes_match_one(espeak_data_dir, phone_labels, tmp_path):
  common = ["--config.data.mix_prob=0.0", "--config.data.min_seconds=0.0", "--config.total_steps=4"]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  subprocess.run(_train_cmd(tmp_path / "one", espeak_data_dir, phone_labels, *common), check=True, env=env,
                 cwd=REPO, capture_output=True)
  outs = multiprocess.run(_train_cmd(tmp_path / "two", espeak_data_dir, phone_labels, *common))
  assert "over 8 devices (2 processes)" in outs[0]
  params_1, losses_1 = _final(tmp_path / "one")
  params_2, losses_2 = _final(tmp_path / "two")
  # Reductions run in another order over two processes; Adam's m / sqrt(v) magnifies that rounding for
  # weights whose gradients are near zero, so an absolute 1e-5 (under 1 % of one step at lr 2e-3) is allowed.
  for k in params_1:
    np.testing.assert_allclose(params_1[k], params_2[k], rtol=1e-4, atol=1e-5, err_msg=k)
  for step in losses_1:
    assert abs(losses_1[step] - losses_2[step]) < 1e-4 * abs(losses_1[step])
