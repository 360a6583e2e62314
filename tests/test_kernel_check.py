"""The fused attention kernels checked before "auto" trusts them: the three outcomes (the kernels agree, they
fail to compile or run, they disagree), the fallback to xla that the trainer's build takes and records,
and "pallas" forced without a check. On this CPU host the kernels run interpreted; failures are injected."""

import jax
import pytest

from configs import tiny as tiny_recipe
from wavlm_jax import train
from wavlm_jax.data.labels import LabelSpec
from wavlm_jax.models import config as config_lib, kernel_check
from wavlm_jax.training import mesh as mesh_lib

SHAPE = kernel_check._Shape(heads=2, head_dim=16, dtype="float32", block=16, gated=True, has_bias=True,
                            num_buckets=32, max_distance=64)


def _fails(*args, **kwargs):
  raise RuntimeError("PassManager::run failed: out of shared memory")


def _off(q, k, v, gate, table, valid, shape, length):  # a kernel 1 % off
  return kernel_check._pallas(q, k, v, gate, table, valid, shape, length) * 1.01


def test_the_three_outcomes():
  agree = kernel_check.check(SHAPE)
  assert agree.impl == "pallas" and agree.checked and agree.max_error < 1e-5 and not agree.reason
  broken = kernel_check.check(SHAPE, _fails)
  assert broken.impl == "xla" and "failed" in broken.reason and "out of shared memory" in broken.reason
  wrong = kernel_check.check(SHAPE, _off)
  assert wrong.impl == "xla" and "disagree" in wrong.reason and 0.009 < wrong.max_error < 0.011
  assert wrong.summary()["attention_fallback"] == wrong.reason and wrong.metrics() == {"attention/fused": 0.0}


@pytest.fixture
def auto_is_pallas_here(monkeypatch):
  """This CPU host treated as an accelerator whose "auto" is the kernels (interpreted), with the check's
  cache cleared before and after."""
  monkeypatch.setattr(config_lib, "attention_impl_for", lambda platform: "pallas")
  kernel_check.check.cache_clear()
  yield monkeypatch
  kernel_check.check.cache_clear()


def test_a_failing_kernel_makes_the_run_use_xla_and_says_so(auto_is_pallas_here):
  auto_is_pallas_here.setattr(kernel_check, "_pallas", _fails)
  cfg = tiny_recipe.get_config()
  with cfg.unlocked():
    cfg.model.attention_block = 16
  mesh = mesh_lib.make_mesh(cfg.mesh)
  run = train.build(cfg, mesh, mesh_lib.rules_for(cfg.sharding), LabelSpec(100.0, 100))
  assert run.attention.impl == "xla" and run.attention.checked and "out of shared memory" in run.attention.reason
  assert run.attention.summary()["attention_impl"] == "xla"
  # attention_impl="pallas" forces the kernels: no check, no fallback
  forced = cfg.model.copy_and_resolve_references()
  with forced.unlocked():
    forced.attention_impl = "pallas"
  resolved, outcome = kernel_check.resolve(forced, jax.devices()[0].platform)
  assert resolved.attention_impl == "pallas" and not outcome.checked


def test_kernels_that_agree_are_kept(auto_is_pallas_here):
  cfg = tiny_recipe.get_config().model
  with cfg.unlocked():
    cfg.attention_block = 16
  resolved, outcome = kernel_check.resolve(cfg, jax.devices()[0].platform)
  assert resolved.attention_impl == "pallas" and outcome.impl == "pallas" and outcome.checked
