"""Runs one command as N local JAX processes (jax.distributed over localhost, gloo CPU collectives)."""

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(cmd: list[str], processes: int = 2, devices_per_process: int = 4) -> list[subprocess.Popen]:
  """Starts `cmd` once per process id with the coordinator environment."""
  port = free_port()
  procs = []
  for pid in range(processes):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(pid),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def wait(procs: list[subprocess.Popen], timeout: int = 600) -> list[str]:
  """Each process's output; fails with all outputs if any process failed."""
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n\n".join(outs)
  return outs


def run(cmd: list[str], processes: int = 2, devices_per_process: int = 4, timeout: int = 600) -> list[str]:
  return wait(start(cmd, processes, devices_per_process), timeout)
