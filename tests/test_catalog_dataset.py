"""A TFDS catalog-style dataset (other feature names and split names, as the catalog's `librispeech` has:
audio under "speech", splits "train_clean100"/"dev_clean", no phone alignment) through the tokenizer
(fit, assign, report) and the pretraining input pipeline, selected by config keys alone."""

import json

import numpy as np
import tensorflow_datasets as tfds

from configs import tokenize_mfcc
from corpora import speech
from wavlm_jax import data
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.targets import tokenize

SECONDS = {"train_clean100": (1.5, 2.5, 3.0, 4.0, 5.5, 6.0, 2.2, 3.3), "dev_clean": (2.0, 3.1, 4.4)}


class CatalogSpeech(tfds.core.GeneratorBasedBuilder):
  """Stands in for a catalog dataset the user prepared with TFDS: int16 audio under "speech"."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "speech": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=16000),
        "id": tfds.features.Text(), "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SECONDS}

  def _generate_examples(self, split):
    from wavlm_jax.data import espeak

    engine = espeak.Espeak()
    for i, seconds in enumerate(SECONDS[split]):
      audio = speech(engine, i, seconds, 16000, 1)[:, 0]
      uid = f"{split}-{i}"
      yield uid, {"speech": np.round(audio * 32767).astype(np.int16), "id": uid, "text": "words"}


def test_tokenizer_and_pipeline_on_a_catalog_style_dataset(tmp_path):
  data_dir = str(tmp_path / "tfds")
  CatalogSpeech(data_dir=data_dir).download_and_prepare(file_format="array_record")
  cfg = tokenize_mfcc.get_config("tiny")
  cfg.dataset, cfg.data_dir, cfg.workdir, cfg.prepare = "catalog_speech", data_dir, str(tmp_path / "tok"), False
  cfg.audio_key, cfg.k, cfg.n_init, cfg.max_iter = "speech", 8, 1, 20
  cfg.fit_split, cfg.assign_splits, cfg.report_split = "train_clean100", ("train_clean100", "dev_clean"), "dev_clean"
  tokenize.run(cfg)
  for split, lengths in SECONDS.items():
    store = labels_lib.LabelStore(tmp_path / "tok" / "labels" / split)
    assert len(store) == len(lengths) and store.num_classes == 8
    for i, seconds in enumerate(lengths):
      assert abs(len(store[f"{split}-{i}"]) - round(seconds * 100)) <= 2  # 25 ms windows at a 10 ms hop
  report = json.loads((tmp_path / "tok" / "report_dev_clean.json").read_text())
  assert report["utterances"] == 3 and report["phone_alignment"] is False and report["perplexity"] > 1

  labels = str(tmp_path / "tok" / "labels" / "train_clean100")
  it = data.create_iterator(data.data_config(dataset="catalog_speech", data_dir=data_dir, split="train_clean100",
                                             audio_key="speech", labels=labels, crop_seconds=3.0, min_seconds=1.5,
                                             batch_size=2, num_buckets=2, prepare=False, num_threads=1))
  batch = next(it)
  rows, samples = batch["audio"].shape
  assert (rows, samples) in it.shapes() and batch["labels"].shape == (rows, samples // 160)
  assert not batch["padding_mask"].any() and np.abs(batch["audio"]).max() > 0.01
