"""The pod path rehearsed on this machine against a real GCS API (fake-gcs-server, tests/gcs_emulator.py):
every program reads and writes gs:// through wavlm_jax.storage, nothing lands under ./gs: or anywhere
outside the bucket and the temporary directories, and a preempted two-host run is restarted by the
launcher's own restart logic and resumes exactly from the bucket."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import gcs_emulator

REPO = Path(__file__).resolve().parents[1]
BUCKET = "pod"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  root = tmp_path_factory.mktemp("gcs") / "objects"
  emulator = gcs_emulator.Emulator(root)
  emulator.create_bucket(BUCKET)
  yield emulator
  emulator.close()


LIBRARY_CACHES = (".cache/matplotlib/", ".keras/")  # matplotlib's font list, Keras's (TensorFlow's) config


def _outside_files(*dirs: Path) -> list[Path]:
  """Files written under `dirs` (the working directory, HOME) other than libraries' own caches."""
  return [p for d in dirs for p in d.rglob("*")
          if p.is_file() and not p.relative_to(d).as_posix().startswith(LIBRARY_CACHES)]


@pytest.fixture(scope="module")
def main_job_on_gcs(gcs, tmp_path_factory):
  """The README's main job with everything on the bucket: the data dir (the corpus is built locally and
  uploaded), the tokenizer's workdir (k-means, label stores, report) and the run's workdir. Run from an
  empty directory with an empty HOME, so that anything written locally shows."""
  tmp = tmp_path_factory.mktemp("main_job_gcs")
  cwd, home = tmp / "cwd", tmp / "home"
  cwd.mkdir()
  home.mkdir()
  env = gcs_emulator.process_env(gcs, PYTHONPATH=str(REPO), HOME=str(home), WAVLM_DATA_DIR=f"gs://{BUCKET}/data")
  cmd = [sys.executable, "-m", "wavlm_jax.train", "--config", str(REPO / "configs/tiny.py"),
         "--workdir", f"gs://{BUCKET}/run", f"--config.tokenizer.workdir=gs://{BUCKET}/tok", "--config.log_every=2",
         "--config.total_steps=8", "--config.checkpoint.every_steps=4"]
  out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
  return cwd, home, env


def test_main_job_and_tokenizer_write_everything_into_the_bucket(gcs, main_job_on_gcs):
  cwd, home, env = main_job_on_gcs
  objects = set(gcs.objects(BUCKET))
  version = "data/espeak_speech/tiny/1.0.0"
  assert {f"{version}/dataset_info.json", f"{version}/espeak_speech-train.array_record-00000-of-00001",
          f"{version}/lengths-train-audio.npy"} <= objects
  assert {"tok/kmeans.npz", "tok/kmeans.json", "tok/report_validation.json", "tok/report_validation.png"} <= objects
  for split in ("train", "validation"):
    assert {f"tok/labels/{split}/{f}" for f in ("labels.array_record", "index.json", "meta.json")} <= objects
  assert {"run/config.json", "run/summary.json", "run/metrics.jsonl", "run/model/config.json",
          "run/checkpoints/4/commit_success.txt", "run/checkpoints/8/commit_success.txt"} <= objects
  assert any(o.startswith("run/tensorboard/events.out.tfevents.") for o in objects)
  assert any(o.startswith("run/model/params/") for o in objects)
  assert not [o for o in objects if ".tmp" in o or "/." in o]  # no staging leftovers
  summary = json.loads(gcs.read(BUCKET, "run/summary.json"))
  assert summary["status"] == "finished" and summary["step"] == 8 and summary["model"] == f"gs://{BUCKET}/run/model"
  assert [json.loads(line)["step"] for line in gcs.read(BUCKET, "run/metrics.jsonl").decode().splitlines()] == \
      [1, 2, 4, 6, 8]  # the first step, then every log_every
  # Nothing on local disk: no ./gs:/..., no data dir, no caches in the empty HOME.
  assert _outside_files(cwd, home) == []

  # The model directory converts straight from the bucket (its arrays read by tensorstore through the
  # emulator) to transformers' format, as the README's last pod step does; the model dir's own destination
  # may be a bucket, PyTorch files may not.
  dst = cwd.parent / "hf"
  out = subprocess.run([sys.executable, "-m", "wavlm_jax.convert", "--to", "hf", "--src", f"gs://{BUCKET}/run/model",
                        "--dst", str(dst)], env=env, cwd=cwd, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  assert {p.name for p in dst.iterdir()} >= {"config.json", "model.safetensors"}
  out = subprocess.run([sys.executable, "-m", "wavlm_jax.convert", "--to", "hf", "--src", str(dst),
                        "--dst", f"gs://{BUCKET}/hf"], env=env, cwd=cwd, capture_output=True, text=True)
  assert out.returncode == 1 and "written locally" in out.stderr
  assert _outside_files(cwd, home) == []


def test_staged_directory_on_a_bucket_appears_whole_or_not_at_all(gcs, monkeypatch):
  import gcsfs

  from wavlm_jax import storage

  monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
  gcsfs.GCSFileSystem.clear_instance_cache()
  try:
    final = f"gs://{BUCKET}/staged/model"
    with storage.staged_directory(final, marker="config.json") as tmp:
      (tmp / "params").mkdir()
      (tmp / "params" / "a.bin").write_bytes(b"old")
      (tmp / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
      with storage.staged_directory(final, marker="config.json"):
        pass
    with pytest.raises(RuntimeError, match="crash"):  # a crash while writing: the old directory stays
      with storage.staged_directory(final, marker="config.json", overwrite=True) as tmp:
        (tmp / "config.json").write_text('{"new": 1}')
        raise RuntimeError("crash")
    assert gcs.read(BUCKET, "staged/model/config.json") == b"{}"
    with storage.staged_directory(final, marker="config.json", overwrite=True) as tmp:
      (tmp / "b.bin").write_bytes(b"new")
      (tmp / "config.json").write_text('{"new": 1}')
    assert gcs.objects(BUCKET, "staged/") == ["staged/model/b.bin", "staged/model/config.json"]
    assert storage.run_status(f"gs://{BUCKET}/staged") == "none"
  finally:
    gcsfs.GCSFileSystem.clear_instance_cache()


def test_metrics_mirror_uploads_only_what_was_appended(gcs, monkeypatch):
  import gcsfs

  from wavlm_jax import storage

  monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
  gcsfs.GCSFileSystem.clear_instance_cache()
  try:
    dest = f"gs://{BUCKET}/mirror"
    mirror = storage.Mirror(dest, every_seconds=0)
    sent, lines = [], []
    for step in range(1, 41):  # a run's metrics.jsonl, one line per logged step
      lines.append(json.dumps({"step": step, "loss": round(1 / step, 6), "lr": 1e-4}).ljust(60) + "\n")
      with open(mirror.local / "metrics.jsonl", "a") as f:
        f.write(lines[-1])
      before = mirror.bytes_uploaded
      assert mirror.sync()
      sent.append(mirror.bytes_uploaded - before)
    assert sent == [len(lines[0])] * 40  # constant per logged step, not the whole file again
    assert gcs.read(BUCKET, "mirror/metrics.jsonl") == "".join(lines).encode()
    assert gcs.objects(BUCKET, "mirror/") == ["mirror/metrics.jsonl"]  # the appended parts are gone
    mirror.close()
    resumed = storage.Mirror(dest, resume=("metrics.jsonl",), every_seconds=0)  # a resumed run appends
    with open(resumed.local / "metrics.jsonl", "a") as f:
      f.write("last\n")
    resumed.close()
    assert gcs.read(BUCKET, "mirror/metrics.jsonl") == ("".join(lines) + "last\n").encode()
    assert resumed.bytes_uploaded == len("last\n")
  finally:
    gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.mark.slow
def test_local_launcher_restarts_a_preempted_two_host_run_from_the_bucket(gcs, main_job_on_gcs, tmp_path):
  # The pod path rehearsed with local processes: two hosts read the corpus and labels from the bucket and
  # write one workdir there; SIGTERM to one of them mid-run (a preempted worker), both save the same step
  # and stop; the launcher's restart logic (it reads summary.json from the bucket) starts both again, they
  # resume from the bucket's checkpoint and finish; one model directory at the end, nothing written locally.
  _, home, env = main_job_on_gcs
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {**env, "PYTHON": sys.executable}

  def local_sh(workdir, restarts):
    return ["bash", str(REPO / "launch/local.sh"), "--processes", "2", "--cpu-devices", "4", "--restarts",
            str(restarts), "--", "--config", str(REPO / "configs/tiny.py"), "--workdir", workdir,
            f"--config.data.labels=gs://{BUCKET}/tok/labels/train", "--config.data.crop_seconds=1.0",
            "--config.data.min_seconds=0.5", "--config.data.mix_prob=0.0", "--config.total_steps=24",
            "--config.log_every=1", "--config.checkpoint.every_steps=100",
            "--config.checkpoint.preemption_check_every=4"]

  reference = subprocess.run(local_sh(f"gs://{BUCKET}/reference", 0), cwd=cwd, env=env, capture_output=True, text=True)
  assert reference.returncode == 0, reference.stdout[-4000:]
  workdir = f"gs://{BUCKET}/rehearsal"
  launcher = subprocess.Popen(local_sh(workdir, 2), cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
  lines = []
  try:
    for line in launcher.stdout:  # host 0's progress lines: preempt once step 2 is done
      lines.append(line)
      if re.match(r"step +[2-9]/24", line):
        break
    hosts = subprocess.run(["pgrep", "-f", f"wavlm_jax.train .*--workdir {workdir}"], capture_output=True,
                           text=True).stdout.split()
    assert len(hosts) == 2, "".join(lines)[-4000:]
    os.kill(int(hosts[1]), signal.SIGTERM)  # one host only
    rest, _ = launcher.communicate(timeout=600)
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
  out = "".join(lines) + rest
  assert launcher.returncode == 0, out[-4000:]
  assert "is 'preempted' (exit status 0): restart 1 of at most 2" in out, out[-4000:]
  assert re.search(rf"resumed from {re.escape(workdir)}/checkpoints at step (4|8|12|16|20)\b", out), out[-4000:]
  assert f"{workdir} finished after 1 restart(s)" in out
  summary = json.loads(gcs.read(BUCKET, "rehearsal/summary.json"))
  assert summary["status"] == "finished" and summary["step"] == 24
  rows = [json.loads(line) for line in gcs.read(BUCKET, "rehearsal/metrics.jsonl").decode().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, 25))  # every step logged once, none lost across the restart
  # Exact resume: the interrupted run's losses are the uninterrupted run's, bit for bit, step for step.
  uninterrupted = [json.loads(line) for line in gcs.read(BUCKET, "reference/metrics.jsonl").decode().splitlines()]
  assert [r["loss"] for r in rows] == [r["loss"] for r in uninterrupted]
  objects = gcs.objects(BUCKET, "rehearsal/")
  # One checkpoint per saved step, written by both hosts together (each its own shard files), not twice.
  saved = sorted({int(o.split("/")[2]) for o in objects if o.startswith("rehearsal/checkpoints/")})
  assert saved and saved[-1] == 24
  for step in saved:
    assert objects.count(f"rehearsal/checkpoints/{step}/_CHECKPOINT_METADATA") == 1
    assert {f"rehearsal/checkpoints/{step}/state/ocdbt.process_{p}/manifest.ocdbt" for p in (0, 1)} <= set(objects)
  models = {o.split("/")[1] for o in objects if o.split("/")[1].startswith(("model", ".model"))}
  assert models == {"model"} and "rehearsal/model/config.json" in objects
  assert _outside_files(cwd, home) == []
