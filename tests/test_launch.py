"""Launchers: every script parses (bash -n, shellcheck when installed) and --dry-run prints the exact
commands a user would otherwise run."""

import json
import os
import re
import shlex
import signal
import shutil
import subprocess
import sys
import time
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
  assert lines[0][:2] == ["git", "archive"] and lines[0][-1] == "HEAD"  # the committed source, nothing else
  archive = lines[0][lines[0].index("--output") + 1]
  if queued:
    assert lines[1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert "wait" in lines[2] and lines[-1][4] == "delete"
  else:
    assert lines[1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "v5litepod-16" in lines[1]
    assert lines[-1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"]
  (scp,) = [a for a in lines if a[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and a[4] == "scp"]
  assert archive in scp and "--worker=all" in scp and "--recurse" not in scp
  assert any("tar -xzf ~/wavlm_jax.tar.gz" in j and "pip install -e '.[tpu]'" in j for j in joined)
  train = [j for j in joined if "wavlm_jax.train" in j]
  assert len(train) == 1 and "--workdir gs://bucket/run" in train[0] and "--config.total_steps=10" in train[0]
  assert "--config.distributed.enabled=true" in train[0]
  assert any("until gs://bucket/run/summary.json says finished (at most 5 restarts)" in j for j in joined)
  missing = subprocess.run(["bash", "launch/tpu.sh", "--dry-run", "--name", "x"], cwd=REPO, capture_output=True,
                           text=True)
  assert missing.returncode == 2 and "--zone is required" in missing.stderr


def test_what_the_tpu_launcher_ships_is_the_committed_source_only():
  # `git archive HEAD`, as tpu.sh runs it: tracked files of the commit; never the virtual environment,
  # runs, data or anything else lying in the checkout (CI's clone has its .venv inside it).
  listing = subprocess.run("git archive --format=tar HEAD | tar -t", shell=True, cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
  assert {"setup.py", "README.md", "wavlm_jax/train.py", "configs/tiny.py", "launch/tpu.sh"} <= set(listing)
  assert not [f for f in listing if f.startswith((".venv/", "runs/", "bench/results/", "build/", "dist/"))
              or f.endswith((".array_record", ".npz", ".pt", ".safetensors", ".flac", ".wav"))]


@pytest.mark.slow
def test_local_launcher_restarts_a_preempted_two_host_run_until_finished(espeak_data_dir, phone_labels, tmp_path):
  # The pod path rehearsed with local processes: two hosts, SIGTERM to one of them mid-run (a preempted
  # worker), both save the same step and stop; the launcher's restart logic starts both again, they
  # resume from the checkpoint and finish; one model directory at the end.
  workdir = tmp_path / "run"
  launcher = subprocess.Popen(
      ["bash", "launch/local.sh", "--processes", "2", "--cpu-devices", "4", "--restarts", "2", "--",
       "--config", "configs/tiny.py", "--workdir", str(workdir), f"--config.data.data_dir={espeak_data_dir}",
       f"--config.data.labels={phone_labels}", "--config.data.crop_seconds=1.0", "--config.data.min_seconds=0.5",
       "--config.data.mix_prob=0.0", "--config.total_steps=24", "--config.log_every=1",
       "--config.checkpoint.every_steps=100", "--config.checkpoint.preemption_check_every=4"],
      cwd=REPO, env=dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.is_file() and any(
      json.loads(line)["step"] >= 2 for line in metrics.read_text().splitlines() if line)):
    time.sleep(0.05)
  hosts = subprocess.run(["pgrep", "-f", f"wavlm_jax.train .*--workdir {workdir}"], capture_output=True,
                         text=True).stdout.split()
  assert len(hosts) == 2, hosts
  os.kill(int(hosts[1]), signal.SIGTERM)  # one host only
  out, _ = launcher.communicate(timeout=600)
  assert launcher.returncode == 0, out[-4000:]
  assert "is 'preempted' (exit status 0): restart 1 of at most 2" in out, out[-4000:]
  assert re.search(rf"resumed from {re.escape(str(workdir))}/checkpoints at step (4|8|12|16|20)\b", out), out[-4000:]
  assert f"{workdir} finished after 1 restart(s)" in out
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["step"] == 24
  steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
  assert set(steps) == set(range(1, 25))  # every step logged, none lost across the restart
  assert (workdir / "model" / "config.json").is_file() and len(list(workdir.glob("model*"))) == 1


def _fake_bin(tmp_path, name, body):
  path = tmp_path / "bin" / name
  path.parent.mkdir(exist_ok=True)
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)


def test_tpu_launcher_recreates_a_reclaimed_slice_and_restarts_until_finished(tmp_path):
  # gcloud stands in: the first training attempt ends preempted and the slice is reclaimed, the second
  # finishes. The launcher must re-create the slice, ship and install again, rerun, then delete it.
  calls, summary = tmp_path / "calls", tmp_path / "summary.json"
  _fake_bin(tmp_path, "gcloud", f'''
echo "$*" >> {calls}
case "$*" in
  *"tpu-vm ssh"*wavlm_jax.train*)
    if [[ $(grep -c wavlm_jax.train {calls}) -eq 1 ]]; then echo '{{"status": "preempted"}}' > {summary}; exit 255
    else echo '{{"status": "finished"}}' > {summary}; fi ;;
  *"storage cat"*) cat {summary} ;;
  *describe*) if [[ $(grep -c wavlm_jax.train {calls}) -eq 1 ]]; then echo PREEMPTED; else echo READY; fi ;;
esac
''')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path))
  out = subprocess.run(["bash", "launch/tpu.sh", "--name", "pod", "--zone", "z", "--type", "v5litepod-16",
                        "--config", "configs/wavlm_base.py", "--workdir", "gs://bucket/run", "--max-restarts", "2"],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  log = calls.read_text().splitlines()

  def kind(line):
    words = line.split()
    if words[:2] == ["storage", "cat"]:
      return "storage cat"
    if words[3] == "ssh":
      return "train" if "wavlm_jax.train" in line else "install" if "pip install" in line else "ssh"
    return words[3]  # compute tpus tpu-vm VERB

  kinds = [kind(line) for line in log]
  assert kinds == ["create", "scp", "install", "train", "storage cat", "describe", "delete", "create", "scp",
                   "install", "train", "storage cat", "delete"], log
  assert "restart 1 of at most 2" in out.stderr
  assert list(tmp_path.glob("wavlm_jax-*.tar.gz"))  # the archive that was shipped


def test_slurm_script_restarts_after_a_host_failure_and_requeues_after_preemption(tmp_path):
  # srun stands in for the training step: it fails once (a host died, no summary), then reports the
  # run preempted by the time limit; the script restarts once, then requeues the job and exits.
  calls, workdir = tmp_path / "calls", tmp_path / "run"
  workdir.mkdir()
  _fake_bin(tmp_path, "srun", f'''
echo srun >> {calls}
if [[ $(grep -c srun {calls}) -eq 1 ]]; then exit 1; fi
echo '{{"status": "preempted"}}' > {workdir}/summary.json
''')
  _fake_bin(tmp_path, "scontrol", f'echo "scontrol $*" >> {calls}\n')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="42",
             PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "configs/wavlm_base.py", str(workdir)], cwd=REPO,
                       env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert calls.read_text().splitlines() == ["srun", "srun", "scontrol requeue 42"]
  assert "restart 1 of at most 3" in out.stderr and "requeueing job 42" in out.stderr
