"""The fused attention kernels checked before a run trusts them (docs/model.md#fused-attention).

`attention_impl="auto"` picks the Pallas kernels on GPU and TPU. They are tested interpreted and lowered
on a CPU host, but a user's accelerator, driver or Triton/Mosaic version may still fail to compile them
or compute something else, and a wrong kernel would train wrongly without an error. So the first time a
process resolves "auto" for a platform whose devices it has, it compiles the kernels for the model's
heads, head size, dtype, tile and gating on a small padded batch and compares the output and the
gradients (q, k, v, gate, bias table) with the XLA path: a failure to compile or run, a non-finite value
or a disagreement beyond the dtype's tolerance makes the run use "xla", with a warning naming what
happened, and `Outcome` records which path runs (the trainers put it in summary.json and the metrics).
`attention_impl="pallas"` is never checked: it forces the kernels and fails loudly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from wavlm_jax.models import config as config_lib
from wavlm_jax.models import fused_attention

# Largest |fused - xla| allowed, relative to the largest |xla| of the same array.
TOLERANCE = {"float32": 2e-4, "bfloat16": 3e-2, "float16": 1e-2}


@dataclasses.dataclass(frozen=True)
class Outcome:
  impl: str  # the path the run takes: "pallas" or "xla" (or the configured one, unchecked)
  checked: bool  # whether the kernels were run and compared here
  reason: str = ""  # why the run falls back to "xla" ("" when it does not)
  max_error: float = 0.0  # the largest relative difference found

  def metrics(self) -> dict:
    return {"attention/fused": float(self.impl == "pallas")}

  def summary(self) -> dict:
    out = {"attention_impl": self.impl, "attention_checked": self.checked, "attention_max_error": self.max_error}
    return out | ({"attention_fallback": self.reason} if self.reason else {})


def resolve(model_cfg, platform: str):
  """`model_cfg` with its platform choices resolved (`config.for_platform`), "auto" attention checked on
  this process's devices first (`check`), and the Outcome."""
  resolved = config_lib.for_platform(model_cfg, platform)
  if model_cfg.attention_impl != "auto" or resolved.attention_impl != "pallas":
    return resolved, Outcome(resolved.attention_impl, checked=False)
  if jax.devices()[0].platform != platform:  # an ahead-of-time compile for devices this host lacks
    return resolved, Outcome("pallas", checked=False)
  outcome = check(_Shape.of(resolved))
  if jax.process_count() > 1:  # every host must run the same program: one host's failure is everyone's
    from jax.experimental import multihost_utils

    ok = multihost_utils.process_allgather(np.array([outcome.impl == "pallas"]))
    if outcome.impl == "pallas" and not np.all(ok):
      outcome = Outcome("xla", checked=True, reason="the fused attention kernels failed the check on another host",
                        max_error=outcome.max_error)
  if outcome.impl != "pallas":
    resolved = resolved.copy_and_resolve_references()
    with resolved.unlocked():
      resolved.attention_impl = outcome.impl
  return resolved, outcome


@dataclasses.dataclass(frozen=True)
class _Shape:
  heads: int
  head_dim: int
  dtype: str
  block: int
  gated: bool
  has_bias: bool
  num_buckets: int
  max_distance: int

  @classmethod
  def of(cls, c) -> "_Shape":
    relative = c.relative_position != "none"
    return cls(c.num_heads, c.embed_dim // c.num_heads, c.dtype, c.attention_block,
               c.relative_position == "gated", relative, c.num_buckets, c.max_distance)


@functools.lru_cache(maxsize=None)
def check(shape: _Shape, fused=None) -> Outcome:
  """Runs the kernels (`fused(q, k, v, gate, bias, key_valid, block)`: `fused_attention.attend` with
  "pallas" unless a test injects another) against the XLA path on 2 rows of 2.5 tiles, one row padded;
  once per process and shape."""
  log = logging.getLogger(__name__)
  want = _run(shape, _xla)  # the reference: a failure here is a bug to see, not a kernel to avoid
  try:
    got = _run(shape, fused or _pallas)
  except Exception as e:  # noqa: BLE001 - any failure to lower, compile or run the kernels
    reason = f"the fused attention kernels failed on this {jax.devices()[0].device_kind} ({type(e).__name__}: " \
             f"{str(e).splitlines()[0] if str(e) else ''})"
    log.warning("%s; this run uses attention_impl='xla' (attention_impl='pallas' forces the kernels)", reason)
    return Outcome("xla", checked=True, reason=reason)
  error = 0.0
  for name in want:
    a, b = np.asarray(want[name], np.float64), np.asarray(got[name], np.float64)
    if not np.all(np.isfinite(b)):
      error = float("inf")
      break
    error = max(error, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)))
  tolerance = TOLERANCE.get(shape.dtype, 3e-2)
  if error > tolerance:
    reason = (f"the fused attention kernels disagree with the XLA path on this {jax.devices()[0].device_kind} "
              f"(largest relative difference {error:.3g} > {tolerance:g} in {shape.dtype})")
    log.warning("%s; this run uses attention_impl='xla' (attention_impl='pallas' forces the kernels)", reason)
    return Outcome("xla", checked=True, reason=reason, max_error=error)
  log.info("fused attention kernels checked against xla: largest relative difference %.3g", error)
  return Outcome("pallas", checked=True, max_error=error)


def _xla(q, k, v, gate, table, valid, shape: _Shape, length: int):
  bias = None if table is None else fused_attention.position_bias_for("xla", table, length, shape.num_buckets,
                                                                      shape.max_distance)
  return fused_attention.attend("xla", q, k, v, gate, bias, valid)


def _pallas(q, k, v, gate, table, valid, shape: _Shape, length: int):
  bias = None if table is None else fused_attention.position_bias_for("pallas", table, length, shape.num_buckets,
                                                                      shape.max_distance, shape.block)
  return fused_attention.attend("pallas", q, k, v, gate, bias, valid, block=shape.block)


def _run(shape: _Shape, impl) -> dict:
  """The output and the gradients of a fixed cotangent through `impl`, jitted."""
  b, t, h, d = 2, shape.block * 5 // 2 - 3, shape.heads, shape.head_dim
  keys = jax.random.split(jax.random.key(0), 6)
  dtype = jnp.dtype(shape.dtype)
  q, k, v = (jax.random.normal(keys[i], (b, t, h, d), jnp.float32).astype(dtype) for i in range(3))
  q = q * d ** -0.5
  gate = jax.nn.sigmoid(jax.random.normal(keys[3], (b, h, t))) * 2 if shape.gated else None
  table = jax.random.normal(keys[4], (shape.num_buckets, h)) if shape.has_bias else None
  valid = jnp.arange(t)[None, :] < jnp.array([[t], [t - shape.block // 2]])
  cotangent = jax.random.normal(keys[5], (b, t, h, d), jnp.float32).astype(dtype)

  inputs = {"q": q, "k": k, "v": v, "gate": gate, "table": table}
  inputs = {n: x for n, x in inputs.items() if x is not None}

  def loss(args):
    out = impl(args["q"], args["k"], args["v"], args.get("gate"), args.get("table"), valid, shape, t)
    return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32)), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(inputs)
  named = {"output": out, **{f"d{n}": g for n, g in grads.items()}}
  return {n: jax.device_get(x) for n, x in named.items()}
