"""The tokenizer on folder datasets (no phone alignment, no validation split) through its command line, the
data dir from $WAVLM_DATA_DIR, and the tokenizer presets."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import tokenize_hidden, tokenize_mfcc
from corpora import speech as _speech
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.targets import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (relative path, seconds, sample rate, channels); the formats the builders meet in the wild.
PLAIN = (("a/utt0.wav", 1.0, 16000, 1), ("a/utt1.flac", 2.5, 16000, 1), ("b/utt2.wav", 3.0, 8000, 1),
         ("b/utt3.flac", 4.0, 16000, 2), ("utt4.flac", 6.0, 8000, 2), ("utt5.wav", 1.5, 22050, 1))
LIBRI = (("101-2001-0000", 1.2, 16000, 1), ("101-2001-0001", 3.3, 8000, 1), ("101-2001-0002", 2.0, 16000, 2),
         ("202-3002-0000", 5.5, 16000, 1), ("202-3002-0002", 4.0, 8000, 2))
LIBRI_CORRUPT = "202-3002-0001"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """A data dir holding `audio_dir/tok_plain` and `librispeech_dir/tok_ls` built from real-format files
  (WAV and FLAC, 8/16/22.05 kHz, mono and stereo, 1-6 s, one corrupt file each); built once per module."""
  import soundfile

  from wavlm_jax.data import builders, espeak

  root = tmp_path_factory.mktemp("folders")
  engine = espeak.Espeak()
  plain = root / "plain"
  for i, (rel, seconds, rate, channels) in enumerate(PLAIN):
    (plain / rel).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(plain / rel, _speech(engine, i, seconds, rate, channels), rate)
  (plain / "b" / "broken.flac").write_bytes(b"fLaC this is not really a flac file" * 10)
  libri = root / "LibriSpeech"
  for i, (uid, seconds, rate, channels) in enumerate(LIBRI):
    speaker, chapter, _ = uid.split("-")
    (libri / speaker / chapter).mkdir(parents=True, exist_ok=True)
    soundfile.write(libri / speaker / chapter / f"{uid}.flac", _speech(engine, i, seconds, rate, channels), rate)
  (libri / "202" / "3002" / f"{LIBRI_CORRUPT}.flac").write_bytes(b"\x00\x01garbage" * 100)
  for speaker, chapter in (("101", "2001"), ("202", "3002")):
    uids = sorted(p.stem for p in (libri / speaker / chapter).glob("*.flac"))
    (libri / speaker / chapter / f"{speaker}-{chapter}.trans.txt").write_text(
        "".join(f"{u} WORDS OF UTTERANCE {u[-1]}\n" for u in uids))
  data_dir = root / "tfds"
  builders.prepare_folder("audio_dir", plain, str(data_dir), name="tok_plain")
  builders.prepare_folder("librispeech_dir", libri, str(data_dir), name="tok_ls")
  return {"data_dir": str(data_dir), "root": root}


def _env(home, data_dir):
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  return {**env, "HOME": str(home), "WAVLM_DATA_DIR": str(data_dir), "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}


def _tokenize_cli(dataset, workdir, env, *flags):
  config = os.path.join(REPO, "configs", "tokenize_mfcc.py")
  cmd = [sys.executable, "-m", "wavlm_jax.targets.tokenize", "--config", config, f"--config.dataset={dataset}",
         f"--config.workdir={workdir}", "--config.k=8", "--config.n_init=1", "--config.max_iter=20", *flags]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("dataset, expected, via_config", [
    ("audio_dir/tok_plain", {"a/utt0", "a/utt1", "b/utt2", "b/utt3", "utt4", "utt5"}, True),
    ("librispeech_dir/tok_ls", {u for u, *_ in LIBRI}, False),
])
def test_tokenizer_cli_on_a_folder_dataset(folders, tmp_path, dataset, expected, via_config):
  # The data dir from the config (with $WAVLM_DATA_DIR pointing elsewhere) or from $WAVLM_DATA_DIR alone.
  (tmp_path / "home").mkdir()
  env_dir = tmp_path / "elsewhere" if via_config else folders["data_dir"]
  flags = [f"--config.data_dir={folders['data_dir']}"] if via_config else []
  run = _tokenize_cli(dataset, tmp_path / "tok", _env(tmp_path / "home", env_dir), *flags)
  out = run.stdout + run.stderr
  assert run.returncode == 0, out
  assert "skipping assign split 'validation'" in out and "reporting on 'train' instead" in out
  assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "home" / "tensorflow_datasets").exists()

  import tensorflow_datasets as tfds
  store = labels_lib.LabelStore(tmp_path / "tok" / "labels" / "train")
  assert set(store.ids()) == expected and store.label_rate == 100 and store.num_classes == 8
  assert not (tmp_path / "tok" / "labels" / "validation").exists()
  source = tfds.data_source(dataset, split="train", data_dir=folders["data_dir"])
  durations = {}
  for i in range(len(source)):
    ex = source[i]
    uid, n = ex["id"].decode(), len(ex["audio"])
    labels = store[uid]
    labels_lib.check_length(uid, len(labels), n, store.label_rate)
    assert abs(len(labels) - n / 160) <= 2, uid  # MFCC: one frame per 10 ms, a 25 ms window
    assert labels.min() >= 0 and labels.max() < 8
    durations[uid] = n / 16000
  written = {rel.rsplit(".", 1)[0]: s for rel, s, *_ in PLAIN} | {u: s for u, s, *_ in LIBRI}
  for uid, seconds in durations.items():  # resampled and down-mixed to 16 kHz mono, duration kept
    assert abs(seconds - written[uid]) < 0.01, uid

  report = json.loads((tmp_path / "tok" / "report_train.json").read_text())
  assert (tmp_path / "tok" / "report_train.png").stat().st_size > 5_000
  hist = np.array(report["cluster_histogram"])
  assert len(hist) == 8 and hist.sum() == report["frames"] == sum(len(store[u]) for u in store.ids())
  p = hist[hist > 0] / hist.sum()
  assert report["histogram_entropy"] == pytest.approx(-np.sum(p * np.log2(p)))
  assert report["perplexity"] == pytest.approx(2 ** report["histogram_entropy"])
  assert report["unused_clusters"] == np.flatnonzero(hist == 0).tolist()
  assert report["num_unused_clusters"] == len(report["unused_clusters"]) == 8 - report["clusters_used"]
  assert report["largest_cluster_fraction"] == pytest.approx(hist.max() / hist.sum())
  assert report["utterances"] == len(expected) and report["audio_frame_diff_max"] <= 2
  assert report["phone_alignment"] is False and report["pnmi"] is None and report["phone_purity"] is None
  assert "need a phone alignment" in report["note"] and "need a phone alignment" in out
  assert report["split"] == "train" and report["dataset"] == dataset
  for name in ("code entropy bits", "code perplexity", "unused clusters", "largest cluster"):
    assert name in out


def test_a_missing_fit_split_is_a_clear_error(folders, monkeypatch, tmp_path):
  monkeypatch.setenv("WAVLM_DATA_DIR", folders["data_dir"])
  cfg = tokenize_mfcc.get_config("tiny")
  cfg.dataset, cfg.workdir, cfg.fit_split = "audio_dir/tok_plain", str(tmp_path / "tok"), "validation"
  with pytest.raises(tokenize.MissingSplit) as e:
    tokenize.run(cfg, ("fit",))
  for part in ("'validation'", "audio_dir/tok_plain", folders["data_dir"], "['train']"):
    assert part in str(e.value)
  cfg.dataset = "audio_dir/not_prepared"
  cfg.fit_split = "train"
  with pytest.raises(tokenize.MissingSplit, match="no split of it is prepared"):
    tokenize.run(cfg, ("fit",))


@pytest.mark.slow
def test_report_on_the_espeak_corpus_with_the_data_dir_from_the_environment(espeak_data_dir, monkeypatch, tmp_path,
                                                                            capsys):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  monkeypatch.setenv("WAVLM_DATA_DIR", espeak_data_dir)
  cfg = tokenize_mfcc.get_config("tiny")
  assert cfg.data_dir == ""
  cfg.workdir, cfg.k, cfg.n_init = str(tmp_path / "tok"), 16, 1
  cfg.fit_split, cfg.assign_splits = "validation", ("validation",)  # the small split: fast
  tokenize.run(cfg)
  out = capsys.readouterr().out
  assert "PNMI" in out and "need a phone alignment" not in out
  report = json.loads((tmp_path / "tok" / "report_validation.json").read_text())
  assert report["phone_alignment"] is True and report["pnmi"] > 0.1 and report["frame_diff_max"] <= 1
  assert report["aligned_frames"] <= report["frames"] == sum(report["cluster_histogram"])
  for key in ("histogram_entropy", "perplexity", "unused_clusters", "largest_cluster_fraction",
              "audio_frame_diff_total", "phone_purity", "cluster_purity", "h_ref", "mutual_information"):
    assert key in report
  assert not (tmp_path / "home" / "tensorflow_datasets").exists()


def test_presets():
  for arg, dataset in (("tiny", "espeak_speech/tiny"), ("base", "espeak_speech/base"),
                       ("ls960", "librispeech_dir/ls960")):
    assert tokenize_mfcc.get_config(arg).dataset == tokenize_hidden.get_config(arg).dataset == dataset
  mfcc, hidden = tokenize_mfcc.get_config("ls960"), tokenize_hidden.get_config("ls960")
  assert (mfcc.k, hidden.k, mfcc.fit_fraction, hidden.fit_fraction) == (100, 500, 0.1, 0.1)
  assert mfcc.workdir == "runs/tokenizer/ls960_mfcc_km100" and hidden.workdir == "runs/tokenizer/ls960_hidden_km500"
  assert (mfcc.feature, hidden.feature) == ("mfcc", "hidden")
  for get_config in (tokenize_mfcc.get_config, tokenize_hidden.get_config):
    with pytest.raises(ValueError, match=r"unknown tokenizer preset 'ls100'.*'tiny', 'small', 'base', 'ls960'"):
      get_config("ls100")
