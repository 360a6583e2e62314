"""Launchers: every script parses (bash -n, shellcheck when installed) and --dry-run prints the exact
commands a user would otherwise run."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["launch/local.sh", "launch/slurm_gpu.sbatch", "launch/tpu.sh"]


def _run(*args):
  out = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  assert subprocess.run(["bash", "-n", script], cwd=REPO).returncode == 0
  shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
  if shellcheck:
    result = subprocess.run([shellcheck, "-S", "warning", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_local_dry_run():
  lines = _run("launch/local.sh", "--dry-run", "--processes", "3", "--cpu-devices", "2", "--port", "1234", "--",
               "--config", "configs/tiny.py", "--workdir", "runs/a b")
  assert len(lines) == 3
  for i, argv in enumerate(lines):
    assert argv[0] == "env"
    env = dict(a.split("=", 1) for a in argv[1:] if "=" in a and not a.startswith("--"))
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234" and env["JAX_NUM_PROCESSES"] == "3"
    assert env["JAX_PROCESS_ID"] == str(i) and env["XLA_FLAGS"].endswith("count=2")
    assert argv[-6:] == ["-m", "wavlm_jax.train", "--config", "configs/tiny.py", "--workdir", "runs/a b"]
  gpu = _run("launch/local.sh", "--dry-run", "--gpus", "--processes", "2", "--", "--config", "c.py")
  assert "CUDA_VISIBLE_DEVICES=1" in gpu[1]
  tok = _run("launch/local.sh", "--dry-run", "--module", "wavlm_jax.targets.tokenize", "--", "--config", "t.py", "fit")
  assert len(tok) == 2 and all(a[-5:] == ["-m", "wavlm_jax.targets.tokenize", "--config", "t.py", "fit"] for a in tok)


def test_slurm_dry_run():
  (argv,) = _run("launch/slurm_gpu.sbatch", "--dry-run", "configs/wavlm_base.py", "/shared/w", "--config.mesh.fsdp=8")
  assert argv[:3] == ["srun", "--kill-on-bad-exit=1", "--gpus-per-task=1"]
  assert argv[4:] == ["-m", "wavlm_jax.train", "--config", "configs/wavlm_base.py", "--workdir", "/shared/w",
                      "--config.distributed.enabled=true", "--config.mesh.fsdp=8"]
  text = (REPO / "launch/slurm_gpu.sbatch").read_text()
  assert "#SBATCH --signal=TERM@300" in text  # time to save a checkpoint before the limit


@pytest.mark.parametrize("queued", [False, True])
def test_tpu_dry_run(queued):
  args = ["launch/tpu.sh", "--dry-run", "--name", "pod", "--zone", "us-west4-a", "--type", "v5litepod-16",
          "--config", "configs/wavlm_base.py", "--workdir", "gs://bucket/run"] + (["--queued"] if queued else [])
  lines = _run(*args, "--", "--config.total_steps=10")
  joined = [" ".join(a) for a in lines]
  if queued:
    assert lines[0][:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert "wait" in lines[1] and lines[-1][4] == "delete"
  else:
    assert lines[0][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "v5litepod-16" in lines[0]
    assert lines[-1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"]
  assert any("tpu-vm scp" in j and "--worker=all" in j for j in joined)
  assert any("pip install -e '.[tpu]'" in j for j in joined)
  train = [j for j in joined if "wavlm_jax.train" in j]
  assert len(train) == 1 and "--workdir gs://bucket/run" in train[0] and "--config.total_steps=10" in train[0]
  assert "--config.distributed.enabled=true" in train[0]
  missing = subprocess.run(["bash", "launch/tpu.sh", "--dry-run", "--name", "x"], cwd=REPO, capture_output=True, text=True)
  assert missing.returncode == 2 and "--zone is required" in missing.stderr
