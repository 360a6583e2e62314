"""Parameters as a flat {"a/b/0/c": array} mapping: read from and written into a model, and moved
between the scanned (stacked "layers" axis) and looped layer layouts."""

from __future__ import annotations

import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

STACK_PREFIX = "wavlm/encoder/layers/"


def param_variables(model: nnx.Module) -> dict[str, nnx.Param]:
  return {"/".join(map(str, path)): var for path, var in nnx.iter_graph(model) if isinstance(var, nnx.Param)}


def get_params(model: nnx.Module) -> dict[str, np.ndarray]:
  """Every parameter as a NumPy array, keyed by its path."""
  return {k: np.asarray(v[...]) for k, v in param_variables(model).items()}


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in param_variables(model).items()}


def set_params(model: nnx.Module, flat: Mapping[str, np.ndarray], *, source: str = "parameters") -> nnx.Module:
  """Writes `flat` into the model (abstract or concrete); keys and shapes must match exactly."""
  variables = param_variables(model)
  check_keys_and_shapes({k: tuple(v.shape) for k, v in variables.items()},
                        {k: tuple(np.shape(v)) for k, v in flat.items()}, source)
  for key, var in variables.items():
    var.value = jnp.asarray(flat[key], jnp.float32)
  return model


def check_keys_and_shapes(expected: Mapping[str, tuple], given: Mapping[str, tuple], source: str) -> None:
  """Raises ValueError listing missing and unexpected keys and shape mismatches, with shapes."""
  missing = sorted(set(expected) - set(given))
  unexpected = sorted(set(given) - set(expected))
  wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k]) != tuple(given[k]))
  if missing or unexpected or wrong:
    lines = [f"{source} do not match the model:"]
    lines += [f"  missing:    {k} {tuple(expected[k])}" for k in missing]
    lines += [f"  unexpected: {k} {tuple(given[k])}" for k in unexpected]
    lines += [f"  shape:      {k} expected {tuple(expected[k])}, got {tuple(given[k])}" for k in wrong]
    raise ValueError("\n".join(lines))


_LAYER_KEY = re.compile(re.escape(STACK_PREFIX) + r"(\d+)/(.*)")


def unstack_layers(flat: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
  """Scanned layout (one array with a leading layers axis) -> one entry per layer."""
  out = {}
  for key, value in flat.items():
    if key.startswith(STACK_PREFIX):
      rest = key[len(STACK_PREFIX):]
      for i in range(num_layers):
        out[f"{STACK_PREFIX}{i}/{rest}"] = np.asarray(value[i])
    else:
      out[key] = value
  return out


def stack_layers(flat: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
  """One entry per layer -> scanned layout."""
  out, per_layer = {}, {}
  for key, value in flat.items():
    m = _LAYER_KEY.fullmatch(key)
    if m:
      per_layer.setdefault(m.group(2), {})[int(m.group(1))] = value
    else:
      out[key] = value
  for rest, by_index in per_layer.items():
    if sorted(by_index) != list(range(num_layers)):
      raise ValueError(f"layer parameter {rest!r} present for layers {sorted(by_index)}, expected 0..{num_layers - 1}")
    out[STACK_PREFIX + rest] = np.stack([np.asarray(by_index[i]) for i in range(num_layers)])
  return out


def to_layout(flat: Mapping[str, np.ndarray], config, *, scanned: bool | None = None) -> dict[str, np.ndarray]:
  """Converts a flat mapping in either layout to the layout of `config.scan_layers` (or `scanned`)."""
  scanned = config.scan_layers if scanned is None else scanned
  is_looped = any(_LAYER_KEY.fullmatch(k) for k in flat)
  if scanned:
    return stack_layers(flat, config.num_layers) if is_looped else dict(flat)
  return dict(flat) if is_looped else unstack_layers(flat, config.num_layers)


def nest(flat: Mapping[str, np.ndarray]) -> dict:
  """{"a/b": x} -> {"a": {"b": x}} (string keys; the layout Orbax stores)."""
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def flatten(tree: Mapping, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, path + "/"))
    else:
      out[path] = value
  return out


def count(model_or_flat) -> int:
  flat = model_or_flat if isinstance(model_or_flat, Mapping) else param_shapes(model_or_flat)
  return int(sum(np.prod(np.shape(v) if not isinstance(v, tuple) else v) for v in flat.values()))


class Binder:
  """Binds a model's structure to plain parameter trees: nested dicts with string keys ("wavlm" ->
  "encoder" -> ...), which optax, Orbax and sharding specs handle without knowing about NNX. Works on
  abstract models and inside jit."""

  def __init__(self, model: nnx.Module):
    self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
    self._flat = list(nnx.to_flat_state(params))
    self.keys = ["/".join(map(str, path)) for path, _ in self._flat]
    self.logical_axes = {k: tuple(v.get_metadata().get("logical_axes", ())) for k, (_, v) in zip(self.keys, self._flat)}
    self.shapes = {k: tuple(v.shape) for k, (_, v) in zip(self.keys, self._flat)}

  def tree(self, model: nnx.Module) -> dict:
    """The model's parameter values as a nested string-keyed dict."""
    values = param_variables(model)
    return nest({k: values[k][...] for k in self.keys})

  def model(self, tree: Mapping) -> nnx.Module:
    """A model carrying the values of `tree` (which must have exactly this model's parameters)."""
    flat = flatten(tree)
    state = nnx.from_flat_state([(path, var.replace(value=flat[key]))
                                 for key, (path, var) in zip(self.keys, self._flat)])
    return nnx.merge(self.graphdef, state, self.rest)
