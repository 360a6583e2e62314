"""The tokenizer: MFCC features, sharded k-means, label stores and target-quality metrics, end to end on
the embedded corpus."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import tokenize_mfcc
from wavlm_jax.models import directory
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm
from wavlm_jax.targets import features, kmeans, quality, tokenize


def test_mfcc_shape_and_properties():
  rng = np.random.default_rng(0)
  x = 0.1 * rng.standard_normal(16000).astype(np.float32)
  f = features.mfcc(x)
  assert f.shape == ((16000 - 400) // 160 + 1, 39) and f.dtype == np.float32
  assert features.mfcc(np.zeros(300, np.float32)).shape == (0, 39)
  # Louder input shifts only c0 (log energy enters c0 through the DCT's constant row).
  g = features.mfcc(4 * x)
  assert np.allclose(g[:, 1:13], f[:, 1:13], atol=1e-3) and (g[:, 0] > f[:, 0]).all()
  # A pure tone puts its energy in the Kaldi mel bin around its frequency.
  t = np.arange(16000) / 16000
  banks = features._kaldi_mel_banks()
  for hz in (300, 1000, 3000):
    spec = np.abs(np.fft.rfft(np.sin(2 * np.pi * hz * t[:400]) * np.hanning(400), 512)) ** 2
    centre = 700 * (np.exp((np.arange(1, 24) * (1127 * np.log1p(8000 / 700) - 1127 * np.log1p(20 / 700)) / 24
                            + 1127 * np.log1p(20 / 700)) / 1127) - 1)
    assert abs(centre[np.argmax(banks @ spec[:256])] - hz) < 0.25 * hz


def test_deltas_of_a_ramp():
  ramp = np.arange(20, dtype=np.float64)[:, None] * np.array([[1.0, 2.0]])
  d = features.deltas(ramp)
  np.testing.assert_allclose(d[2:-2], np.tile([1.0, 2.0], (16, 1)))
  np.testing.assert_allclose(features.deltas(d)[4:-4], 0.0, atol=1e-12)


def _blobs(n=20000, k=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  centres = 6.0 * rng.standard_normal((k, d))
  labels = rng.integers(0, k, n)
  return (centres[labels] + rng.standard_normal((n, d))).astype(np.float32), centres


def test_kmeans_recovers_blobs_and_is_deterministic():
  x, centres = _blobs()
  a = kmeans.fit(x, 16, seed=1, n_init=4)  # greedy k-means++ lands in a poorer optimum ~1/3 of the time here
  b = kmeans.fit(x, 16, seed=1, n_init=4)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  assert a.inertia / len(x) < 1.2 * x.shape[1]  # ~d: unit-variance noise around the true centres
  nearest = np.min(np.linalg.norm(a.centroids[:, None] - centres[None], axis=-1), axis=1)
  assert nearest.max() < 0.5
  brute = np.argmin(((x[:, None] - a.centroids[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(a.assign(x), brute)
  assert jax.device_count() == 8  # the points really were sharded over 8 devices


def test_empty_clusters_are_reseeded():
  x, _ = _blobs(n=4000, k=4)
  c = np.repeat(x[:1], 4, axis=0)  # four identical centroids: three clusters start empty
  xs, ws = kmeans._shard_points(x, kmeans._mesh())
  new, _, empty = kmeans._lloyd_step(xs, ws, jax.numpy.asarray(c))
  assert int(empty) == 3
  assert len(np.unique(np.asarray(new), axis=0)) == 4


def test_streaming_matches_in_memory_and_roundtrip(tmp_path):
  x, _ = _blobs(n=12000, k=8, seed=2)
  full = kmeans.fit(x, 8, seed=0, n_init=1)
  streamed = kmeans.fit_streaming(lambda: (x[i:i + 2500] for i in range(0, len(x), 2500)), 8, seed=0,
                                  max_iter=50, init_points=5000)
  assert streamed.inertia <= 1.05 * full.inertia
  streamed.provenance["feature"] = "test"
  streamed.save(tmp_path / "km")
  loaded = kmeans.KMeans.load(tmp_path / "km")
  np.testing.assert_array_equal(loaded.centroids, streamed.centroids)
  assert loaded.provenance["feature"] == "test" and loaded.provenance["streaming"]


def test_quality_invariants():
  rng = np.random.default_rng(0)
  ref = rng.integers(0, 40, 200_000)
  acc = quality.QualityAccumulator(40, 40)
  acc.add(ref, ref)
  q = acc.result()
  assert q.pnmi == pytest.approx(1.0) and q.phone_purity == pytest.approx(1.0) and q.cluster_purity == pytest.approx(1.0)
  acc = quality.QualityAccumulator(40, 100)
  acc.add(ref, rng.integers(0, 100, 200_000))
  assert acc.result().pnmi < 0.01
  acc = quality.QualityAccumulator(40, 100)
  acc.add(ref[:100], rng.integers(0, 100, 97))
  assert acc.result().frame_diff_total == 3 and acc.result().frames == 97
  hist = np.zeros(10, np.int64)
  hist[0] = 80
  hist[1] = 20
  warnings = quality.degenerate_warnings(hist, 10)
  assert any("80%" in w for w in warnings) and any("only 2 of 10" in w for w in warnings)


def test_code_distribution_without_a_reference():
  codes = quality.CodeAccumulator(8, label_rate=50)
  codes.add(np.array([0, 1, 2, 3]), 4 * 320)  # the expected 4 frames at 50 Hz
  codes.add(np.array([0, 1, 2, 3, 0, 1]), 9 * 320)  # 3 frames short
  d = codes.result()
  assert (d.frames, d.utterances, d.audio_frame_diff_total, d.audio_frame_diff_max) == (10, 2, 3, 3)
  assert d.unused_clusters == [4, 5, 6, 7] and d.num_unused_clusters == 4 and d.clusters_used == 4
  assert (d.largest_cluster, d.largest_cluster_fraction) == (0, 0.3)
  p = np.array([3, 3, 2, 2]) / 10
  assert d.histogram_entropy == pytest.approx(-np.sum(p * np.log2(p)))
  assert d.perplexity == pytest.approx(2 ** d.histogram_entropy)
  uniform = quality.code_distribution(np.full(16, 5))
  assert uniform.histogram_entropy == pytest.approx(4.0) and uniform.perplexity == pytest.approx(16.0)
  with pytest.raises(ValueError, match="outside"):
    codes.add(np.array([8]), 320)
  # Without a reference the report says what it lacks; with one, the code figures agree with the joint's.
  report = quality.report_dict(d, note="needs a phone alignment")
  assert report["pnmi"] is None and report["note"] == "needs a phone alignment" and not report["phone_alignment"]
  acc = quality.QualityAccumulator(3, 8)
  acc.add(np.array([0, 1, 2, 0]), np.array([0, 1, 2, 3]))
  q = acc.result()
  joint_codes = quality.code_distribution(acc.joint.sum(axis=0))
  assert q.histogram_entropy == joint_codes.histogram_entropy and q.clusters_used == joint_codes.clusters_used
  assert quality.report_dict(joint_codes, q)["aligned_frames"] == 4


@pytest.mark.slow
def test_tokenize_end_to_end_on_the_embedded_corpus(espeak_data_dir, tmp_path, capsys):
  cfg = tokenize_mfcc.get_config("tiny")
  cfg.data_dir, cfg.workdir, cfg.n_init = espeak_data_dir, str(tmp_path / "tok"), 1
  tokenize.run(cfg)
  out = capsys.readouterr().out
  assert "PNMI" in out and "WARNING" not in out
  report = json.loads((tmp_path / "tok" / "report_validation.json").read_text())
  assert (tmp_path / "tok" / "report_validation.png").stat().st_size > 10_000
  assert report["frame_diff_max"] <= 1  # label rate and alignment agree
  # Random clusters with the same histogram on the same frames: the MFCC units must be far better.
  store = labels_lib.LabelStore(tmp_path / "tok" / "labels" / "validation")
  assert store.label_rate == 100 and store.num_classes == 100 and store.provenance["feature"] == "mfcc"
  joint = np.array(report["cluster_histogram"])
  assert report["pnmi"] > 0.3 and report["clusters_used"] > 50 and joint.sum() == report["frames"]
  counts = np.array(report["phone_cluster_counts"])  # what notebook 03 draws; it gives the same figures
  assert counts.shape == (len(report["phone_names"]), 100) and counts.sum() == report["aligned_frames"]
  assert quality.quality_from_joint(counts).pnmi == pytest.approx(report["pnmi"], abs=1e-12)
  rng = np.random.default_rng(0)
  acc = quality.QualityAccumulator(100, 100)
  import tensorflow_datasets as tfds
  src = tfds.data_source("espeak_speech/tiny", split="validation", data_dir=espeak_data_dir)
  for i in range(len(src)):
    ex = src[i]
    hyp = store[ex["id"].decode()]
    acc.add(tokenize.reference_at_rate(ex["phone_alignment"], 100, len(hyp)), rng.permutation(hyp))
  assert report["pnmi"] > 3 * acc.result().pnmi


def test_hidden_features_are_unnormalised_layer_outputs(tmp_path):
  config = config_lib.model_card("tiny", layer_norm_first=True, num_layers=3)
  model = wavlm.build(config, seed=0)
  directory.save_model(tmp_path / "m", params.get_params(model), config)
  rng = np.random.default_rng(0)
  waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 23456, 9000)]
  feats = features.HiddenFeatures(tmp_path / "m", layer=2, batch_size=2, max_chunk=20000)(waves)
  step = config_lib.conv_output_length(20000, config) * 320  # 62 frames: pieces overlap by 160 samples
  for w, f in zip(waves, feats):
    pieces = [w[s:s + 20000] for s in range(0, len(w), step) if s == 0 or s - step + 20000 < len(w)]
    expect = np.concatenate([np.asarray(model(jax.numpy.asarray(p[None])).layer_outputs[2])[0] for p in pieces])
    assert f.shape == expect.shape and len(f) == config_lib.conv_output_length(len(w), config)  # no frame lost
    np.testing.assert_allclose(f, expect, atol=2e-4)
  with pytest.raises(ValueError, match="layer 4 is out of range"):
    features.HiddenFeatures(tmp_path / "m", layer=4)


def test_report_figures_leave_the_callers_matplotlib_backend_alone(tmp_path):
  """A notebook calling the tokenizer or the probes keeps showing its own plots: writing their PNGs must
  not switch matplotlib's backend (it once called matplotlib.use("Agg"))."""
  import matplotlib

  from wavlm_jax.probing import plots

  before = matplotlib.get_backend()
  matplotlib.use("svg")
  try:
    acc = quality.QualityAccumulator(3, 4)
    acc.add(np.array([0, 1, 2, 0]), np.array([0, 1, 2, 3]))
    codes = quality.code_distribution(acc.joint.sum(axis=0))
    _, png = quality.save_report(tmp_path / "report", codes, acc.result(), acc.joint, ["a", "b", "c"])
    plots.layer_curves({"phone": [0.1, 0.5]}, tmp_path / "curves.png")
    plots.layer_weights({"pr": [0.3, 0.7]}, tmp_path / "weights.png")
    assert matplotlib.get_backend() == "svg"
    for path in (png, tmp_path / "curves.png", tmp_path / "weights.png"):
      assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  finally:
    matplotlib.use(before)


def test_pbert_labels_with_a_phone_lm_are_the_aligned_beam_decode(espeak_data_dir, tmp_path):
  """configs/tokenize_pbert.py with config.lm: each utterance is decoded by beam search with the phone
  n-gram and the decoded phonemes force-aligned to the frames: the labels' runs spell the decode."""
  import tensorflow_datasets as tfds

  from configs import tokenize_pbert
  from wavlm_jax import audio
  from wavlm_jax.decoding import align, beam, ngram
  from wavlm_jax.data.vocab import Vocabulary

  train = tfds.data_source("espeak_speech/tiny", split="train", data_dir=espeak_data_dir)
  phonemes = [train[i]["phonemes"].decode() for i in range(len(train))]
  vocab = Vocabulary.build(phonemes, "phonemes")
  ngram.KneserNey([p.split() for p in phonemes], order=3).write(tmp_path / "phones.arpa")
  cfg_model = config_lib.model_card("tiny", num_label_classes=0, vocab_size=len(vocab))
  model = directory.save_model(tmp_path / "rec", params.get_params(wavlm.build(cfg_model, seed=3)), cfg_model)
  vocab.save(model)
  cfg = tokenize_pbert.get_config("tiny")
  cfg.checkpoint, cfg.lm, cfg.lm_weight = str(model), str(tmp_path / "phones.arpa"), 3.0
  labeler = tokenize.PhoneLabeler(cfg)
  assert labeler.provenance["decoder"]["beam"]["lm_weight"] == 3.0
  source = tfds.data_source("espeak_speech/tiny", split="validation", data_dir=espeak_data_dir)
  waves = [audio.to_float(np.asarray(source[i]["audio"])) for i in range(3)]
  decoder = beam.BeamDecoder(vocab, lm_path=cfg.lm, lm_weight=3.0)
  changed = 0
  for wave, labels, log_probs in zip(waves, labeler(waves), labeler._posteriors(waves)):
    tokens = vocab.encode(decoder.decode(log_probs[None], [len(log_probs)])[0])
    assert len(tokens) > 0 and len(labels) == len(log_probs)
    runs = labels[np.r_[True, labels[1:] != labels[:-1]]]
    merged = tokens[np.r_[True, tokens[1:] != tokens[:-1]]]  # equal neighbours share one run
    np.testing.assert_array_equal(runs, merged)
    changed += not np.array_equal(labels, align.greedy_frame_labels(log_probs, vocab.blank)[1])
  assert changed  # the LM changes what a random recognizer's argmax says
