"""The scaling table: WavLM Base and Large, sharding presets and remat policies, compiled ahead of time
for TPU topologies on this CPU host (libtpu, no TPU): per-device memory vs HBM, model FLOPs per step,
roofline step time and audio-seconds/s/chip, and the largest crop that fits. Global batch as
docs/objectives.md#hyper-parameters: 2,800 s of audio per step for Base, 7,200 s for Large.

    .venv/bin/python bench/scaling.py [--topologies v4:2x2x4,v5e:4x4,v5p:2x2x4] [--out bench/results/scaling.json]

Each compile runs in a child process, retried if libtpu's compiler crashes (it did, now and then, before
`wavlm_jax.aot` gave its fibers larger stacks). GPU (H100) counts are not compiled here (XLA's CPU
compiler cannot model GPU memory): `bench/gpu_step.py` measures them on a GPU (the README's H100 table);
`python -m wavlm_jax.aot --cpu_devices N` checks that the sharded step compiles for N devices.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import time
from pathlib import Path


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

AUDIO_PER_STEP = {"wavlm_base": 2800.0, "wavlm_large": 7200.0}
VARIANTS = [("dp", "none"), ("fsdp", "none"), ("fsdp_tp", "none"), ("fsdp", "dots"), ("fsdp", "full")]
CROPS = (15.6, 12.0, 10.0, 8.0, 6.0, 4.0, 2.0)


def recipe(model: str, preset: str, remat: str, crop: float, devices: int, attention: str = "auto"):
  from configs import wavlm_base, wavlm_large

  cfg = (wavlm_base if model == "wavlm_base" else wavlm_large).get_config()
  with cfg.unlocked():
    cfg.sharding = preset
    cfg.model.remat = remat
    cfg.model.attention_impl = attention
    cfg.data.crop_seconds = crop
    cfg.data.batch_size = int(round(AUDIO_PER_STEP[model] / crop))
    fsdp = {"dp": 1, "fsdp": min(devices, 16), "fsdp_tp": min(devices // 2, 16)}[preset]
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, fsdp, 2 if preset == "fsdp_tp" else 1
  return cfg


def _analyse_here(model: str, preset: str, remat: str, crop: float, topology: str, attention: str) -> dict:
  from wavlm_jax import aot

  devices, chip = aot.devices_for(topology, None)
  report = aot.analyse(recipe(model, preset, remat, crop, len(devices), attention), model, topology, devices, chip)
  return dataclasses.asdict(report) | {"attention": attention}


def analyse(model: str, preset: str, remat: str, crop: float, topology: str, attention: str = "auto",
            attempts: int = 4) -> dict:
  """One compile in a child process, retried if the child dies: libtpu 0.0.42's compiler overflows a
  fiber stack now and then (SIGSEGV; the same program compiles on another try)."""
  for attempt in range(1, attempts + 1):
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
      try:
        return pool.submit(_analyse_here, model, preset, remat, crop, topology, attention).result()
      except concurrent.futures.process.BrokenProcessPool:
        print(f"  compiler crashed ({topology} {model} {preset}/{remat} {crop} s), attempt {attempt}/{attempts}",
              flush=True)
  raise RuntimeError(f"libtpu crashed {attempts} times compiling {topology} {model} {preset}/{remat} at {crop} s")


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--topologies", default="v4:2x2x4,v5e:4x4,v5p:2x2x4")
  p.add_argument("--models", default="wavlm_base,wavlm_large")
  p.add_argument("--variants", default=",".join(f"{p}/{r}" for p, r in VARIANTS),
                 help="preset/remat pairs, e.g. fsdp/none,fsdp/full")
  p.add_argument("--attention", default="auto",
                 help="model.attention_impl values to compile, e.g. xla,pallas (auto: pallas on TPU)")
  p.add_argument("--out", default="bench/results/scaling.json")
  args = p.parse_args()

  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only host (here, not at import: bench/gpu_step.py imports us)

  rows = []
  runs = [(t, m, v, a) for t in args.topologies.split(",") for m in args.models.split(",")
          for v in args.variants.split(",") for a in args.attention.split(",")]
  for topology, model, variant, attention in runs:
    preset, remat = variant.split("/")
    start = time.perf_counter()
    report = analyse(model, preset, remat, 15.6, topology, attention)
    row = report | {"compile_seconds": round(time.perf_counter() - start, 1), "largest_fitting_crop": None}
    if (preset, remat) == ("fsdp", "full"):  # the most memory-frugal variant: how long a crop fits?
      for crop in CROPS:
        r = report if crop == 15.6 else analyse(model, preset, remat, crop, topology, attention)
        if r["fits"]:
          row["largest_fitting_crop"] = crop
          break
    rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2, default=str))  # partial results survive a stop
    print(f"{topology:>10} {model:<12} {preset:<8} remat={remat:<5} attention={attention:<7} "
          f"{report['total_gib']:6.1f}/{report['hbm_gib']:.0f} GiB {'fits' if report['fits'] else 'OOM ':<5} "
          f"{report['audio_seconds_per_second_per_chip']:8,.0f} audio-s/s/chip", flush=True)

  print(f"\n{'topology':<10} {'model':<12} {'preset':<8} {'remat':<5} {'attention':<9} {'batch':>5} {'GiB/dev':>8} {'HBM':>5} "
        f"{'fits':>5} {'TFLOP/step':>10} {'roofline ms':>11} {'audio-s/s/chip':>14} {'max crop':>8}")
  for r in rows:
    crop = f"{r['largest_fitting_crop']}s" if r["largest_fitting_crop"] else ("-" if r["remat"] == "none" else "none")
    print(f"{r['target']:<10} {r['config']:<12} {r['preset']:<8} {r['remat']:<5} {r['attention']:<9} {r['batch']:>5} "
          f"{r['total_gib']:>8.1f} {r['hbm_gib']:>5.0f} {'yes' if r['fits'] else 'NO':>5} "
          f"{r['model_flops_per_step'] / 1e12:>10.1f} {r['roofline_step_seconds'] * 1e3:>11.0f} "
          f"{r['audio_seconds_per_second_per_chip']:>14,.0f} {crop:>8}")
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(rows, indent=2, default=str))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
