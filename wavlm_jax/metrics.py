"""Training observability: TensorBoard through clu plus `metrics.jsonl` in the workdir (host 0 only),
a console line with ETA, and MFU from the compiled step's FLOPs over the chips' peak."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak FLOP/s per chip (vendor figures); CPU is measured at start-up.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
              "TPU v6 lite": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


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
  for name, flops in PEAK_FLOPS.items():
    if kind.startswith(name):
      return flops
  return measured_matmul_peak() / max(1, len(jax.local_devices()) if jax.devices()[0].platform == "cpu" else 1)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function (XLA cost analysis; 0 if unavailable)."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))
  except Exception:  # noqa: BLE001 - backends without cost analysis
    return 0.0


class Writer:
  """Scalars to TensorBoard (clu) and metrics.jsonl; audio examples to TensorBoard."""

  def __init__(self, workdir: str | Path, enabled: bool):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      from clu import metric_writers

      workdir = Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._tb = metric_writers.create_default_writer(str(workdir / "tensorboard"), asynchronous=True)
      self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    self._tb.write_scalars(step, clean)
    self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")

  def audio(self, step: int, clips: Mapping[str, np.ndarray], sample_rate: int = 16000) -> None:
    if self.enabled and clips:
      self._tb.write_audios(step, {k: np.asarray(v)[None, :, None] for k, v in clips.items()}, sample_rate=sample_rate)

  def close(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()


class Progress:
  """A console line per log period: step, loss, accuracy, throughput and ETA."""

  def __init__(self, total_steps: int, first_step: int):
    self.total, self.first, self.start = total_steps, first_step, time.time()

  def line(self, step: int, m: Mapping[str, float]) -> str:
    done = step - self.first
    elapsed = time.time() - self.start
    eta = elapsed / max(done, 1) * (self.total - step)
    return (f"step {step:>7}/{self.total}  loss {m.get('loss', float('nan')):.4f}  "
            f"acc_m {m.get('acc_masked', float('nan')):.3f}  acc_u {m.get('acc_unmasked', float('nan')):.3f}  "
            f"lr {m.get('learning_rate', 0):.2e}  {m.get('audio_seconds_per_second', 0):,.0f} audio-s/s  "
            f"mfu {m.get('mfu', 0):.1%}  eta {time.strftime('%H:%M:%S', time.gmtime(eta))}")


def model_flops_per_audio_second(c, crop_seconds: float, train: bool = True) -> float:
  """Analytic model FLOPs per second of 16 kHz audio (SPEC.md §16): conv frontend, projection,
  positional conv, Transformer linears and attention; a training step counts 3x the forward."""
  length, cin, macs = int(crop_seconds * 16000), 1, 0
  for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride):
    length = (length - k) // s + 1
    macs += length * k * cin * d
    cin = d
  t, e = length, c.embed_dim
  macs += t * cin * e + t * c.conv_pos * e * (e // c.conv_pos_groups)
  macs += c.num_layers * t * (4 * e * e + 2 * e * c.ffn_dim + 2 * t * e)
  return 2 * macs * (3 if train else 1) / crop_seconds
