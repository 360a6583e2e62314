"""Dataset builders: the embedded eSpeak corpus (deterministic, aligned, speaker-disjoint unseen split)
and the folder builders, which skip and count broken files instead of dying."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from wavlm_jax.data import builders, espeak


def _files_digest(root: Path) -> dict:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*.array_record*"))}


def test_espeak_corpus_features_and_alignment(espeak_data_dir):
  builder = tfds.builder("espeak_speech/tiny", data_dir=espeak_data_dir)
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {"train": 70, "validation": 10, "test": 10, "test_unseen": 10}
  inventory = builder.info.metadata["phone_inventory"]
  assert inventory[0] == "sil" and len(inventory) > 30 and len(set(inventory)) == len(inventory)
  train = tfds.data_source("espeak_speech/tiny", split="train", data_dir=espeak_data_dir)
  total = 0
  for i in range(len(train)):
    ex = train[i]
    n = len(ex["audio"])
    total += n
    assert ex["audio"].dtype == np.int16 and n > 16000
    assert len(ex["phone_alignment"]) == n // 160  # one phone per 10 ms frame
    assert ex["phone_alignment"].max() < len(inventory)
    assert ex["text"] and ex["phonemes"] and ex["language"] == b"en-us"
    # Speech is where the alignment says it is: frames labelled silence are much quieter.
    frames = ex["audio"][: n // 160 * 160].astype(np.float64).reshape(-1, 160)
    energy = np.mean(frames ** 2, axis=1)
    sil = ex["phone_alignment"] == 0
    if sil.any() and (~sil).any():
      assert energy[sil].mean() < energy[~sil].mean()
  assert 4 * 60 < total / 16000 < 12 * 60  # ~6 minutes of audio


def test_unseen_speakers_are_disjoint(espeak_data_dir):
  speakers = {}
  for split in ("train", "validation", "test", "test_unseen"):
    src = tfds.data_source("espeak_speech/tiny", split=split, data_dir=espeak_data_dir)
    speakers[split] = {src[i]["speaker"] for i in range(len(src))}
  seen = speakers["train"] | speakers["validation"] | speakers["test"]
  assert not seen & speakers["test_unseen"]
  assert len(speakers["train"]) >= 8


@pytest.mark.slow
def test_espeak_build_is_deterministic(espeak_data_dir, tmp_path):
  builders.prepare("espeak_speech/tiny", str(tmp_path))
  a = _files_digest(Path(espeak_data_dir) / "espeak_speech")
  b = _files_digest(tmp_path / "espeak_speech")
  assert a and a == b


def _write_broken_folder(root: Path):
  rng = np.random.default_rng(0)
  (root / "spk1").mkdir(parents=True)
  (root / "spk2" / "deep").mkdir(parents=True)
  sf.write(root / "spk1" / "good.wav", 0.1 * rng.standard_normal(48000).astype(np.float32), 16000)
  sf.write(root / "spk2" / "stereo44k.flac", 0.1 * rng.standard_normal((88200, 2)).astype(np.float32), 44100)
  sf.write(root / "spk2" / "deep" / "ogg.ogg", 0.1 * rng.standard_normal(24000).astype(np.float32), 8000)
  sf.write(root / "spk1" / "empty.wav", np.zeros(0, np.float32), 16000)
  bad = 0.1 * rng.standard_normal(16000).astype(np.float32)
  bad[100] = np.nan
  sf.write(root / "spk1" / "nan.wav", bad, 16000, subtype="FLOAT")
  sf.write(root / "spk1" / "short.wav", np.zeros(800, np.float32), 16000)
  (root / "spk2" / "garbage.wav").write_bytes(b"this is not audio")
  (root / "notes.txt").write_text("ignored: not audio")


def test_audio_dir_skips_and_counts_broken_files(tmp_path):
  _write_broken_folder(tmp_path / "audio")
  builders.prepare_folder("audio_dir", tmp_path / "audio", str(tmp_path / "tfds"), name="mine")
  src = tfds.data_source("audio_dir/mine", split="train", data_dir=str(tmp_path / "tfds"))
  got = {src[i]["id"].decode(): src[i]["audio"] for i in range(len(src))}
  assert sorted(got) == ["spk1/good", "spk2/deep/ogg", "spk2/stereo44k"]
  assert len(got["spk2/stereo44k"]) == 32000  # 2 s at 44.1 kHz stereo -> 16 kHz mono
  assert len(got["spk2/deep/ogg"]) == 48000  # 3 s at 8 kHz -> 16 kHz
  report = json.loads((tmp_path / "tfds" / "audio_dir" / "mine" / "1.0.0" / "skipped.json").read_text())
  reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
  assert report["num_skipped"] == 4
  assert reasons["empty.wav"] == "empty"
  assert "NaN" in reasons["nan.wav"]
  assert reasons["short.wav"].startswith("too short")
  assert reasons["garbage.wav"].startswith("unreadable")


def test_librispeech_layout_and_noise_dir(tmp_path):
  root = tmp_path / "LibriSpeech" / "dev-clean"
  chapter = root / "84" / "121123"
  chapter.mkdir(parents=True)
  rng = np.random.default_rng(1)
  for k in range(3):
    sf.write(chapter / f"84-121123-{k:04d}.flac", 0.1 * rng.standard_normal(20000).astype(np.float32), 16000)
  (chapter / "84-121123.trans.txt").write_text(
      "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n"
      "84-121123-0002 AT THIS MOMENT\n84-121123-0003 LISTED BUT MISSING\n")
  builders.prepare_folder("librispeech_dir", root, str(tmp_path / "tfds"), name="dev_clean")
  src = tfds.data_source("librispeech_dir/dev_clean", split="train", data_dir=str(tmp_path / "tfds"))
  rows = sorted((src[i]["id"].decode(), src[i]["text"].decode(), src[i]["speaker"].decode()) for i in range(len(src)))
  assert rows[0] == ("84-121123-0000", "GO DO YOU HEAR", "84") and len(rows) == 3
  # phonemes by eSpeak's text-to-phoneme rules: the phone names the embedded corpus' synthesis gives
  phonemes = {src[i]["id"].decode(): src[i]["phonemes"].decode() for i in range(len(src))}
  assert phonemes["84-121123-0000"] == "ɡ oʊ d uː j uː h ɪɹ"
  spoken = espeak.Espeak().synthesize("but in less than five minutes", "en-us").phones
  assert phonemes["84-121123-0001"] == " ".join(p for _, p in spoken if p != espeak.SILENCE)
  report = json.loads((tmp_path / "tfds" / "librispeech_dir" / "dev_clean" / "1.1.0" / "skipped.json").read_text())
  assert report["num_skipped"] == 1 and "listed at" in report["skipped"][0]["reason"]

  noise = tmp_path / "noise"
  (noise / "babble").mkdir(parents=True)
  (noise / "music").mkdir()
  sf.write(noise / "babble" / "a.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
  sf.write(noise / "music" / "b.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
  builders.prepare_folder("noise_dir", noise, str(tmp_path / "tfds"), name="mynoise")
  src = tfds.data_source("noise_dir/mynoise", split="train", data_dir=str(tmp_path / "tfds"))
  assert sorted(src[i]["category"].decode() for i in range(len(src))) == ["babble", "music"]


def test_missing_folder_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a directory"):
    builders.prepare_folder("audio_dir", tmp_path / "nope", str(tmp_path / "tfds"), name="x")


def test_text_to_phonemes_offline():
  # eSpeak's own transcription, no audio: the pronunciation source for phoneme targets of transcripts.
  from wavlm_jax.data import espeak

  engine = espeak.Espeak()
  assert engine.phonemes("the quick brown fox", "en-us") == "ðə kwˈɪk bɹˈaʊn fˈɑːks"
  assert engine.phonemes("bonjour", "fr") == "bɔ̃ʒˈuʁ"
