"""The `data` block of a run config: every field of the input pipeline with its default. Cheap to import
(ml_collections only), so that recipes build configs without loading TFDS, TensorFlow or Grain."""

from __future__ import annotations

from typing import Any

import ml_collections


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `data` block of a run config (locked)."""
  c = ml_collections.ConfigDict()
  c.dataset = "espeak_speech/tiny"  # a TFDS name: our builders or a catalog dataset prepared by the user
  c.data_dir = ""  # "" = $WAVLM_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (data/paths.py)
  c.split = "train"
  # Or several corpora read as one stream: ((dataset, split, weight[, {min_seconds, max_seconds, labels}]),
  # ...); weights 0: by hours (data/mixture.py). dataset/split are then unused.
  c.mixture = ()
  c.prepare = True  # build the embedded eSpeak corpus if absent
  c.audio_key = "audio"  # feature names (catalog datasets differ: librispeech uses "speech")
  c.id_key = "id"
  c.batching = "duration"  # "duration": buckets, no padding (pretraining); "fixed": crop or pad to crop_seconds;
  # "padded": whole utterances padded to a few bucket lengths, none longer than crop_seconds (fine-tuning)
  c.crop_seconds = 4.0  # the longest crop (fairseq's max_sample_size)
  c.min_seconds = 2.0  # shorter utterances are never used
  c.batch_size = 8  # global rows at crop_seconds; duration batching keeps batch_size x crop_seconds of audio
  c.num_buckets = 8  # duration batching: crop lengths chosen from the corpus' length histogram
  c.bucket_seconds = ()  # or these crop lengths (seconds), instead of choosing
  c.normalize = False  # per-utterance waveform normalisation (after mixing)
  c.seed = 0
  c.labels = ""  # a label store directory ("" = no labels)
  c.transcript_key = ""  # fine-tuning: the transcript field ("" = the vocabulary's: text or phonemes)
  c.transcripts = ""  # fine-tuning: a JSON-lines file of {"id": ..., FIELD: ...}: only these utterances of the
  # split, with these transcripts (noisy student's labelled + pseudo-labelled set; data/pipeline.py)
  # WavLM denoising (docs/objectives.md#utterance-mixing).
  c.mix_prob = 0.0
  c.noise_prob = 0.0
  c.noise = "synthetic"  # "synthetic" or a prepared noise dataset name, e.g. "noise_dir/musan"
  c.noise_seconds = 600.0  # at most this much noise audio is held in memory
  c.max_mix_fraction = 0.5
  c.utterance_snr = (-5.0, 5.0)
  c.noise_snr = (-5.0, 20.0)
  c.reference_mixing = False
  # Throughput.
  c.num_threads = 4
  c.prefetch = 4
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"unknown data config field {key!r}")
    c[key] = value
  c.lock()
  return c
