"""Sharding as configuration: a named device mesh (data, fsdp, tensor), logical-axis rule presets that
map the logical names carried by every parameter onto mesh axes, and a helper that constrains
activations by logical names. Changing the parallelism never touches model code.

Presets (logical name -> mesh axes):
  dp       everything replicated; the batch split over all devices
  fsdp     parameters sharded over "fsdp" along their model dimension (ZeRO-3 style)
  fsdp_tp  as fsdp, plus the MLP and attention heads split over "tensor" (Megatron style)
A dimension that a mesh axis does not divide stays replicated (tiny models run on any mesh).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # the batch is split over both data-parallel axes

# Parameters use embed / mlp / heads / conv_out / vocab / layers; activations use batch / frames and the
# act_* names, so that FSDP shards weights but keeps activations split by batch only.
_COMMON = {"batch": BATCH, "frames": None, "layers": None, "head_dim": None, "conv_width": None, "conv_in": None,
           "act_embed": None, "act_channels": None}
RULES: dict[str, dict[str, object]] = {
    "dp": {**_COMMON, "embed": None, "mlp": None, "heads": None, "conv_out": None, "vocab": None,
           "act_heads": None, "act_mlp": None},
    "fsdp": {**_COMMON, "embed": "fsdp", "mlp": None, "heads": None, "conv_out": "fsdp", "vocab": None,
             "act_heads": None, "act_mlp": None},
    "fsdp_tp": {**_COMMON, "embed": "fsdp", "mlp": "tensor", "heads": "tensor", "conv_out": "fsdp", "vocab": None,
                "act_heads": "tensor", "act_mlp": "tensor"},
}


def make_mesh(shape: Mapping[str, int], devices: Sequence | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor); one size may be -1 (fills the remaining devices)."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(shape.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {dict(shape)}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {dict(shape)}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, there are {len(devices)}")
  try:
    grid = jax.experimental.mesh_utils.create_device_mesh(sizes, devices)
  except Exception:  # noqa: BLE001 - CPU and odd topologies: plain reshape
    grid = np.array(devices).reshape(sizes)
  return Mesh(grid, AXES)


def rules_for(preset: str | Mapping[str, object]) -> dict[str, object]:
  if isinstance(preset, str):
    if preset not in RULES:
      raise ValueError(f"unknown sharding preset {preset!r}; known: {sorted(RULES)}")
    return RULES[preset]
  return dict(preset)


def spec_for(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Mapping[str, object]) -> P:
  """PartitionSpec of an array with logical `axes`; undividable dimensions stay replicated."""
  out, used = [], set()
  for name, dim in zip(axes, shape):
    target = rules.get(name) if name is not None else None
    names = (target,) if isinstance(target, str) else tuple(target or ())
    names = tuple(n for n in names if n not in used)
    size = math.prod(mesh.shape[n] for n in names) if names else 1
    if not names or size == 1 or dim % size:
      out.append(None)
      continue
    used.update(names)
    out.append(names[0] if len(names) == 1 else names)
  return P(*out)


def param_specs(state: nnx.State, mesh: Mesh, rules: Mapping[str, object]):
  """A pytree of PartitionSpecs matching `state` (nnx.State of Variables with `logical_axes`)."""
  def one(var):
    axes = var.get_metadata().get("logical_axes") if hasattr(var, "get_metadata") else None
    shape = var.shape if hasattr(var, "shape") else np.shape(var[...])
    return spec_for(axes or (None,) * len(shape), shape, mesh, rules)
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def named(mesh: Mesh, specs):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


# ----------------------------------------------------------------------------------------------
# Activation constraints
# ----------------------------------------------------------------------------------------------
_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("wavlm_jax_sharding", default=None)


@contextlib.contextmanager
def use(mesh: Mesh, rules: Mapping[str, object]):
  """Within this context, `constrain` applies sharding constraints (used while tracing the step)."""
  token = _CONTEXT.set((mesh, dict(rules)))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def platform() -> str:
  """The platform the step being traced is built for: that of the devices of the mesh in `use(...)` (an
  ahead-of-time TPU compile on a CPU host says "tpu"), else JAX's default backend."""
  ctx = _CONTEXT.get()
  return ctx[0].devices.flat[0].platform if ctx is not None else jax.default_backend()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; the identity outside `use(...)`."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  mesh, rules = ctx
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(axes, x.shape, mesh, rules)))


def initialize_distributed(d) -> None:
  """jax.distributed.initialize() when the config's `distributed` section (configs/common.py) or the
  environment asks for it (SLURM, TPU pods and explicit coordinator settings; CPU processes use the gloo
  collectives). Used by the trainer and the tokenizer."""
  env = os.environ
  explicit = bool(d.coordinator or env.get("JAX_COORDINATOR_ADDRESS"))
  auto = d.enabled or explicit or ("SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1)
  if not auto or jax.distributed.is_initialized():
    return
  if d.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
  if explicit:
    jax.distributed.initialize(coordinator_address=d.coordinator or env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(d.num_processes or env.get("JAX_NUM_PROCESSES", 1)),
                               process_id=int(d.process_id if d.process_id >= 0 else env.get("JAX_PROCESS_ID", 0)))
  else:
    jax.distributed.initialize()
