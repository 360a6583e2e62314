"""Logical-axis annotations the model carries, and the constraints it applies to its activations.

Every parameter and constrained activation names its axes logically (`embed`, `mlp`, `heads`, `batch`,
`frames`, `act_*`, ...). Whoever builds a step on a device mesh maps those names onto mesh axes with a
rule table (the presets live with the trainer, `wavlm_jax.training.mesh`) and traces the model inside
`use(mesh, rules)`; outside it, `constrain` is the identity. The model never imports a mesh preset.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


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


_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("wavlm_jax_partitioning", default=None)


@contextlib.contextmanager
def use(mesh: Mesh, rules: Mapping[str, object]):
  """Within this context, `constrain` applies sharding constraints (used while tracing the step)."""
  token = _CONTEXT.set((mesh, dict(rules)))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def current() -> tuple[Mesh, dict] | None:
  """The (mesh, rules) of the enclosing `use(...)`, or None."""
  return _CONTEXT.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; the identity outside `use(...)`."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  mesh, rules = ctx
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(axes, x.shape, mesh, rules)))
