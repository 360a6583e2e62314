"""Test setup: 8 fake CPU devices (set before JAX is imported) and fp32 matmuls at full precision."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # never probe for accelerators (libtpu may be installed)
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # libtpu's lockfile: tests and AOT runs may overlap

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dirs(tmp_path_factory):
  """No test reads or writes a data dir outside its own temporary directories: whatever a user's
  $WAVLM_DATA_DIR, $TFDS_DATA_DIR or ~/tensorflow_datasets hold is never seen (a fresh machine)."""
  saved = {k: os.environ.get(k) for k in ("WAVLM_DATA_DIR", "TFDS_DATA_DIR")}
  for key in saved:
    os.environ[key] = str(tmp_path_factory.mktemp(key.lower()))
  yield
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


@pytest.fixture(scope="session")
def espeak_data_dir(tmp_path_factory):
  """A TFDS data dir holding the `espeak_speech/tiny` corpus, built once per test session."""
  from wavlm_jax.data import builders

  data_dir = tmp_path_factory.mktemp("tfds")
  builders.prepare("espeak_speech/tiny", str(data_dir))
  return str(data_dir)


@pytest.fixture(scope="session")
def phone_labels(espeak_data_dir, tmp_path_factory):
  """Phone targets at 100 Hz straight from the corpus alignment (supervision-guided style labels)."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import labels as labels_lib

  path = tmp_path_factory.mktemp("labels") / "phones"
  builder = tfds.builder("espeak_speech/tiny", data_dir=espeak_data_dir)
  classes = len(builder.info.metadata["phone_inventory"])
  with labels_lib.LabelStoreWriter(path, label_rate=100, num_classes=classes) as writer:
    src = tfds.data_source("espeak_speech/tiny", split="train", data_dir=espeak_data_dir)
    for i in range(len(src)):
      ex = src[i]
      writer.add(ex["id"].decode(), ex["phone_alignment"])
  return str(path)


@pytest.fixture(scope="session")
def main_job(tmp_path_factory):
  """The README's main job (its first 200 steps) run once per session as a user runs it, on a fresh data
  dir; tests/test_main_job.py checks it and continues it, fine-tuning starts from a copy of its model."""
  import shutil
  import subprocess
  import sys
  import types
  from pathlib import Path

  repo = Path(__file__).resolve().parents[1]
  tmp = tmp_path_factory.mktemp("main_job")
  env = dict(os.environ, PYTHONPATH=str(repo), WAVLM_DATA_DIR=str(tmp / "tfds"))
  cmd = [sys.executable, "-m", "wavlm_jax.train", "--config", "configs/tiny.py", "--workdir", str(tmp / "run"),
         f"--config.tokenizer.workdir={tmp / 'tok'}", "--config.log_every=20"]
  first = subprocess.run(cmd + ["--config.total_steps=200"], env=env, cwd=repo, capture_output=True, text=True)
  model = tmp / "pretrained_200_steps"
  if first.returncode == 0:
    shutil.copytree(tmp / "run" / "model", model)
  return types.SimpleNamespace(tmp=tmp, env=env, cmd=cmd, repo=repo, first=first, model=model)
