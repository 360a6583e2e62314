"""CTC fine-tuning: a pretrained (or converted) WavLM/HuBERT plus a CTC head, trained on transcripts
with fairseq's recipe semantics, on the pretraining trainer's mesh, state, checkpointer and reporter.

    python -m wavlm_jax.finetune --config configs/finetune/tiny.py --workdir runs/ft_tiny
    python -m wavlm_jax.finetune --config configs/finetune/hubert_base_10h.py --workdir runs/hubert_base_10h \
        --config.init_from=models/hubert_base --config.data.dataset=librispeech_dir/train10h

Read top to bottom: config -> mesh -> vocabulary -> model config -> data -> model and optimizer (built
sharded by `train.build`) -> restore or warm start -> steps -> loop (validation, best model) -> finish.
- The CNN is frozen throughout when the model's feature_grad_mult is 0 (no optimizer step at all); the
  whole encoder is frozen for the first `optim.freeze_steps` updates, when only the head trains: those
  steps run a second compiled variant that never differentiates the encoder, and the optimizer keeps
  the encoder's Adam state untouched until the unfreeze (training/optim.py).
- Fine-tuning masks, LayerDrop and dropouts are `model_overrides` on the pretrained model's config.
- CTC in fp32 with zero_infinity behaviour (utterances that cannot align contribute nothing and are
  counted), reduced per sentence (fairseq) or summed (transformers) by `ctc.reduction`.
- Validation WER/CER (letters) or PER (phonemes) every `eval.every_steps` and at the end, to
  TensorBoard and metrics.jsonl; the best model by that error is kept in `best/` (a model directory).
- The vocabulary is built from the training transcripts once and saved in the workdir and the models.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from wavlm_jax import audio, cli, data, recognize, storage, train  # noqa: E402
from wavlm_jax.data.buckets import FRAME  # noqa: E402
from wavlm_jax.data import vocab as vocab_lib  # noqa: E402
from wavlm_jax.data.vocab import Vocabulary  # noqa: E402
from wavlm_jax.models import directory, losses, params as params_lib  # noqa: E402
from wavlm_jax.training import checkpoint, flops, mesh as mesh_lib, optim  # noqa: E402

log = train.log
BATCH_KEYS = ("audio", "padding_mask", "labels", "label_length")
FIELDS = (("loss", "loss", ".4f"), ("infeasible", "infeasible", ".0f"), ("lr", "learning_rate", ".2e"))


# ================================================================================================
# Vocabulary and model config
# ================================================================================================
def transcripts(cfg, split: str):
  """The transcripts of a split (the vocabulary's field, or data.transcript_key)."""
  from wavlm_jax.data import pipeline

  d = cfg.data.copy_and_resolve_references()
  with d.unlocked():
    d.split = split
  source = pipeline.open_source(d)
  key = d.transcript_key or vocab_lib.KINDS[cfg.vocab.kind]
  for i in range(len(source)):
    ex = source[i]
    if key not in ex:
      raise KeyError(f"dataset {d.dataset!r} split {split!r} has no transcript field {key!r} (fields: "
                     f"{sorted(ex)}); set config.data.transcript_key")
    value = ex[key]
    yield value.decode("utf-8") if isinstance(value, bytes) else str(value)


def vocabulary(cfg, workdir: str) -> Vocabulary:
  """The run's vocabulary: the workdir's (a resumed run), else built from the training transcripts."""
  if (storage.path(workdir) / "ctc_vocab.json").is_file():
    vocab = Vocabulary.load(workdir)
    if vocab.kind != cfg.vocab.kind:
      raise ValueError(f"{workdir}/ctc_vocab.json holds a {vocab.kind} vocabulary but config.vocab.kind="
                       f"{cfg.vocab.kind!r}; use another workdir")
    return vocab
  vocab = Vocabulary.build(transcripts(cfg, cfg.data.split), cfg.vocab.kind)
  if jax.process_index() == 0:
    vocab.save(workdir)
  return vocab


def model_config(cfg, vocab: Vocabulary):
  """The pretrained model's config with the fine-tuning overrides, no pre-training heads, and a CTC head
  over the vocabulary."""
  if not cfg.init_from:
    raise ValueError("config.init_from is empty: fine-tuning starts from a model directory (a pretraining "
                     "run's model/, or one written by `python -m wavlm_jax.convert`)")
  overrides = dict(cfg.model_overrides)
  return directory.load_config(cfg.init_from, num_label_classes=0, predict_layers=(), vocab_size=len(vocab),
                               **overrides)


def parameter_group(model_cfg):
  """Path -> optimizer group: the CNN frozen when feature_grad_mult is 0, the CTC head, the rest."""
  def group(path: str) -> str:
    if path.startswith("wavlm/feature_extractor") and model_cfg.feature_grad_mult == 0:
      return optim.FROZEN
    return optim.HEAD if path.startswith("ctc_head") else optim.ENCODER
  return group


# ================================================================================================
# The loss
# ================================================================================================
def make_loss_fn(binder, cfg, *, frozen: bool):
  """CTC of the head's logits; `frozen`: the backbone is a constant (only the head is differentiated)."""
  reduction = cfg.ctc.reduction

  def loss_fn(params, batch, key):
    if frozen:
      params = dict(params, wavlm=jax.lax.stop_gradient(params["wavlm"]))
    model = binder.model(params)
    out = model(batch["audio"], batch["padding_mask"], apply_mask=True, key=key, collect=False)
    logits = model.ctc_logits(out, key)
    labels = batch["labels"]
    per_utt, feasible = losses.ctc_loss(logits, out.frame_valid, labels)
    feasible &= batch["label_length"] <= labels.shape[1]  # transcripts longer than the frames, cut to fit
    rows = jnp.ones(labels.shape[:1], bool)
    loss = losses.ctc_reduce(per_utt, feasible, labels, rows, reduction)
    aux = {"infeasible": jnp.sum(~feasible), "ctc_per_utterance": jnp.sum(jnp.where(feasible, per_utt, 0)) /
           jnp.maximum(jnp.sum(feasible), 1), "audio_seconds": jnp.sum(~batch["padding_mask"]) / audio.SAMPLE_RATE,
           "padding_share": jnp.mean(batch["padding_mask"].astype(jnp.float32)),
           "masked_fraction": (jnp.sum(out.mask_time & out.frame_valid) / jnp.maximum(jnp.sum(out.frame_valid), 1)
                               if out.mask_time is not None else jnp.zeros(()))}
    return loss, aux

  return loss_fn


def abstract_batch(rows: int, samples: int, sharding) -> dict:
  slots = samples // FRAME  # as data.pipeline.transcript_ids pads the labels
  return {"audio": jax.ShapeDtypeStruct((rows, samples), jnp.float32, sharding=sharding),
          "padding_mask": jax.ShapeDtypeStruct((rows, samples), jnp.bool_, sharding=sharding),
          "labels": jax.ShapeDtypeStruct((rows, slots), jnp.int32, sharding=sharding),
          "label_length": jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=sharding)}


# ================================================================================================
# Fine-tuning
# ================================================================================================
def finetune(cfg, workdir: str) -> dict:
  """Runs (or resumes) the configured fine-tuning in `workdir`; returns the final summary."""
  # ---- Config --------------------------------------------------------------------------------
  cli.initialize_distributed(cfg.distributed)
  workdir = storage.as_str(workdir)  # a local path made absolute, or a URL (gs://...) as given
  if jax.process_index() == 0:
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
    (storage.path(workdir) / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  total_steps = cfg.total_steps

  # ---- Mesh ----------------------------------------------------------------------------------
  mesh = mesh_lib.make_mesh(cfg.mesh)
  rules = mesh_lib.rules_for(cfg.sharding)
  batch_sharding = NamedSharding(mesh, P(mesh_lib.BATCH))

  # ---- Vocabulary and model config -------------------------------------------------------------
  vocab = vocabulary(cfg, workdir)
  model_cfg = model_config(cfg, vocab)
  log(f"vocabulary: {len(vocab)} {vocab.kind} tokens; model from {cfg.init_from} "
      f"({model_cfg.num_layers} layers, {model_cfg.embed_dim} wide), CTC head over {len(vocab)}")

  # ---- Data ----------------------------------------------------------------------------------
  if cfg.data.batching != "padded":
    raise ValueError(f"config.data.batching={cfg.data.batching!r}: fine-tuning needs 'padded' (whole utterances; "
                     "a crop would cut the audio but not its transcript)")
  data_cfg = cfg.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    data_cfg.normalize = bool(model_cfg.normalize_waveform)  # as the model was pretrained (fairseq asserts it)
  iterator = data.create_iterator(data_cfg, batch_multiple=mesh_lib.batch_devices(mesh), vocab=vocab)
  log(f"padded batches: {json.dumps(iterator.plan.stats())}")
  eval_cfg = data_cfg.copy_and_resolve_references()
  with eval_cfg.unlocked():
    eval_cfg.split = cfg.eval.split
    eval_cfg.transcripts = ""  # data.transcripts names training utterances; validation keeps its own

  def validation_batches():
    from wavlm_jax.data import pipeline
    return pipeline.eval_batches(eval_cfg, vocab, batch_multiple=mesh_lib.batch_devices(mesh),
                                 max_utterances=cfg.eval.max_utterances)

  # ---- Model and optimizer, built sharded ------------------------------------------------------
  cfg_optim = cfg.optim
  run = train.build(cfg, mesh, rules, model_cfg=model_cfg, batch_keys=BATCH_KEYS,
                    optimizer=lambda: optim.finetune_optimizer(cfg_optim, total_steps, parameter_group(model_cfg)),
                    loss_fns=lambda b: {"frozen": make_loss_fn(b, cfg, frozen=True),
                                        "full": make_loss_fn(b, cfg, frozen=False)})
  forward = recognize.make_forward(run.binder, mesh, rules, run.state_sharding["params"])

  # ---- Restore or warm start -------------------------------------------------------------------
  ckpt = checkpoint.TrainCheckpointer(storage.path(workdir) / "checkpoints", every=cfg.checkpoint.every_steps,
                                      keep=cfg.checkpoint.keep, keep_period=cfg.checkpoint.keep_period,
                                      asynchronous=cfg.checkpoint.asynchronous)
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, run.abstract_state)
    iterator.set_state(data_state)
    log(f"resumed from {workdir}/checkpoints at step {latest}")
  else:
    state = train._warm_start(run.init(), cfg, run.state_sharding, model_cfg)
  start_step = int(state["step"])
  best_file = storage.path(workdir) / "best.json"
  best = json.loads(best_file.read_text()) if best_file.is_file() else None
  if best is not None and not (storage.path(workdir) / "best" / directory.CONFIG_FILE).is_file():
    # on a bucket best/ is replaced by removing it, then uploading the new one: a run stopped in between
    # has a best.json without its model; the next validation then saves one again
    log(f"{best_file} names a best model that {workdir}/best does not hold (stopped while saving it): forgetting it")
    best = None
  metric = cfg.eval.metric or ("per" if vocab.kind == "phonemes" else "wer")
  if metric not in (("per",) if vocab.kind == "phonemes" else ("wer", "cer")):
    raise ValueError(f"config.eval.metric={metric!r} does not apply to a {vocab.kind} vocabulary")

  def validate(step: int) -> dict:
    t0 = time.perf_counter()
    result = recognize.transcribe(forward, state["params"], validation_batches(), vocab, mesh)
    scores = {f"val/{k}": float(v) for k, v in result.scores.items()}
    log(f"validation at step {step} ({cfg.eval.split}, {result.scores.get('utterances', 0)} utterances, "
        f"{time.perf_counter() - t0:.1f} s): " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                          if k.split("/")[1] in ("wer", "cer", "per")))
    return scores

  def keep_if_best(step: int, scores: dict):
    nonlocal best
    value = scores.get(f"val/{metric}")
    improved = value is not None and (best is None or value < best["value"])
    if jax.process_count() > 1:  # process 0 decides (its best.json), so every process saves or none does
      from jax.experimental import multihost_utils
      improved = bool(multihost_utils.broadcast_one_to_all(np.array(improved)))
    if not improved:
      return
    save_model(storage.path(workdir) / "best", state, model_cfg, vocab)  # collective on several processes
    best = {"step": step, "metric": metric, "value": value}
    if jax.process_index() == 0:
      best_file.write_text(json.dumps(best, indent=2))
    log(f"best {metric} so far ({value:.4f}) at step {step}: saved {workdir}/best")

  # ---- Steps ---------------------------------------------------------------------------------
  def next_batch():
    host = next(iterator)
    return host, data.to_global({k: host[k] for k in BATCH_KEYS}, batch_sharding)

  phases = (["frozen"] if start_step < cfg.optim.freeze_steps else []) + ["full"]
  compiled, step_flops = {}, {}
  for rows, samples in iterator.shapes():
    for phase in phases:
      compiled[phase, samples] = run.steps[phase].lower(run.abstract_state, abstract_batch(
          rows, samples, batch_sharding)).compile()
    seconds = samples / audio.SAMPLE_RATE
    step_flops[samples] = flops.model_flops_per_audio_second(model_cfg, seconds) * rows * seconds
  log(f"steps compiled for {len(iterator.shapes())} bucket shapes x {phases}")
  peak = flops.peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  initial = validate(start_step) if start_step == 0 and cfg.eval.at_start else {}
  host_batch, batch = next_batch()

  # ---- Loop ---------------------------------------------------------------------------------
  reporter = train.Reporter(cfg, workdir, total_steps, start_step, peak, keys=("loss", "infeasible"), fields=FIELDS,
                            constants=run.attention.metrics())
  if initial:
    reporter.writer.scalars(start_step, initial)
  step, last_scores = start_step, {}
  with train.LoopGuard(cfg, ckpt, reporter, workdir, total_steps) as guard:
    while step < total_steps:
      data_state = iterator.get_state()
      samples = batch["audio"].shape[1]
      phase = "frozen" if step < cfg.optim.freeze_steps else "full"
      state, step_metrics = compiled[phase, samples](state, batch)
      step += 1
      guard.check(reporter.add(step, step_metrics, host_batch, step_flops[samples]))
      if step % cfg.eval.every_steps == 0 or step == total_steps:
        reporter.flush()
        last_scores = validate(step)
        reporter.writer.scalars(step, last_scores)
        keep_if_best(step, last_scores)
      if guard.end_of_step(step, state, data_state):
        break
      if step < total_steps:
        host_batch, batch = next_batch()
    reporter.flush()
  status = guard.status

  # ---- Finish -------------------------------------------------------------------------------
  summary = {"status": status, "step": step, "workdir": workdir, "vocabulary": vocab.kind,
             "vocab_size": len(vocab), "metric": metric,
             "utterances_without_transcript": iterator.plan.stats()["dropped_no_transcript"]}
  summary |= reporter.averages.summary() | run.attention.summary()
  if initial:
    summary[f"initial_{metric}"] = initial.get(f"val/{metric}")
  if status == "finished":
    summary[f"final_{metric}"] = last_scores.get(f"val/{metric}")
    save_model(storage.path(workdir) / "model", state, model_cfg, vocab)
    summary["model"] = str(storage.path(workdir) / "model")
    summary["best"] = best
  if jax.process_index() == 0:
    (storage.path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
    log("summary: " + json.dumps(summary))
  if jax.process_count() > 1:  # no host exits before the summary exists: launchers read it when hosts exit
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("summary written")
  return summary


def save_model(path: os.PathLike, state, model_cfg, vocab: Vocabulary) -> None:
  """A model directory with the CTC vocabulary in it (collective: every process calls it)."""
  params = train.host_params(state)
  if jax.process_index() == 0:
    directory.save_model(path, params_lib.flatten(params), model_cfg, overwrite=True, extra=vocab.save)


# ================================================================================================
# Command line
# ================================================================================================
def main(argv):
  from absl import flags

  del argv
  finetune(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "fine-tuning recipe (configs/finetune/*.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "checkpoints, best/ and model/, TensorBoard logs and metrics.jsonl go here")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
