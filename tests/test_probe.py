"""SUPERB-style probing (`python -m wavlm_jax.probe`): the featurizer, masked pooling, DER, the feature
cache, probes on the embedded corpus with a random tiny model, and the command line on a fresh home."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wavlm_jax.probing import features, heads, tasks
from wavlm_jax.probing.featurizer import Featurizer

REPO = Path(__file__).resolve().parents[1]
DATASET = "espeak_speech/tiny"


def shared_setup(tmp_path_factory, data_dir: str) -> tuple[Path, Path]:
  """(model dir, workdir) shared by this file and tests/test_layerwise.py: a random 2-layer tiny model
  made once per session (a fixed place under pytest's base temp), and the workdir whose feature cache
  the first test to need it fills."""
  from wavlm_jax.models import directory, wavlm
  from wavlm_jax.models import params as params_lib
  from wavlm_jax.models.config import model_card

  root = tmp_path_factory.getbasetemp() / "probing"
  model_dir = root / "tiny_model"
  if not (model_dir / "config.json").is_file():
    cfg = model_card("tiny", num_layers=2)
    directory.save_model(model_dir, params_lib.get_params(wavlm.build(cfg, seed=0)), cfg)
  return model_dir, root / "work"


def cached(extractor, workdir, data_dir, split):
  return features.dataset_features(extractor, DATASET, split, workdir, data_dir=data_dir, log=lambda _: None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, espeak_data_dir):
  model_dir, workdir = shared_setup(tmp_path_factory, espeak_data_dir)
  extractor = features.Extractor(model_dir, levels=2)
  feats = {r: cached(extractor, workdir, espeak_data_dir, s)
           for r, s in {"train": "train", "validation": "validation", "test": "test"}.items()}
  return model_dir, workdir, extractor, feats


# ---- the featurizer and heads --------------------------------------------------------------------
def test_featurizer_starts_as_the_mean_of_the_layers_and_learns_softmax_weights():
  h = jax.random.normal(jax.random.key(0), (2, 4, 5, 3)) * jnp.arange(1, 5)[None, :, None, None]
  f = Featurizer(4)
  np.testing.assert_array_equal(f.weights[...], 0)  # s3prl: zeros
  np.testing.assert_allclose(f(h), h.mean(axis=1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(f.layer_weights(), 0.25)
  f.weights[...] = jnp.array([0.0, 0.0, 0.0, 50.0])  # softmax all but one-hot
  np.testing.assert_allclose(f(h), h[:, 3], rtol=1e-5, atol=1e-5)
  normed = Featurizer(4, layer_norm=True)(h)  # non-affine LayerNorm over D on each state, then the mean
  ln = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(normed, ln.mean(axis=1), rtol=1e-5, atol=1e-5)
  single = Featurizer(4, layer=2)
  assert single.weights is None and list(single.layer_weights()) == [0, 0, 1, 0]
  np.testing.assert_array_equal(single(h), h[:, 2])
  np.testing.assert_array_equal(single(h[:, 2:3]), h[:, 2])  # only the chosen state loaded
  with pytest.raises(ValueError, match="--layer 4 is out of range"):
    Featurizer(4, layer=4)


def test_masked_mean_pooling_ignores_padding():
  x = jax.random.normal(jax.random.key(1), (2, 6, 4))
  valid = jnp.array([[True] * 6, [True] * 3 + [False] * 3])
  pooled = heads.masked_mean(x, valid)
  np.testing.assert_allclose(pooled[1], x[1, :3].mean(0), rtol=1e-6)
  garbage = x.at[1, 3:].set(1e6)
  np.testing.assert_array_equal(heads.masked_mean(garbage, valid), pooled)
  head = heads.MeanPoolLinear(4, 3, project_dim=8, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(head(garbage, valid), head(x, valid))
  # Recurrent heads: padding reaches no valid frame in either direction.
  rnn = heads.RecurrentHead(4, 3, hidden=5, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(rnn(garbage, valid)[1, :3], rnn(x[1:, :3], valid[1:, :3])[0], atol=1e-5)


# ---- diarization ---------------------------------------------------------------------------------
def test_der_on_a_constructed_case_with_the_best_permutation():
  ref = np.zeros((10, 2), bool)
  ref[0:6, 0] = True  # speaker A frames 0-5, B frames 4-9: 12 speaker-frames, overlap 4-5
  ref[4:10, 1] = True
  np.testing.assert_allclose(tasks.der([ref], [ref])["der"], 0)
  swapped = ref[:, ::-1]  # the labels' order is arbitrary: a swap is no error
  assert tasks.der([ref], [swapped])["der"] == 0
  hyp = swapped.copy()  # hypothesis column 1 is A, column 0 is B
  hyp[0, 1] = False  # A's frame 0 missed: 1 missed
  hyp[9, 1] = True  # A in frame 9, where only B speaks: 1 false alarm
  hyp[5, 0] = False  # B's frame 5 missed (A still found there): 1 missed
  parts = tasks.diarization_error(ref, hyp)
  assert parts == {"speech": 12, "missed": 2, "false_alarm": 1, "confusion": 0}
  np.testing.assert_allclose(tasks.der([ref], [hyp])["der"], 3 / 12)
  confused = np.zeros_like(ref)
  confused[0:4, 0] = True  # one hypothesis speaker talks throughout, the other in the overlap only:
  confused[4:6] = True  # either mapping leaves 4 solo frames given to the wrong speaker
  confused[6:10, 0] = True
  r = tasks.der([ref], [confused])
  assert tasks.diarization_error(ref, confused)["confusion"] == 4
  np.testing.assert_allclose(r["der"], 4 / 12)
  np.testing.assert_allclose(r["confusion"], 4 / 12)
  # Over recordings: counts add up, each recording with its own mapping.
  np.testing.assert_allclose(tasks.der([ref, ref], [swapped, confused])["der"], 4 / 24)


def test_pit_bce_is_permutation_invariant_and_ignores_padding():
  targets = jnp.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
  logits = jax.random.normal(jax.random.key(2), (1, 4, 2))
  valid = jnp.array([[True, True, True, False]])
  a = tasks.pit_bce(logits, targets, valid)
  np.testing.assert_allclose(a, tasks.pit_bce(logits, targets[..., ::-1], valid), rtol=1e-6)
  np.testing.assert_allclose(a, tasks.pit_bce(logits.at[0, 3].set(50.0), targets, valid), rtol=1e-6)
  perfect = jnp.where(targets > 0, 20.0, -20.0)[..., ::-1]
  assert float(tasks.pit_bce(perfect, targets, valid)) < 1e-6


def test_mixtures_overlap_and_their_activity_matches_the_model_frames(espeak_data_dir):
  from wavlm_jax.models.config import conv_output_length, model_card

  cfg = model_card("tiny")
  assert tasks.receptive_field(cfg.conv_kernel, cfg.conv_stride) == 400
  src = features.open_split(DATASET, "validation", espeak_data_dir)
  mix = tasks.Mixtures(src, speaker_field="speaker", count=4, seed=0, split="validation", config=cfg)
  for j in range(len(mix)):
    n, fields = mix.info(j)
    act = fields["activity"]
    assert act.shape == (conv_output_length(n, cfg), 2) and len(mix.audio(j)) == n
    assert act[:, 0].any() and act[:, 1].any() and act.all(1).any()  # both speak, and overlap
    a, b = fields["speakers"].split(",")
    assert a != b
  with pytest.raises(KeyError, match="no field 'voice'.*--speaker-field"):
    tasks.Mixtures(src, speaker_field="voice", count=1, seed=0, split="validation", config=cfg)


# ---- the feature cache ---------------------------------------------------------------------------
def test_features_are_cached_once_and_equal_encoding_alone(setup, espeak_data_dir):
  import wavlm_jax

  model_dir, workdir, _, feats = setup
  train = feats["train"]
  assert train.num_layers == 3 and train.dim == 64 and len(train) == 70
  stamp = (train.path / features.HIDDEN).stat().st_mtime_ns
  fresh = features.Extractor(model_dir)
  again = cached(fresh, workdir, espeak_data_dir, "train")
  assert again.from_cache and fresh.calls == 0 and fresh._encode is None  # the model is not even loaded
  assert (again.path / features.HIDDEN).stat().st_mtime_ns == stamp
  # Batched, sorted, padded and sharded over 8 devices: each utterance as if encoded alone.
  src = features.open_split(DATASET, "train", espeak_data_dir)
  enc = wavlm_jax.load_encoder(model_dir)
  for i in (0, int(np.argmax(train.lengths))):
    alone = np.stack([np.asarray(h[0]) for h in enc.hidden_states(features.DatasetAudio(src).audio(i)[None])])
    np.testing.assert_allclose(train.utterance(i), alone, atol=2e-4, rtol=1e-3)
  assert train.field("speaker")[0] == src[0]["speaker"].decode()
  with pytest.raises(KeyError, match="no field 'emotion'.*--speaker-field.*'phonemes'"):
    train.field("emotion", "--speaker-field")
  # A different key (another dtype here) is another extraction, not a stale reuse.
  assert features.load(train.path, {**train.meta["key"], "dtype": "float16"}) is None


# ---- probes beat chance --------------------------------------------------------------------------
def _fit(task_name, feats, steps, lr, options=None, levels=4):
  task = tasks.get(task_name)
  data = tasks.build(task, feats, tasks.Fields(), 50.0)
  b = {"train": tasks.Batches(task.kind, feats["train"], data, "train", 8, count=levels)}
  b |= {r: tasks.Batches(task.kind, feats[r], data, r, 8, levels=b["train"].levels) for r in ("validation", "test")}
  probe = tasks.build_probe(task, 3, 64, data.classes, options or {})
  fit = tasks.fit(task, data, probe, b["train"], b["validation"], lr=lr, steps=steps, log=lambda _: None)
  return task, data, fit, tasks.evaluate(task, data, "test", tasks.predict(fit.probe, b["test"]))


def test_speaker_identification_beats_chance_with_a_random_model(setup):
  *_, feats = setup
  _, data, fit, test = _fit("sid", feats, 200, 1e-2)
  assert data.classes == 14
  assert test["accuracy"] > 2.0 / data.classes and fit.validation["accuracy"] > 2.0 / data.classes
  assert abs(sum(fit.layer_weights) - 1) < 1e-5 and fit.layer_weights != [1 / 3] * 3  # the weights learned


def test_phoneme_recognition_and_asr_run_and_score(setup):
  *_, feats = setup
  _, data, fit, test = _fit("pr", feats, 60, 1e-2, levels=2)
  assert data.vocab.kind == "phonemes" and 0 < test["per"] <= 1.5 and test["phones"] > 100
  assert fit.history[-1]["train_loss"] < 1e3  # a finite CTC loss: every utterance fits its frames
  _, data, fit, test = _fit("asr", feats, 5, 1e-3, {"project_dim": 16, "rnn_hidden": 8}, levels=1)
  assert data.vocab.kind == "letters" and {"wer", "cer"} <= set(test)


# ---- the command line ----------------------------------------------------------------------------
def test_cli_sid_end_to_end_on_a_fresh_home(setup, espeak_data_dir, tmp_path):
  model_dir, workdir, *_ = setup
  home = tmp_path / "home"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("WAVLM_DATA_DIR", "TFDS_DATA_DIR")}
  env |= {"HOME": str(home), "PYTHONPATH": str(REPO)}
  proc = subprocess.run([sys.executable, "-m", "wavlm_jax.probe", "--task", "sid", "--model", str(model_dir),
                         "--data-dir", espeak_data_dir, "--workdir", str(workdir), "--steps", "60",
                         "--lr-sweep", "1e-1,1e-2", "--length-levels", "2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "extracting" not in proc.stdout  # the cache the fixtures filled is reused across processes
  result = json.loads((workdir / "results.json").read_text())["sid"]
  assert result["metric"] == "accuracy" and [r["lr"] for r in result["runs"]] == [0.1, 0.01]
  best = max(result["runs"], key=lambda r: r["validation"]["accuracy"])
  assert result["best_lr"] == best["lr"] and len(result["layer_weights"]) == 3
  assert result["superb"] == {"lr": 1e-4, "steps": 200_000}
  assert (workdir / "layer_weights.png").read_bytes()[:4] == b"\x89PNG"
  assert "sid    accuracy" in proc.stdout


def test_cli_errors_name_the_task_field_and_language(setup, espeak_data_dir, capsys):
  from wavlm_jax import probe

  model_dir, workdir, *_ = setup
  common = ["--model", str(model_dir), "--data-dir", espeak_data_dir, "--workdir", str(workdir), "--steps", "2"]
  assert probe.main(["--task", "emotion", *common]) == 2
  assert "unknown task 'emotion'; known tasks: pr, sid, asr, sd, lid, phone" in capsys.readouterr().err
  assert probe.main(["--task", "lid", *common]) == 2
  err = capsys.readouterr().err
  assert "only 1 language value(s) ['en-us']" in err and "espeak_speech/small has en-us and en-gb" in err
  assert probe.main(["--task", "asr", "--text-field", "transcript", *common]) == 2
  err = capsys.readouterr().err
  assert "has no field 'transcript' (choose another with --text-field)" in err and "'phonemes'" in err
  assert probe.main(["--task", "sid", "--model", str(workdir), "--workdir", str(workdir)]) == 2
  assert "not a wavlm_jax model directory" in capsys.readouterr().err


def test_diarization_probe_scores_der(setup, espeak_data_dir, tmp_path, capsys):
  from wavlm_jax import probe

  model_dir, *_ = setup
  assert probe.main(["--task", "sd", "--model", str(model_dir), "--data-dir", espeak_data_dir,
                     "--workdir", str(tmp_path), "--steps", "30", "--lr", "1e-2", "--rnn-hidden", "16",
                     "--max-utterances", "16", "--length-levels", "1"]) == 0
  r = json.loads((tmp_path / "results.json").read_text())["sd"]
  assert r["metric"] == "der" and 0 <= r["test"]["der"] <= 2 and r["test"]["speech_frames"] > 0
  assert r["utterances"] == {"train": 16, "validation": 10, "test": 10}
  meta = json.loads(next(tmp_path.glob("features/*/train-sd_mixtures/meta.json")).read_text())
  assert "activity" in meta["fields"] and meta["key"]["mixtures"] == 70
