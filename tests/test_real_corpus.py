"""A user's path beyond the embedded corpus, through the README's command lines only, on a fresh home and
data dir: a LibriSpeech-layout folder of real-format files (FLAC at 8/16/44.1 kHz, mono and stereo,
1-35 s, a corrupt and an empty file) -> prepare -> HuBERT it1 (the trainer makes MFCC labels) -> hidden-unit
tokenizer on it1's model (fit, assign, report) -> WavLM and ILS-SSL on those labels -> load_encoder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpora import write_librispeech

REPO = Path(__file__).resolve().parents[1]
# (uid, seconds, sample rate, channels): LibriSpeech's range of lengths, and the formats met in the wild.
UTTERANCES = tuple((f"{100 + i % 3}-{200 + i % 2}-{i:04d}", s, r, c) for i, (s, r, c) in enumerate(
    [(1.0, 16000, 1), (2.5, 8000, 1), (3.0, 44100, 2), (4.2, 16000, 2), (5.0, 16000, 1), (6.5, 8000, 2),
     (7.0, 44100, 1), (8.8, 16000, 1), (10.0, 16000, 1), (12.5, 8000, 1), (14.0, 16000, 2), (15.9, 16000, 1),
     (17.0, 44100, 1), (20.0, 16000, 1), (24.5, 8000, 1), (35.0, 16000, 1), (1.6, 16000, 1), (2.2, 44100, 2),
     (3.7, 16000, 1), (2.9, 8000, 1)]))
CORRUPT, EMPTY = "101-201-0901", "102-200-0902"


def _run(env, *args):
  proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, f"{args[:3]}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
  return proc.stdout + proc.stderr


@pytest.mark.slow
def test_prepare_tokenize_train_load_on_a_librispeech_layout_folder(tmp_path):
  from wavlm_jax.data import espeak

  root = write_librispeech(tmp_path / "LibriSpeech" / "train-tiny", UTTERANCES, espeak.Espeak(), corrupt=(CORRUPT,),
                           empty=(EMPTY,))
  home, data_dir = tmp_path / "home", tmp_path / "tfds"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  env |= {"HOME": str(home), "WAVLM_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
  dataset = "librispeech_dir/real"

  out = _run(env, "wavlm_jax.data.prepare", "librispeech_dir", root, "--name", "real")
  assert f"{dataset} in {data_dir}: train {len(UTTERANCES)}" in out
  skipped = json.loads(next(data_dir.glob("librispeech_dir/real/*/skipped.json")).read_text())
  assert {CORRUPT, EMPTY} <= {Path(p).stem for p in json.dumps(skipped).split('"') if p.endswith(".flac")}

  short = ["--config.total_steps=12", "--config.checkpoint.every_steps=6", "--config.log_every=6"]
  it1, tok1, tok2 = tmp_path / "it1", tmp_path / "tok_mfcc", tmp_path / "tok_hidden"
  out = _run(env, "wavlm_jax.train", "--config", "configs/hubert_base.py:it1,runlocal", "--workdir", it1,
             f"--config.data.dataset={dataset}", f"--config.tokenizer.dataset={dataset}",
             f"--config.tokenizer.workdir={tok1}", *short)
  assert "running the tokenizer" in out and "need a phone alignment" in out
  assert json.loads((it1 / "summary.json").read_text())["status"] == "finished"
  assert json.loads((tok1 / "report_train.json").read_text())["phone_alignment"] is False

  _run(env, "wavlm_jax.targets.tokenize", "--config", "configs/tokenize_hidden.py", f"--config.dataset={dataset}",
       f"--config.checkpoint={it1 / 'model'}", "--config.layer=1", "--config.k=16", "--config.n_init=1",
       f"--config.workdir={tok2}")
  report = json.loads((tok2 / "report_train.json").read_text())
  assert report["utterances"] == len(UTTERANCES) and report["clusters_used"] > 4
  labels = str(tok2 / "labels" / "train")
  assert json.loads((tok2 / "labels" / "train" / "meta.json").read_text())["label_rate"] == 50

  wavlm = tmp_path / "wavlm"  # (HuBERT it2 takes the same path as these two: a label store, no tokenizer)
  out = _run(env, "wavlm_jax.train", "--config", "configs/wavlm_base.py:runlocal", "--workdir", wavlm,
             f"--config.data.dataset={dataset}", f"--config.data.labels={labels}", *short)
  _run(env, "wavlm_jax.train", "--config", "configs/ils_ssl_base.py:runlocal", "--workdir", tmp_path / "ils",
       f"--config.data.dataset={dataset}", f"--config.data.labels={labels}", *short)
  ils = [json.loads(line) for line in (tmp_path / "ils" / "metrics.jsonl").read_text().splitlines()]
  assert {"acc_masked/layer1", "acc_masked/layer2"} <= set(ils[-1])  # one head per predicted layer
  summary = json.loads((wavlm / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["label_rate"] == 50
  rows = [json.loads(line) for line in (wavlm / "metrics.jsonl").read_text().splitlines()]
  assert all(r["padding_share"] == 0.0 and 0.2 < r["masked_fraction"] < 0.8 for r in rows)

  import wavlm_jax

  encoder = wavlm_jax.load_encoder(wavlm / "model")
  hidden = encoder.hidden_states(np.random.default_rng(0).standard_normal((2, 32000)).astype(np.float32) * 0.1)
  assert len(hidden) == 3 and hidden[-1].shape == (2, 99, 64) and np.isfinite(np.asarray(hidden[-1])).all()
  assert not (home / "tensorflow_datasets").exists() and not (REPO / "runs" / "tokenizer" / "real").exists()
