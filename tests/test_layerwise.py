"""Layer-wise analysis (`python -m wavlm_jax.analysis.layerwise`): labels at the model's frame rate, and
the command line on a fresh home writing one entry per hidden state, with PNMI, and its plot."""

import json
import os
import subprocess
import sys

import numpy as np
from test_probe import REPO, shared_setup

from wavlm_jax.probing import tasks


def test_phone_labels_take_every_second_10ms_label():
  align = [np.arange(10, dtype=np.int32), np.array([7, 7, 8], np.int32)]
  frames = tasks.phone_frames(align, [5, 3], label_rate=100, frame_rate=50)
  np.testing.assert_array_equal(frames[0], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(frames[1], [7, 8, -1])  # past the alignment's end: no label


def test_cli_layerwise_end_to_end_with_pnmi_on_a_fresh_home(tmp_path_factory, espeak_data_dir, tmp_path):
  model_dir, workdir = shared_setup(tmp_path_factory, espeak_data_dir)
  home = tmp_path / "home"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("WAVLM_DATA_DIR", "TFDS_DATA_DIR")}
  env |= {"HOME": str(home), "PYTHONPATH": str(REPO)}
  proc = subprocess.run([sys.executable, "-m", "wavlm_jax.analysis.layerwise", "--model", str(model_dir),
                         "--data-dir", espeak_data_dir, "--workdir", str(workdir), "--steps", "60", "--pnmi",
                         "--clusters", "20", "--length-levels", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads((workdir / "layerwise.json").read_text())
  states = result["hidden_states"]
  assert [s["hidden_state"] for s in states] == [0, 1, 2]  # num_layers + 1 entries
  for s in states:
    assert 0 <= s["phone_accuracy"] <= 1 and 0 <= s["speaker_accuracy"] <= 1 and 0 < s["phone_PNMI"] < 1
  # A random model's frames still carry phone information: the linear probe beats the majority phone.
  assert max(s["phone_accuracy"] for s in states) > result["chance"]["phone accuracy"]
  assert result["chance"]["speaker accuracy"] == 1 / 14 and result["clusters"] == 20
  assert (workdir / "layerwise.png").read_bytes()[:4] == b"\x89PNG"
  assert "phone PNMI" in proc.stdout and "speaker accuracy" in proc.stdout
