"""The device mesh and the rule presets that map the model's logical axis names onto it: sharding as
configuration. Changing the parallelism never touches model code.

Presets (logical name -> mesh axes):
  dp       everything replicated; the batch split over all devices
  fsdp     parameters sharded over "fsdp" along their model dimension (ZeRO-3 style)
  fsdp_tp  as fsdp, plus the MLP and attention heads split over "tensor" (Megatron style)
A dimension that a mesh axis does not divide stays replicated (tiny models run on any mesh).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
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
  # TPU slices: devices ordered along the physical interconnect; a mesh axis that is not a product of whole
  # physical axes (fsdp=8 on a 4x4 v5e) may split one rather than fail. Other platforms: a reshape. So are
  # TPU devices that are not one per chip (v4's two TensorCores as two devices, as a v4 topology describes
  # them to an ahead-of-time compile), which mesh_utils refuses: chips in physical order, a chip's cores adjacent.
  try:
    grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
  except AssertionError as e:
    if "one device per chip" not in str(e):
      raise
    chip_major = sorted(devices, key=lambda d: (tuple(reversed(d.coords)), d.core_on_chip))
    grid = np.array(chip_major, dtype=object).reshape(sizes)
  return Mesh(grid, AXES)


def rules_for(preset: str | Mapping[str, object]) -> dict[str, object]:
  if isinstance(preset, str):
    if preset not in RULES:
      raise ValueError(f"unknown sharding preset {preset!r}; known: {sorted(RULES)}")
    return RULES[preset]
  return dict(preset)


def named(mesh: Mesh, specs):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_devices(mesh: Mesh) -> int:
  """How many ways the batch is split (the data-parallel axes): every global batch is a multiple of it."""
  return math.prod(mesh.shape[a] for a in BATCH)


def global_rows(batch_size: int, mesh: Mesh) -> int:
  """The configured batch rounded up to a multiple of the data-parallel devices: the rows of the
  longest crop (duration batching's longest bucket, and what ahead-of-time planning compiles)."""
  multiple = batch_devices(mesh)
  return -(-batch_size // multiple) * multiple


def platform(mesh: Mesh) -> str:
  """The platform of the mesh's devices: what a step built on it runs on (an ahead-of-time TPU compile
  on a CPU host says "tpu")."""
  return mesh.devices.flat[0].platform
