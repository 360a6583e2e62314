"""Compute accounting: analytic model FLOPs per audio-second, chips' peak FLOP/s, the measured matmul
peak of a CPU host, XLA's cost analysis. MFU = model FLOPs per step / step time / peak."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from wavlm_jax import audio

@dataclasses.dataclass(frozen=True)
class Chip:
  device_kinds: tuple[str, ...]  # jax Device.device_kind prefixes
  hbm_gib: float  # per chip
  peak_flops: float  # dense bf16 FLOP/s (vendor figures)


# The one chip table (ahead-of-time planning and MFU); a CPU's peak is measured at start-up instead.
# "TPU v5 lite" (v5e) is tested before "TPU v5" (v5p): kinds are matched as prefixes, in this order.
CHIPS = {"v4": Chip(("TPU v4",), 32, 275e12), "v5e": Chip(("TPU v5 lite", "TPU v5e"), 16, 197e12),
         "v5p": Chip(("TPU v5p", "TPU v5"), 95, 459e12), "v6e": Chip(("TPU v6 lite", "TPU v6e"), 32, 918e12),
         "h100": Chip(("NVIDIA H100",), 80, 989e12), "h200": Chip(("NVIDIA H200",), 141, 989e12),
         "a100": Chip(("NVIDIA A100",), 80, 312e12), "cpu": Chip((), 0, 0.0)}


def measured_matmul_peak(dim: int = 1024, dtype=np.float32, repeats: int = 10) -> float:
  """FLOP/s of a large jitted matmul on device 0 (the realistic peak of a CPU host; bf16 on a GPU), with
  fp32 accumulation and output: XLA:CPU runs bf16 matmuls on its bf16 dot-product kernels only then."""
  x = jax.device_put(np.random.default_rng(0).standard_normal((dim, dim)).astype(dtype), jax.devices()[0])
  f = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  f(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    y = f(x)
  y.block_until_ready()
  return 2 * dim ** 3 * repeats / (time.perf_counter() - start)


def peak_flops_per_device(override: float = 0.0) -> float:
  if override > 0:
    return override
  kind = jax.devices()[0].device_kind
  for chip in CHIPS.values():
    if any(kind.startswith(k) for k in chip.device_kinds):
      return chip.peak_flops
  return measured_matmul_peak() / max(1, len(jax.local_devices()) if jax.devices()[0].platform == "cpu" else 1)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function (XLA cost analysis; 0 if unavailable)."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))
  except Exception:  # noqa: BLE001 - backends without cost analysis
    return 0.0


def model_flops_per_audio_second(c, crop_seconds: float, train: bool = True) -> float:
  """Analytic model FLOPs per second of 16 kHz audio (docs/sharding.md#compute-anchors): conv frontend, projection,
  positional conv, Transformer linears and attention; a training step counts 3x the forward."""
  length, cin, macs = int(crop_seconds * audio.SAMPLE_RATE), 1, 0
  for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride):
    length = (length - k) // s + 1
    macs += length * k * cin * d
    cin = d
  t, e = length, c.embed_dim
  macs += t * cin * e + t * c.conv_pos * e * (e // c.conv_pos_groups)
  macs += c.num_layers * t * (4 * e * e + 2 * e * c.ffn_dim + 2 * t * e)
  return 2 * macs * (3 if train else 1) / crop_seconds
