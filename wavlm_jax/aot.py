"""Ahead-of-time compilation of the real training step for a pod, on a CPU host: does the recipe fit,
how many FLOPs per step, how fast at best. Catches out-of-memory before a pod is booked.

  python -m wavlm_jax.aot --config configs/wavlm_base.py --topology v5e:4x4
  python -m wavlm_jax.aot --config configs/wavlm_large.py --topology v5p:2x2x4 --config.sharding=fsdp \
      --config.mesh.fsdp=16 --config.model.remat=full
  python -m wavlm_jax.aot --config configs/tiny.py --cpu_devices 8       # fake CPU devices (GPU counts)

TPU topologies need libtpu (the [tpu] extra; no TPU is used). The global batch is the recipe's, rounded
up to a multiple of the data-parallel device count. Prints per-device memory (arguments, temporaries,
total vs the device's share of HBM), model FLOPs per step (analytic, and XLA's cost analysis, which
undercounts on TPU), and a roofline estimate of step time and audio-seconds/s/chip at the chip's peak.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Only compilation happens here: skip libtpu's one-process-per-host lock (no TPU is opened).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# libtpu 0.0.42's compiler overflows a fiber's stack (SIGSEGV) on some of these steps now and then, e.g.
# WavLM Base with fsdp and remat on v4; 32 MiB fiber stacks compile them.
_LIBTPU_ARGS = os.environ.get("LIBTPU_INIT_ARGS", "")
if "fibers_default_thread_stack_size" not in _LIBTPU_ARGS:
  os.environ["LIBTPU_INIT_ARGS"] = f"{_LIBTPU_ARGS} --fibers_default_thread_stack_size={32 << 20}".strip()

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

@dataclasses.dataclass
class Report:
  config: str
  target: str
  devices: int
  mesh: dict
  preset: str
  remat: str
  batch: int
  crop_seconds: float
  argument_gib: float
  temp_gib: float
  output_gib: float
  total_gib: float
  hbm_gib: float
  fits: bool | None
  flops_per_step: float  # over all devices, XLA's cost analysis
  model_flops_per_step: float  # analytic (flops.model_flops_per_audio_second)
  roofline_step_seconds: float
  audio_seconds_per_second_per_chip: float

  def table(self) -> str:
    hbm = f"{self.hbm_gib:.0f}" if self.hbm_gib else "?"
    fits = {True: "fits", False: "DOES NOT FIT", None: "n/a"}[self.fits]
    return (f"{self.target}: {self.devices} devices, mesh {self.mesh}, preset {self.preset}, remat {self.remat}\n"
            f"  global batch {self.batch} x {self.crop_seconds} s\n"
            f"  per-device memory: arguments {self.argument_gib:.2f} GiB, temporaries {self.temp_gib:.2f} GiB, "
            f"total {self.total_gib:.2f} / {hbm} GiB HBM -> {fits}\n"
            f"  {self.model_flops_per_step / 1e12:.1f} model TFLOP per step (XLA cost analysis: "
            f"{self.flops_per_step / 1e12:.1f}); roofline {self.roofline_step_seconds * 1e3:.0f} ms/step, "
            f"{self.audio_seconds_per_second_per_chip:,.0f} audio-s/s/chip at peak")


def chips_in(topology: str) -> int:
  return math.prod(int(d) for d in topology.split(":")[1].split("x"))


def devices_for(topology: str | None, cpu_devices: int | None):
  """(devices, chip name). topology like "v5e:4x4"; otherwise this host's (fake) CPU devices."""
  import jax

  from wavlm_jax.training import flops

  if topology:
    from jax.experimental import topologies

    chip = topology.split(":")[0].lower()
    if chip not in flops.CHIPS:
      raise ValueError(f"unknown chip {chip!r} in topology {topology!r}; known: {sorted(flops.CHIPS)}")
    try:
      topo = topologies.get_topology_desc(topology, "tpu")
    except Exception as e:  # noqa: BLE001
      raise RuntimeError(f"cannot describe TPU topology {topology!r} ({e}); install the [tpu] extra (libtpu)") from None
    return list(topo.devices), chip
  devices = jax.devices("cpu")
  if cpu_devices and len(devices) < cpu_devices:
    raise RuntimeError(f"{len(devices)} CPU devices; set XLA_FLAGS=--xla_force_host_platform_device_count="
                       f"{cpu_devices} before starting Python (the command line does it for you)")
  return devices[:cpu_devices] if cpu_devices else devices, "cpu"


def lower_step(cfg, devices, label_rate: float = 50.0):
  """Lowers the training step for `devices`; returns (lowered, mesh, global batch)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P

  from wavlm_jax import audio, train
  from wavlm_jax.data.labels import LabelSpec
  from wavlm_jax.training import mesh as mesh_lib

  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  rules = mesh_lib.rules_for(cfg.sharding)
  batch = mesh_lib.global_rows(cfg.data.batch_size, mesh)
  samples = int(round(cfg.data.crop_seconds * audio.SAMPLE_RATE))
  labels = audio.label_count(samples, label_rate)
  run = train.build(cfg, mesh, rules, LabelSpec(label_rate, cfg.model.num_label_classes))
  bs = NamedSharding(mesh, P(mesh_lib.BATCH))
  abstract_batch = {"audio": jax.ShapeDtypeStruct((batch, samples), jnp.float32, sharding=bs),
                    "padding_mask": jax.ShapeDtypeStruct((batch, samples), jnp.bool_, sharding=bs),
                    "labels": jax.ShapeDtypeStruct((batch, labels), jnp.int32, sharding=bs)}
  return run.step.lower(run.abstract_state, abstract_batch), mesh, batch


def compile_step(cfg, devices, label_rate: float = 50.0):
  """Lowers and compiles the training step for `devices`; returns (compiled, mesh, global batch)."""
  lowered, mesh, batch = lower_step(cfg, devices, label_rate)
  return lowered.compile(), mesh, batch


def _out_of_memory(cfg, config_name, target, devices, chip, error: Exception) -> Report:
  """The TPU compiler refuses programs that exceed HBM; report what it said it needed."""
  import re

  from wavlm_jax.training import flops, mesh as mesh_lib

  needed = re.search(r"required for [^(]*\(([\d.]+)([GM])\)", str(error))
  total = float(needed.group(1)) / (1024 if needed and needed.group(2) == "M" else 1) if needed else float("nan")
  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  return Report(config=config_name, target=target, devices=len(devices), mesh=dict(mesh.shape), preset=cfg.sharding,
                remat=cfg.model.remat, batch=mesh_lib.global_rows(cfg.data.batch_size, mesh), crop_seconds=cfg.data.crop_seconds,
                argument_gib=float("nan"), temp_gib=total, output_gib=float("nan"), total_gib=total,
                hbm_gib=flops.CHIPS[chip].hbm_gib * (chips_in(target) if ":" in target else len(devices)) / len(devices),
                fits=False, flops_per_step=0.0, model_flops_per_step=0.0,
                roofline_step_seconds=0.0, audio_seconds_per_second_per_chip=0.0)


def analyse(cfg, config_name: str, target: str, devices, chip: str, label_rate: float = 50.0) -> Report:
  import jax

  from wavlm_jax.training import flops

  try:
    compiled, mesh, batch = compile_step(cfg, devices, label_rate)
  except jax.errors.JaxRuntimeError as e:
    # Out of HBM is a result; out of a kernel's fast memory (VMEM, "scoped") is a kernel's bug: raise it.
    if "RESOURCE_EXHAUSTED" in str(e) and "vmem" not in str(e).lower():
      return _out_of_memory(cfg, config_name, target, devices, chip, e)
    raise
  mem = compiled.memory_analysis()
  gib = 1024 ** 3
  arg = getattr(mem, "argument_size_in_bytes", 0) / gib
  tmp = getattr(mem, "temp_size_in_bytes", 0) / gib
  out = getattr(mem, "output_size_in_bytes", 0) / gib
  alias = getattr(mem, "alias_size_in_bytes", 0) / gib
  total = arg + tmp + out - alias
  hbm, peak_chip = flops.CHIPS[chip].hbm_gib, flops.CHIPS[chip].peak_flops
  n = len(devices)
  chips = chips_in(target) if ":" in target else n
  per_device_flops = flops.compiled_flops(compiled)  # the SPMD program of one device
  audio = batch * cfg.data.crop_seconds
  model_flops = flops.model_flops_per_audio_second(cfg.model, cfg.data.crop_seconds) * audio
  step_seconds = model_flops / (peak_chip * chips) if peak_chip else 0.0
  return Report(config=config_name, target=target, devices=n, mesh=dict(mesh.shape), preset=cfg.sharding,
                remat=cfg.model.remat, batch=batch, crop_seconds=cfg.data.crop_seconds, argument_gib=arg,
                temp_gib=tmp, output_gib=out, total_gib=total, hbm_gib=hbm * chips / n if hbm else 0,
                fits=(total <= hbm * chips / n) if hbm else None, flops_per_step=per_device_flops * n,
                model_flops_per_step=model_flops, roofline_step_seconds=step_seconds,
                audio_seconds_per_second_per_chip=audio / step_seconds / chips if step_seconds else 0.0)


def main(argv):
  from absl import flags

  f = flags.FLAGS
  devices, chip = devices_for(f.topology, f.cpu_devices)
  from ml_collections import config_flags

  name = config_flags.get_config_filename(f["config"])
  report = analyse(f.config, name, f.topology or f"cpu x{len(devices)}", devices, chip, f.label_rate)
  print(report.table())
  if f.json:
    print(json.dumps(dataclasses.asdict(report)))
  if report.fits is False:
    print("  suggestion: try --config.sharding=fsdp (or fsdp_tp) with a larger --config.mesh.fsdp, "
          "--config.model.remat=full, or a shorter --config.data.crop_seconds")
    sys.exit(3)


def _cpu_devices_from_argv(argv) -> None:
  """--cpu_devices N must take effect before JAX starts."""
  for i, a in enumerate(argv):
    if a.startswith("--cpu_devices"):
      n = a.split("=", 1)[1] if "=" in a else argv[i + 1]
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"


if __name__ == "__main__":
  _cpu_devices_from_argv(sys.argv)
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "run recipe", lock_config=True)
  flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4, v5p:2x2x4, v4:2x2x2")
  flags.DEFINE_integer("cpu_devices", None, "compile for this many (fake) CPU devices instead")
  flags.DEFINE_float("label_rate", 50.0, "label rate of the targets (50 or 100 Hz)")
  flags.DEFINE_bool("json", False, "also print the report as JSON")
  flags.mark_flags_as_required(["config"])
  app.run(main)
