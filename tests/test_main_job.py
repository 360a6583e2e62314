"""The main job exactly as the README runs it (on a fresh data dir): builds the corpus, makes MFCC k-means
labels, pretrains with mixing, writes checkpoints, TensorBoard logs, metrics.jsonl and a model
directory; a second command continues from the checkpoint."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_main_job_learns_and_continues(main_job):
  tmp_path, env, cmd, first = main_job.tmp, main_job.env, main_job.cmd, main_job.first  # conftest.py
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["step"] == 200
  assert summary["final_acc_masked"] > 5 * summary["chance_accuracy"], summary
  assert summary["final_loss"] < summary["first_loss"] - 1.0, summary
  assert (tmp_path / "tok" / "labels" / "train" / "meta.json").is_file()
  assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
  assert (tmp_path / "run" / "model" / "config.json").is_file()
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert {"loss", "acc_masked", "acc_unmasked", "learning_rate", "grad_norm", "param_norm", "update_norm",
          "target_entropy", "audio_seconds_per_second", "steps_per_second", "mfu"} <= set(rows[-1])
  second = subprocess.run(cmd + ["--config.total_steps=240"], env=env, cwd=REPO, capture_output=True, text=True)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert "resumed from" in second.stdout and "at step 200" in second.stdout
  assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 240
