"""CTC fine-tuning pieces: the loss against a brute-force sum over alignments, zero_infinity behaviour,
the tri-stage schedule at its stage boundaries, frozen groups that get no optimizer step at all,
vocabularies, padded buckets, n-gram LM normalisation, and beam search with a language model."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wavlm_jax.data import buckets
from wavlm_jax.data.config import data_config
from wavlm_jax.data.vocab import Vocabulary
from wavlm_jax.decoding import beam, greedy, ngram, score
from wavlm_jax.models import losses
from wavlm_jax.training import optim


# ---- CTC loss ------------------------------------------------------------------------------------
def brute_force_ctc(log_probs: np.ndarray, labels: list[int], blank: int = 0) -> float:
  """-log sum over every frame path that collapses to `labels`."""
  T, V = log_probs.shape
  total = -np.inf
  for path in itertools.product(range(V), repeat=T):
    if greedy.collapse(np.array(path), blank) == labels:
      total = np.logaddexp(total, sum(log_probs[t, s] for t, s in enumerate(path)))
  return -total


@pytest.mark.parametrize("T,labels,valid", [(5, [1, 2], 5), (4, [1, 1], 4), (5, [2, 1, 2], 4), (3, [1], 3)])
def test_ctc_loss_equals_brute_force(T, labels, valid):
  rng = np.random.default_rng(T + len(labels))
  logits = rng.normal(size=(1, T, 3)).astype(np.float32)
  frame_valid = np.arange(T)[None] < valid
  padded = np.array([labels + [-1] * (4 - len(labels))], np.int32)
  loss, feasible = losses.ctc_loss(jnp.asarray(logits), jnp.asarray(frame_valid), jnp.asarray(padded))
  log_probs = np.asarray(jax.nn.log_softmax(logits[0, :valid], -1), np.float64)
  assert bool(feasible[0])
  np.testing.assert_allclose(float(loss[0]), brute_force_ctc(log_probs, labels), rtol=1e-5)


def test_infeasible_utterance_is_counted_and_harmless():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 4, 5)).astype(np.float32))
  # Row 1 needs 5 frames (A A needs a blank between) + more labels than frames: no alignment exists.
  labels = jnp.asarray([[1, 2, -1, -1, -1], [1, 1, 2, 3, 4]], jnp.int32)
  assert list(np.asarray(losses.ctc_required_frames(labels, labels >= 0))) == [2, 6]

  def reduced(lg):
    per, feasible = losses.ctc_loss(lg, None, labels)
    return losses.ctc_reduce(per, feasible, labels, jnp.ones(2, bool), "sum"), feasible

  (total, feasible), grads = jax.value_and_grad(reduced, has_aux=True)(logits)
  assert list(np.asarray(feasible)) == [True, False]
  alone, _ = losses.ctc_loss(logits[:1], None, labels[:1])
  np.testing.assert_allclose(float(total), float(alone[0]), rtol=1e-6)  # row 1 contributes nothing
  assert np.all(np.isfinite(np.asarray(grads))) and np.all(np.asarray(grads[1]) == 0)
  per_sentence = losses.ctc_reduce(*losses.ctc_loss(logits, None, labels), labels, jnp.ones(2, bool), "sentence")
  np.testing.assert_allclose(float(per_sentence), float(alone[0]) / 2, rtol=1e-6)  # fairseq: / nsentences


# ---- tri-stage schedule and frozen groups ----------------------------------------------------------------
def test_tri_stage_boundaries():
  s = optim.tri_stage(1.0, 25000, warmup=8000, hold=0, decay=72000)  # fairseq hubert base_10h
  assert float(s(0)) == pytest.approx(0.01)
  assert float(s(4000)) == pytest.approx(0.01 + 0.99 / 2)
  assert float(s(8000)) == pytest.approx(1.0)
  assert float(s(8000 + 72000 // 2)) == pytest.approx(math.sqrt(0.05), rel=1e-5)
  assert float(s(25000)) == pytest.approx(0.05 ** (17000 / 72000), rel=1e-5)  # ends at ~0.49 x peak
  s = optim.tri_stage(3e-5, 80000, warmup=8000, hold=32000, decay=40000)  # UniSpeech 100 h
  assert float(s(39999)) == pytest.approx(3e-5)
  assert float(s(80000)) == pytest.approx(0.05 * 3e-5, rel=1e-5)
  assert float(s(90000)) == pytest.approx(0.05 * 3e-5, rel=1e-5)  # constant after the decay
  s = optim.tri_stage(1.0, 1000, phase_ratio=(0.1, 0.4, 0.5))
  assert float(s(100)) == pytest.approx(1.0) and float(s(499)) == pytest.approx(1.0)
  assert float(s(1000)) == pytest.approx(0.05, rel=1e-5)


def test_frozen_groups_get_no_update_at_all():
  import ml_collections

  ocfg = ml_collections.ConfigDict({"peak_lr": 1e-2, "warmup": 0, "hold": 0, "decay": 100, "phase_ratio": (),
                                    "init_lr_scale": 0.01, "final_lr_scale": 0.05, "b1": 0.9, "b2": 0.98,
                                    "eps": 1e-8, "weight_decay": 0.0, "clip_norm": 1.0, "freeze_steps": 3})
  group = {"cnn": optim.FROZEN, "enc": optim.ENCODER, "head": optim.HEAD}
  tx, _ = optim.finetune_optimizer(ocfg, 100, lambda path: group[path.split("/")[0]])
  params = {k: jnp.full((4,), 0.5) for k in group}
  state = tx.init(params)
  history = []
  for step in range(6):
    grads = {k: jnp.full((4,), 0.1 * (step + 1)) for k in group}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(jax.tree.map(np.asarray, params))
  for h in history:
    assert np.array_equal(h["cnn"], np.full(4, 0.5, np.float32))  # frozen throughout, bit-identical
  for h in history[:3]:
    assert np.array_equal(h["enc"], np.full(4, 0.5, np.float32))  # frozen for freeze_steps updates
  assert not np.array_equal(history[3]["enc"], history[2]["enc"])  # trains after
  assert not np.array_equal(history[0]["head"], np.full(4, 0.5, np.float32))  # the head trains from step 1
  # The encoder's first Adam step is a first step (bias-corrected from zero moments): |update| = lr.
  lr = float(optim.tri_stage(1e-2, 100, decay=100)(3))
  np.testing.assert_allclose(history[2]["enc"] - history[3]["enc"], lr, rtol=1e-4)


# ---- vocabularies -------------------------------------------------------------------------------------
def test_letter_and_phoneme_vocabularies(tmp_path):
  v = Vocabulary.build(["Hello, world!", "it's a WORLD"], "letters")
  assert v.tokens[:4] == ("<pad>", "<s>", "</s>", "<unk>") and v.blank == 0
  ids = v.encode("hello world")
  assert v.decode(ids.tolist()) == "HELLO WORLD"
  assert v.reference("it's   a world.") == "IT'S A WORLD"
  assert v.tokens[ids[5]] == "|"
  v.save(tmp_path)
  assert Vocabulary.load(tmp_path) == v
  p = Vocabulary.build(["h @ l oU", "w 3: l d"], "phonemes")
  assert p.decode(p.encode("l oU w").tolist()) == "l oU w" and "|" not in p.tokens
  assert p.encode("zz")[0] == p.unk
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "ctc_vocab.json").write_text('{"kind": "letters"}')
  with pytest.raises(ValueError, match="ctc_vocab.json"):
    Vocabulary.load(tmp_path / "bad")


# ---- padded buckets ---------------------------------------------------------------------------------
def test_padded_plan_holds_whole_utterances():
  rng = np.random.default_rng(0)
  lengths = rng.integers(16000, 16000 * 20, size=500)
  lengths[:3] = 16000 * 40  # longer than crop_seconds: left out, counted
  cfg = data_config(batching="padded", crop_seconds=30.0, min_seconds=0.0, batch_size=4, num_buckets=4)
  plan = buckets.make_padded_plan(lengths, cfg, batch_multiple=2)
  stats = plan.stats()
  assert stats["dropped_long"] == 3 and 0 < stats["padding_share"] < 0.2
  seen = []
  for i in range(plan.batches_per_epoch):
    bucket, rows = plan.batch(i)
    assert bucket.rows % 2 == 0 and np.all(lengths[rows] <= bucket.samples)
    smaller = [b.samples for b in plan.buckets if b.samples < bucket.samples]
    if smaller:  # the shortest bucket that holds them (or a bigger one when a bucket was merged up)
      assert np.any(lengths[rows] > max(smaller)) or len(plan.buckets) < 4
    seen += list(rows)
  assert len(seen) == len(set(seen))
  assert plan.fingerprint()["padded"] is True


# ---- language model and decoding --------------------------------------------------------------------
WORDS = "THE A CAT DOG SAT ON MAT LOG AND RAN BIG SMALL RED BLUE".split()


@pytest.fixture(scope="module")
def sentences():
  rng = np.random.default_rng(0)
  return [" ".join(rng.choice(WORDS, size=rng.integers(2, 8))) for _ in range(400)]


def test_kneser_ney_is_normalised_and_read_by_kenlm(sentences, tmp_path):
  lm = ngram.KneserNey([s.split() for s in sentences], order=3)
  vocab = lm.vocab + [ngram.UNK]
  for ctx in [(), ("<s>",), ("THE",), ("<s>", "THE"), ("CAT", "SAT"), ("ZZZ", "Q")]:
    total = sum(lm.p(ctx[-2:] + (w,)) for w in vocab)
    assert total == pytest.approx(1.0, abs=1e-9), ctx
  path = lm.write(tmp_path / "lm.arpa")
  from flashlight.lib.text.decoder.kenlm import KenLM
  from flashlight.lib.text.dictionary import create_word_dict

  words = create_word_dict({w: [[w]] for w in vocab})
  kenlm = KenLM(str(path), words)
  state, s1 = kenlm.score(kenlm.start(False), words.get_index("THE"))
  _, s2 = kenlm.score(state, words.get_index("CAT"))
  assert s1 == pytest.approx(math.log10(lm.p(("<s>", "THE"))), abs=1e-4)
  assert s2 == pytest.approx(math.log10(lm.p(("<s>", "THE", "CAT"))), abs=1e-4)


def _noisy_emissions(refs, vocab, rng):
  """CTC log-probs (B, T, V) and lengths: each reference's token every other frame, boosted over heavy
  noise (what an LM can correct and greedy decoding cannot)."""
  emissions = []
  for s in refs:
    ids = vocab.encode(s)
    logits = rng.normal(size=(2 * len(ids) + 3, len(vocab)))
    logits[np.arange(1, 2 * len(ids) + 1, 2), ids] += 2.0
    emissions.append(logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True))
  lengths = [len(e) for e in emissions]
  batch = np.full((len(refs), max(lengths), len(vocab)), -1e9, np.float32)
  for i, e in enumerate(emissions):
    batch[i, :len(e)] = e
  return batch, lengths


def test_beam_search_with_lm_beats_greedy_on_noisy_emissions(sentences, tmp_path):
  vocab = Vocabulary.build(sentences, "letters")
  ngram.KneserNey([s.split() for s in sentences], order=3).write(tmp_path / "lm.arpa")
  rng = np.random.default_rng(1)
  refs = sentences[:40]
  batch, lengths = _noisy_emissions(refs, vocab, rng)
  greedy_wer = score.error_rates(refs, [vocab.decode(p) for p in greedy.decode(batch, lengths)], "letters")["wer"]
  decoder = beam.BeamDecoder(vocab, [w.lower() for w in WORDS], lm_path=str(tmp_path / "lm.arpa"))  # normalised
  beam_wer = score.error_rates(refs, decoder.decode(batch, lengths), "letters")["wer"]
  assert beam_wer < 0.6 * greedy_wer, (beam_wer, greedy_wer)
  with pytest.raises(ValueError, match="letter vocabulary"):
    beam.BeamDecoder(Vocabulary.build(["a b"], "phonemes"), ["A"], lm_path=str(tmp_path / "lm.arpa"))


def test_phone_lm_beam_search_beats_greedy_on_noisy_emissions(tmp_path):
  # Phoneme vocabularies: a lexicon-free beam with a phone n-gram (its words are the phonemes), the
  # decoding noisy-student rounds use for phoneme recognizers.
  rng = np.random.default_rng(2)
  phones = "p t k a i u m n s".split()
  words = [" ".join(rng.choice(phones, size=3)) for _ in range(6)]  # phone strings from a small lexicon
  sentences = [" ".join(rng.choice(words, size=rng.integers(2, 5))) for _ in range(300)]
  vocab = Vocabulary.build(sentences, "phonemes")
  ngram.KneserNey([s.split() for s in sentences], order=4).write(tmp_path / "phones.arpa")
  refs = sentences[:40]
  batch, lengths = _noisy_emissions(refs, vocab, rng)
  greedy_per = score.error_rates(refs, [vocab.decode(p) for p in greedy.decode(batch, lengths)], "phonemes")["per"]
  decoder = beam.BeamDecoder(vocab, lm_path=str(tmp_path / "phones.arpa"), lm_weight=1.0)
  beam_per = score.error_rates(refs, decoder.decode(batch, lengths), "phonemes")["per"]
  no_lm = score.error_rates(refs, beam.BeamDecoder(vocab).decode(batch, lengths), "phonemes")["per"]
  assert beam_per < 0.7 * min(greedy_per, no_lm), (beam_per, greedy_per, no_lm)
  # evaluate --lm refuses a word LM for a phoneme model (KenLM would map every word to <unk>)
  beam.check_phone_lm(str(tmp_path / "phones.arpa"), vocab)
  ngram.KneserNey([["THE", "CAT", "SAT"], ["A", "DOG"]], order=2).write(tmp_path / "words.arpa")
  with pytest.raises(ValueError, match="words.arpa: 5 of its 5 unigrams are not phonemes"):
    beam.check_phone_lm(str(tmp_path / "words.arpa"), vocab)
  with pytest.raises(ValueError, match="not phonemes"):  # the decoder checks it itself
    beam.BeamDecoder(vocab, lm_path=str(tmp_path / "words.arpa"))


def test_scores_with_jiwer():
  s = score.error_rates(["THE CAT SAT", "A DOG"], ["THE BAT SAT", "A DOG RAN"], "letters")
  assert s["wer"] == pytest.approx(2 / 5) and s["words"] == 5
  p = score.error_rates(["h @ l", ""], ["h l", "x"], "phonemes")
  assert p["per"] == pytest.approx(1 / 3) and p["empty_references"] == 1


def test_finetune_optimizer_state_is_sharded_like_its_parameters():
  """Adam moments under optax.multi_transform (group names in their paths) take their parameter's
  sharding, not a replicated copy on every device."""
  from configs.finetune.common import finetune_config
  from wavlm_jax import finetune, train
  from wavlm_jax.models import config as config_lib
  from wavlm_jax.training import mesh as mesh_lib

  cfg = finetune_config(total_steps=10)
  model_cfg = config_lib.model_card("tiny", num_label_classes=0, vocab_size=32, feature_grad_mult=0.0)
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  run = train.build(cfg, mesh, mesh_lib.rules_for("fsdp"), model_cfg=model_cfg, batch_keys=finetune.BATCH_KEYS,
                    optimizer=lambda: optim.finetune_optimizer(cfg.optim, 10, finetune.parameter_group(model_cfg)),
                    loss_fns=lambda b: {"full": finetune.make_loss_fn(b, cfg, frozen=False)})
  params = run.state_sharding["params"]
  kernel = params["ctc_head"]["lm_head"]["kernel"].spec
  assert any(axis is not None for axis in kernel)  # sharded over fsdp at all
  found = []

  def check(path, sharding):
    keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    if keys[-3:] == ["ctc_head", "lm_head", "kernel"]:
      found.append(sharding.spec)

  jax.tree_util.tree_map_with_path(check, run.state_sharding["opt_state"])
  assert len(found) == 2 and all(spec == kernel for spec in found), found  # mu and nu
