"""The real pretraining step of WavLM Base and Large on one GPU: the compiler's memory analysis and the
measured step time at the per-GPU batch of an N-GPU job, and the H100 rows of the scaling table that
follow from them.

    python bench/gpu_step.py [--gpus base:8,16,32 large:16,32,64] [--remat none,full] [--steps 10] \
        [--attention pallas,xla]

Each row compiles `train.build`'s jitted step (the recipe's bf16 compute, AdamW, masking, mixing off)
for a one-device mesh with the per-GPU batch of N GPUs (docs/objectives.md#hyper-parameters: 2,800 s of
audio per step for Base, 7,200 s for Large, in 15.6 s crops), runs it on random audio and labels, and reports:

- remat: the policies of --remat are tried in turn; the first that fits and runs is timed;
- memory: the compiled step's arguments + temporaries + outputs − aliased (what data parallelism puts
  on every GPU), and the allocator's peak while it ran;
- the fsdp column: the same minus (1 − 1/N) of the parameters, gradients and both Adam moments
  (4 × 4 bytes per parameter), which fsdp shards N ways; derived, not measured (one GPU here);
- step time (median of --steps after two warm-ups), audio-seconds/s/GPU, and MFU against the measured
  bf16 matmul peak of this GPU and against the datasheet's dense bf16 peak;
- --attention: every row once per `model.attention_impl` (pallas: the fused kernel; xla: the dense
  (batch, heads, T, T) reference), side by side in the same run, with the speed-up over xla.

Gradient all-reduce across GPUs is not in the time: it is one pass over 4 bytes per parameter
(0.38 GB for Base), a few ms on NVLink against a step of hundreds of ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scaling.py
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

from scaling import AUDIO_PER_STEP, recipe  # noqa: E402 - bench/, the same recipes as the TPU table

CROP = 15.6


def config_for(model: str, remat: str, batch: int, attention: str = "auto"):
  """The recipe on one GPU (data parallel) at `batch` crops of CROP seconds."""
  cfg = recipe(model, "dp", remat, CROP, 1, attention)
  with cfg.unlocked():
    cfg.data.batch_size = batch
  return cfg


def measure(model: str, remat: str, batch: int, steps: int, hbm_gib: float, attention: str = "auto") -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from wavlm_jax import train
  from wavlm_jax.data.labels import LabelSpec
  from wavlm_jax.training import flops as flops_lib, mesh as mesh_lib

  cfg = config_for(model, remat, batch, attention)
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:1])
  rules = mesh_lib.rules_for(cfg.sharding)
  samples, labels = int(round(CROP * 16000)), int(round(CROP * 50))
  run = train.build(cfg, mesh, rules, LabelSpec(50.0, cfg.model.num_label_classes))
  bs = NamedSharding(mesh, P(mesh_lib.BATCH))
  abstract = {"audio": jax.ShapeDtypeStruct((batch, samples), jnp.float32, sharding=bs),
              "padding_mask": jax.ShapeDtypeStruct((batch, samples), jnp.bool_, sharding=bs),
              "labels": jax.ShapeDtypeStruct((batch, labels), jnp.int32, sharding=bs)}
  start = time.perf_counter()
  compiled = run.step.lower(run.abstract_state, abstract).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  gib = 1024 ** 3
  total = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
           - mem.alias_size_in_bytes) / gib
  n_params = sum(math.prod(s) for s in run.binder.shapes.values())
  row = {"model": model, "remat": remat, "attention": attention, "batch_per_gpu": batch, "crop_seconds": CROP,
         "audio_seconds_per_gpu": batch * CROP, "params": n_params, "compile_seconds": round(compile_s, 1),
         "argument_gib": mem.argument_size_in_bytes / gib, "temp_gib": mem.temp_size_in_bytes / gib,
         "total_gib": total, "fits": total <= hbm_gib}
  if not row["fits"]:
    return row
  rng = np.random.default_rng(0)
  batch_arrays = {"audio": jax.device_put(0.1 * rng.standard_normal((batch, samples), np.float32), bs),
                  "padding_mask": jax.device_put(np.zeros((batch, samples), bool), bs),
                  "labels": jax.device_put(rng.integers(0, cfg.model.num_label_classes, (batch, labels),
                                                        dtype=np.int32), bs)}
  state = run.init()
  times = []
  for i in range(steps + 2):
    t0 = time.perf_counter()
    state, out = compiled(state, batch_arrays)
    loss = float(out["loss"])  # waits for the step
    if i >= 2:
      times.append(time.perf_counter() - t0)
  stats = jax.devices()[0].memory_stats() or {}
  step = statistics.median(times)
  flops = flops_lib.model_flops_per_audio_second(cfg.model, CROP) * batch * CROP
  row |= {"loss": loss, "step_seconds": step, "step_seconds_spread": [min(times), max(times)],
          "audio_seconds_per_second_per_gpu": batch * CROP / step, "model_tflop_per_step": flops / 1e12,
          "achieved_tflops": flops / step / 1e12,
          "allocator_peak_gib_so_far": stats.get("peak_bytes_in_use", 0) / gib}
  del state, batch_arrays
  return row


def breakdown(model_name: str, batch: int, steps: int, attention: str = "auto") -> list[dict]:
  """Forward + backward time of the whole backbone and of its parts (conv frontend; Transformer encoder
  incl. positional conv) at one batch, on the recipe's compute dtype: where the step's time goes."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from wavlm_jax.training import flops as flops_lib
  from wavlm_jax.models import wavlm

  cfg = config_for(model_name, "none", batch, attention).model
  model = wavlm.build(cfg).wavlm
  graph, state = nnx.split(model)
  samples = int(round(CROP * 16000))
  frames = (samples - 400) // 320 + 1
  rng = np.random.default_rng(0)
  wav = jnp.asarray(0.1 * rng.standard_normal((batch, samples), np.float32))
  feats = jnp.asarray(rng.standard_normal((batch, frames, cfg.embed_dim), np.float32)).astype(cfg.dtype)

  def whole(st, w):
    return jnp.mean(nnx.merge(graph, st)(w, collect=False).last_hidden_state.astype(jnp.float32))

  def front(st, w):
    return jnp.mean(nnx.merge(graph, st).feature_extractor(w).astype(jnp.float32))

  def encoder(st, x):
    return jnp.mean(nnx.merge(graph, st).encoder(x, collect=False).last_hidden_state.astype(jnp.float32))

  rows = []
  per_second = flops_lib.model_flops_per_audio_second(cfg, CROP)
  for name, fn, arg in (("backbone", whole, wav), ("frontend", front, wav), ("encoder", encoder, feats)):
    step = jax.jit(jax.value_and_grad(fn)).lower(state, arg).compile()
    for _ in range(2):
      jax.block_until_ready(step(state, arg))
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      jax.block_until_ready(step(state, arg))
      times.append(time.perf_counter() - t0)
    rows.append({"part": name, "model": model_name, "attention": attention, "batch": batch, "frames": frames,
                 "fwd_bwd_ms": 1e3 * statistics.median(times), "xla_flops": flops_lib.compiled_flops(step)})
    print(json.dumps(rows[-1]), flush=True)
  print(f"(analytic model FLOPs of a training step: {per_second * batch * CROP / 1e12:.1f} TFLOP)")
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gpus", nargs="+", default=["base:8,16,32", "large:32,64,128"],
                 help="model:N1,N2,... GPU counts whose per-GPU batch to measure")
  p.add_argument("--remat", default="none,dots,full", help="policies tried in turn until one fits")
  p.add_argument("--deadline", type=float, default=1e9, help="start no new row after this many seconds")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--attention", default="auto", help="model.attention_impl values side by side, e.g. pallas,xla")
  p.add_argument("--breakdown", default="", help="model:batch, e.g. base:12: time the backbone's parts instead")
  p.add_argument("--hbm_gib", type=float, default=0.0, help="memory per GPU (default: what the device reports)")
  p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "bench/results"), "gpu_step.json"))
  args = p.parse_args()

  import jax
  import jax.numpy as jnp

  from wavlm_jax.training import flops as flops_lib

  device = jax.devices()[0]
  hbm = args.hbm_gib or (device.memory_stats() or {}).get("bytes_limit", 80 * 1024 ** 3) / 1024 ** 3
  gpu = device.platform == "gpu"
  peak = flops_lib.measured_matmul_peak(8192 if gpu else 512, jnp.bfloat16, 20 if gpu else 3)
  datasheet = flops_lib.peak_flops_per_device()
  print(f"{device.device_kind}: {hbm:.1f} GiB usable, bf16 matmul {peak / 1e12:.0f} TFLOP/s measured, "
        f"{datasheet / 1e12:.0f} datasheet; jax {jax.__version__}", flush=True)
  if args.breakdown:
    name, batch = args.breakdown.split(":")
    rows = [r for a in args.attention.split(",") for r in breakdown(f"wavlm_{name}", int(batch), args.steps, a)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return
  plan = []
  for spec in args.gpus:
    name, counts = spec.split(":")
    model = f"wavlm_{name}"
    crops = round(AUDIO_PER_STEP[model] / CROP)
    batches = {}
    for n in map(int, counts.split(",")):
      batches.setdefault(-(-crops // n), []).append(n)
    plan += [(model, b, gpus) for b, gpus in batches.items()]
  rows = []
  begin = time.perf_counter()
  for model, batch, gpus in plan:
    for attention in args.attention.split(","):
      for remat in args.remat.split(","):  # the lightest policy that fits
        if time.perf_counter() - begin > args.deadline:
          print(f"deadline: skipping {model} batch {batch} attention {attention} remat {remat}", flush=True)
          break
        try:
          row = measure(model, remat, batch, args.steps, hbm, attention)
        except Exception as e:  # noqa: BLE001 - an allocation failure is a result too
          if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
          row = {"model": model, "remat": remat, "attention": attention, "batch_per_gpu": batch, "fits": False,
                 "error": f"{type(e).__name__}: {e}"[:400]}
        row |= {"gpu_counts": gpus, "measured_peak_tflops": peak / 1e12, "datasheet_peak_tflops": datasheet / 1e12,
                "device": device.device_kind, "jax": jax.__version__}
        if "step_seconds" in row:
          row["mfu_measured_peak"] = row["achieved_tflops"] * 1e12 / peak
          row["mfu_datasheet"] = row["achieved_tflops"] * 1e12 / datasheet
        rows.append(row)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
        print(json.dumps(row), flush=True)
        if "step_seconds" in row:
          break

  print(f"\n{'model':<12} {'attention':<9} {'remat':<5} {'GPUs':>8} {'batch/GPU':>9} {'dp GiB':>7} {'fsdp GiB':>8} "
        f"{'step ms':>8} {'vs xla':>6} {'audio-s/s/GPU':>13} {'MFU meas':>8} {'MFU sheet':>9}")
  for r in rows:
    if "error" in r:
      print(f"{r['model']:<12} {r['attention']:<9} {r['remat']:<5} {str(r['gpu_counts']):>8} {r['batch_per_gpu']:>9}  "
            f"{r['error'][:60]}")
      continue
    base = next((x for x in rows if x["attention"] == "xla" and "step_seconds" in x
                 and (x["model"], x["batch_per_gpu"]) == (r["model"], r["batch_per_gpu"])), None)
    speedup = f"{base['step_seconds'] / r['step_seconds']:>5.2f}x" if base and "step_seconds" in r else f"{'-':>6}"
    for n in r["gpu_counts"]:
      fsdp = r["total_gib"] - (1 - 1 / n) * 16 * r["params"] / 1024 ** 3
      timing = (f"{r['step_seconds'] * 1e3:>8.0f} {speedup} {r['audio_seconds_per_second_per_gpu']:>13,.0f} "
                f"{r['mfu_measured_peak']:>8.0%} {r['mfu_datasheet']:>9.0%}") if "step_seconds" in r else "  DOES NOT FIT"
      print(f"{r['model']:<12} {r['attention']:<9} {r['remat']:<5} {n:>8} {r['batch_per_gpu']:>9} {r['total_gib']:>7.1f} "
            f"{fsdp:>8.1f} {timing}")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
