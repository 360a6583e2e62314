"""Start-up shared by the command-line programs (`wavlm_jax.train`, `wavlm_jax.targets.tokenize`): the
CPU pin on hosts without accelerators, quiet library logs, and `jax.distributed` start-up."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable

import jax
from absl import app, flags, logging


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` for our programs: a CPU-only host runs on the CPU without libtpu's start-up
  probe, and library INFO logs (Orbax, TFDS) stay off the console unless `--verbosity=0` asks for them."""
  use_cpu_without_accelerators()

  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    main(argv)

  app.run(quiet_main)


def use_cpu_without_accelerators() -> None:
  """On a host with no TPU chip and no GPU, pins JAX to the CPU before its backends start. Otherwise
  libtpu, which the `[dev]` extra installs for ahead-of-time TPU compilation, probes for TPU chips and
  prints a page of warnings. An explicit JAX_PLATFORMS is left alone."""
  if os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms:
    return
  google_pci = any(Path(v).read_text().strip() == "0x1ae0" for v in glob.glob("/sys/bus/pci/devices/*/vendor"))
  gpu = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
  if not google_pci and not gpu:
    jax.config.update("jax_platforms", "cpu")


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
