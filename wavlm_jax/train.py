"""THE pretraining trainer: HuBERT/WavLM masked prediction, WavLM denoising (mixing in the input
pipeline) and ILS-SSL intermediate-layer losses, one jitted step over a named device mesh.

    python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny
    python -m wavlm_jax.train --config configs/wavlm_base.py --workdir gs://bucket/wavlm_base \
        --config.mesh.fsdp=8 --config.optim.peak_lr=5e-4

Read top to bottom: config -> distributed -> mesh -> data -> model and optimizer (built sharded) ->
restore -> step -> loop -> finish. A restarted run resumes from the workdir's latest checkpoint; SIGTERM
(preemption) saves and exits cleanly.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from typing import Callable, NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from wavlm_jax import audio, cli, data, storage  # noqa: E402
from wavlm_jax.data import labels as labels_lib  # noqa: E402
from wavlm_jax.data import mixture as mixture_lib  # noqa: E402
from wavlm_jax.models import directory, kernel_check, losses, partitioning, wavlm  # noqa: E402
from wavlm_jax.models import params as params_lib  # noqa: E402
from wavlm_jax.training import checkpoint, flops, mesh as mesh_lib, metrics as metrics_lib, optim  # noqa: E402


class NonFiniteError(RuntimeError):
  """Too many non-finite steps in a row."""


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


# ================================================================================================
# Data and labels
# ================================================================================================
def ensure_labels(cfg) -> str:
  """The label store path; runs the tokenizer first if the store is absent and the config has one."""
  path = cfg.data.labels
  if path and (storage.path(path) / "meta.json").is_file():
    return path
  if not cfg.get("tokenizer"):
    raise FileNotFoundError(f"config.data.labels={path!r} is not a label store and config.tokenizer is unset; "
                            "make labels with `python -m wavlm_jax.targets.tokenize`")
  from wavlm_jax.targets import tokenize

  tok = cfg.tokenizer
  store = storage.path(tok.workdir) / "labels" / cfg.data.split
  missing = not (store / "meta.json").is_file()
  if jax.process_count() > 1:  # host 0 decides, so that every host runs the (multi-host) tokenizer or none
    from jax.experimental import multihost_utils
    missing = bool(multihost_utils.broadcast_one_to_all(np.array(missing)))
  if missing:
    log(f"no labels at {store}: running the tokenizer ({tok.feature}, k={tok.k}) first")
    tokenize.run(tok)
  return str(store)


def data_with_labels(cfg) -> tuple:
  """cfg.data with its label stores resolved, and the store whose rate and classes the model takes. One
  corpus: data.labels (`ensure_labels`). A mixture: each component's own `labels`, else data.labels if
  it is a store, else the tokenizer's labels/<component name>/, the tokenizer run first over the whole
  mixture when one is absent (k-means fitted on every component by its weight). The stores must agree
  in label rate, and hold at most config.model.num_label_classes classes."""
  data_cfg = cfg.data.copy_and_resolve_references()
  if not cfg.data.get("mixture"):
    path = ensure_labels(cfg)
    with data_cfg.unlocked():
      data_cfg.labels = path
    return data_cfg, _checked_stores(cfg, [path])[0]
  comps = mixture_lib.components(cfg.data.mixture)
  shared = cfg.data.labels if cfg.data.labels and (storage.path(cfg.data.labels) / "meta.json").is_file() else ""
  paths = [c.labels or shared for c in comps]
  if not all(paths):
    if not cfg.get("tokenizer"):
      missing = [c.name for c, p in zip(comps, paths) if not p]
      raise FileNotFoundError(f"data.mixture component(s) {missing} have no label store (their labels option, or "
                              "data.labels) and config.tokenizer is unset; make labels with "
                              "`python -m wavlm_jax.targets.tokenize` (--config.mixture as data.mixture)")
    tok = cfg.tokenizer.copy_and_resolve_references()
    with tok.unlocked():
      tok.mixture = cfg.data.mixture
    made = [str(storage.path(tok.workdir) / "labels" / c.name) for c in comps]
    absent = not all((storage.path(m) / "meta.json").is_file() for m, p in zip(made, paths) if not p)
    if jax.process_count() > 1:  # host 0 decides, so that every host runs the (multi-host) tokenizer or none
      from jax.experimental import multihost_utils
      absent = bool(multihost_utils.broadcast_one_to_all(np.array(absent)))
    if absent:
      from wavlm_jax.targets import tokenize

      log(f"no labels for the mixture: running the tokenizer ({tok.feature}, k={tok.k}) over its components first")
      tokenize.run(tok)
    paths = [p or m for p, m in zip(paths, made)]
  with data_cfg.unlocked():
    data_cfg.mixture = tuple((c.dataset, c.split, c.weight, {**_options(c), "labels": p}) for c, p in zip(comps, paths))
  stores = _checked_stores(cfg, paths)
  return data_cfg, stores[0]


def _options(component) -> dict:
  return {k: v for k, v in (("min_seconds", component.min_seconds), ("max_seconds", component.max_seconds))
          if v is not None}


def _checked_stores(cfg, paths: list[str]) -> list[labels_lib.LabelStore]:
  stores = [labels_lib.LabelStore(p) for p in paths]
  for path, store in zip(paths, stores):
    if store.num_classes > cfg.model.num_label_classes:
      raise ValueError(f"label store {path} has {store.num_classes} classes but "
                       f"config.model.num_label_classes={cfg.model.num_label_classes}")
    if (store.label_rate, store.num_classes, store.provenance) != (stores[0].label_rate, stores[0].num_classes,
                                                                    stores[0].provenance):
      raise ValueError(f"label stores {paths[0]} and {path} come from different codebooks (label rate, classes "
                       "or the k-means / recognizer that made them differ): a mixture's components must share one "
                       "tokenizer's labels")
  return stores


# ================================================================================================
# The train step
# ================================================================================================
def make_loss_fn(binder: params_lib.Binder, cfg, labels: labels_lib.LabelSpec):
  mcfg, lcfg = cfg.model, cfg.loss

  def loss_fn(params, batch, key):
    model = binder.model(params)
    out = model(batch["audio"], batch["padding_mask"], apply_mask=True, key=key, collect=bool(mcfg.predict_layers))
    logits = model.label_logits(out)
    t = out.last_hidden_state.shape[1]
    targets = losses.frame_targets(batch["labels"], t, labels.rate, audio.frame_rate(mcfg.conv_stride))
    valid = jnp.ones(targets.shape, bool) if out.frame_valid is None else out.frame_valid
    masked, unmasked = out.mask_time & valid, ~out.mask_time & valid
    total = lcfg.feature_pen_weight * out.features_pen
    aux = {"features_pen": out.features_pen}
    for name, lg in logits.items():
      ce_m, n_m, ok_m = losses.prediction_loss(lg, targets, masked)
      ce_u, n_u, ok_u = losses.prediction_loss(lg, targets, unmasked)
      loss_m, loss_u = ce_m / jnp.maximum(n_m, 1), ce_u / jnp.maximum(n_u, 1)
      total = total + lcfg.masked_weight * loss_m + lcfg.unmasked_weight * loss_u
      aux |= {f"loss_masked/{name}": loss_m, f"loss_unmasked/{name}": loss_u,
              f"acc_masked/{name}": ok_m / jnp.maximum(n_m, 1), f"acc_unmasked/{name}": ok_u / jnp.maximum(n_u, 1)}
    last = list(logits)[-1]  # the top-most head reports the headline accuracies
    real = jnp.sum(~batch["padding_mask"])
    aux |= {"acc_masked": aux[f"acc_masked/{last}"], "acc_unmasked": aux[f"acc_unmasked/{last}"],
            "masked_frames": jnp.sum(masked & (targets >= 0)), "target_entropy": _entropy(targets, masked, mcfg),
            "masked_fraction": jnp.sum(masked) / jnp.maximum(jnp.sum(valid), 1),
            "audio_seconds": real / audio.SAMPLE_RATE,
            "padding_share": jnp.sum(batch["padding_mask"]) / batch["padding_mask"].size}
    return total, aux

  return loss_fn


def _entropy(targets, select, mcfg):
  """Entropy (bits) of the histogram of targets at the selected frames."""
  hist = jnp.sum(jax.nn.one_hot(jnp.where(select, targets, -1), mcfg.num_label_classes), axis=(0, 1))
  p = hist / jnp.maximum(jnp.sum(hist), 1)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1)), 0))


PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def base_key(seed: int, prng_impl: str = "threefry2x32") -> jax.Array:
  """The run's root PRNG key (config.seed, config.prng_impl); step keys fold in the step number."""
  if prng_impl not in PRNG_IMPLS:
    raise ValueError(f"config.prng_impl must be one of {PRNG_IMPLS}, got {prng_impl!r}")
  return jax.random.key(seed, impl=prng_impl)


def make_train_step(loss_fn, tx, schedule, seed: int, mesh, rules, prng_impl: str = "threefry2x32"):
  """The pure step (state, batch) -> (state, metrics) for `loss_fn(params, batch, key) -> (loss, aux)`.
  Non-finite loss or gradients skip the update."""
  root = base_key(seed, prng_impl)

  def step(state, batch):
    key = jax.random.fold_in(root, state["step"])  # per-step randomness from (seed, step)
    with partitioning.use(mesh, rules):
      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, key)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {
        "params": keep(new_params, state["params"]),
        "opt_state": keep(opt_state, state["opt_state"]),
        "step": state["step"] + 1,
        "bad_streak": jnp.where(finite, 0, state["bad_streak"] + 1),
        "skipped": state["skipped"] + (~finite).astype(jnp.int32),
    }
    # optax advances its schedule only on applied updates; report the rate this step used.
    metrics = {"loss": loss, "learning_rate": schedule(state["step"] - state["skipped"]), "grad_norm": grad_norm,
               "param_norm": optax.global_norm(new_state["params"]),
               "update_norm": jnp.where(finite, optax.global_norm(updates), 0.0),
               "nonfinite": (~finite).astype(jnp.int32), "bad_streak": new_state["bad_streak"],
               "skipped_steps": new_state["skipped"], **aux}
    return new_state, metrics

  return step


def _opt_specs(opt_abstract, param_specs_flat):
  """Optimizer-state specs: leaves that mirror a parameter take its spec; counters are replicated. The
  parameter path is the longest suffix of the leaf's dict keys that names a parameter (optax's
  multi_transform puts the group name in front)."""
  def spec(path, leaf):
    keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    for i in range(len(keys)):
      found = param_specs_flat.get("/".join(keys[i:]))
      if found is not None:
        return found
    return P()
  return jax.tree_util.tree_map_with_path(spec, opt_abstract)


# ================================================================================================
# Training
# ================================================================================================
BATCH_KEYS = ("audio", "padding_mask", "labels")


def abstract_batch(rows: int, samples: int, labels: labels_lib.LabelSpec, sharding) -> dict:
  """The global batch of one bucket as ShapeDtypeStructs (to compile its step ahead of the loop)."""
  count = audio.label_count(samples, labels.rate)
  return {"audio": jax.ShapeDtypeStruct((rows, samples), jnp.float32, sharding=sharding),
          "padding_mask": jax.ShapeDtypeStruct((rows, samples), jnp.bool_, sharding=sharding),
          "labels": jax.ShapeDtypeStruct((rows, count), jnp.int32, sharding=sharding)}


class Averages:
  """Means of a few metrics over the first and the last `span` steps of a run, in O(span) floats
  (a 400k-step run must not keep every step's metrics)."""

  KEYS = ("loss", "acc_masked", "acc_unmasked")

  def __init__(self, span: int, keys: tuple[str, ...] = KEYS):
    import collections

    self.keys = keys
    self.span, self.count, self.skipped = max(1, span), 0, 0
    self.head = {k: 0.0 for k in self.keys}
    self.tail = collections.deque(maxlen=self.span)

  def add(self, m: dict) -> None:
    row = tuple(m[k] for k in self.keys)
    if self.count < self.span:
      for k, v in zip(self.keys, row):
        self.head[k] += v
    self.tail.append(row)
    self.count += 1
    self.skipped = int(m["skipped_steps"])

  def summary(self) -> dict:
    if not self.count:
      return {}
    n_head, tail = min(self.count, self.span), np.mean(np.array(self.tail), axis=0)
    out = {}
    for k, last in zip(self.keys, tail):
      out |= {f"first_{k}": self.head[k] / n_head, f"final_{k}": float(last)}
    return out | {"averaged_over_steps": len(self.tail), "skipped_steps": self.skipped}


class Run(NamedTuple):
  binder: params_lib.Binder
  schedule: optax.Schedule
  abstract_state: dict  # ShapeDtypeStructs carrying their shardings (the restore target)
  state_sharding: dict
  init: Callable[[], dict]  # jitted: builds the state directly sharded
  step: Callable  # jitted, state donated: (state, batch) -> (state, metrics); the first of `steps`
  steps: dict[str, Callable]  # every jitted step variant by name (fine-tuning has "frozen" and "full")
  attention: kernel_check.Outcome  # which attention path runs, and whether the fused kernels were checked


def build(cfg, mesh, rules, labels: labels_lib.LabelSpec | None = None, *, model_cfg=None, optimizer=None,
          loss_fns=None, batch_keys=BATCH_KEYS) -> Run:
  """The sharded train state and the jitted step for `cfg` on `mesh`. Parameters and optimizer state
  are created by a jitted init with out_shardings, never materialised on one device. The model's
  platform-dependent choices are resolved for the mesh's devices, not this host's.

  Pretraining passes `labels`; other programs (fine-tuning) pass `model_cfg`, `optimizer() -> (tx,
  schedule)` and `loss_fns(binder) -> {name: loss_fn}` (one jitted step per name) and their batch keys."""
  model_cfg, attention = kernel_check.resolve(model_cfg or cfg.model, mesh_lib.platform(mesh))
  binder = params_lib.Binder(wavlm.abstract(model_cfg))
  if optimizer is None:
    tx, schedule = optim.optimizer(cfg.optim, cfg.total_steps), optim.schedule(cfg.optim, cfg.total_steps)
  else:
    tx, schedule = optimizer()
  if loss_fns is None:
    loss_fns = lambda b: {"train": make_loss_fn(b, cfg, labels)}

  def init_state():
    params = binder.tree(wavlm.Model(model_cfg, rngs=nnx.Rngs(cfg.seed)))
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "bad_streak": jnp.zeros((), jnp.int32), "skipped": jnp.zeros((), jnp.int32)}

  abstract = jax.eval_shape(init_state)
  param_specs = {k: partitioning.spec_for(binder.logical_axes[k], binder.shapes[k], mesh, rules) for k in binder.keys}
  specs = {"params": params_lib.nest(param_specs), "opt_state": _opt_specs(abstract["opt_state"], param_specs),
           "step": P(), "bad_streak": P(), "skipped": P()}
  state_sharding = mesh_lib.named(mesh, specs)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  batch_sharding = NamedSharding(mesh, P(mesh_lib.BATCH))
  steps = {name: jax.jit(make_train_step(fn, tx, schedule, cfg.seed, mesh, rules, cfg.get("prng_impl", "threefry2x32")),
                         in_shardings=(state_sharding, {k: batch_sharding for k in batch_keys}),
                         out_shardings=(state_sharding, None), donate_argnums=0)
           for name, fn in loss_fns(binder).items()}
  return Run(binder, schedule, abstract, state_sharding, jax.jit(init_state, out_shardings=state_sharding),
             next(iter(steps.values())), steps, attention)


def host_params(state) -> dict:
  """The parameters as host NumPy arrays (a collective over all processes when there are several)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(state["params"], tiled=True)
  return jax.device_get(state["params"])


def train(cfg, workdir: str) -> dict:
  """Runs (or resumes) the configured training in `workdir`; returns the final summary."""
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
  log(f"mesh {dict(mesh.shape)} over {jax.device_count()} devices ({jax.process_count()} processes), "
      f"sharding preset {cfg.sharding!r}")

  # ---- Data ----------------------------------------------------------------------------------
  data_cfg, store = data_with_labels(cfg)
  iterator = data.create_iterator(data_cfg, batch_multiple=mesh_lib.batch_devices(mesh))
  if iterator.plan is not None:
    log(f"duration batching: {json.dumps(iterator.plan.stats())}")

  # ---- Model and optimizer, built sharded ------------------------------------------------------
  run = build(cfg, mesh, rules, store.spec)

  # ---- Restore ------------------------------------------------------------------------------
  ckpt = checkpoint.TrainCheckpointer(storage.path(workdir) / "checkpoints", every=cfg.checkpoint.every_steps,
                                      keep=cfg.checkpoint.keep, keep_period=cfg.checkpoint.keep_period,
                                      asynchronous=cfg.checkpoint.asynchronous)
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, run.abstract_state)
    iterator.set_state(data_state)
    log(f"resumed from {workdir}/checkpoints at step {latest}")
  else:
    state = run.init()
    if cfg.init_from:
      state = _warm_start(state, cfg, run.state_sharding)
  start_step = int(state["step"])

  # ---- Step ---------------------------------------------------------------------------------
  def next_batch():
    host = next(iterator)
    return host, data.to_global({k: host[k] for k in BATCH_KEYS}, batch_sharding)

  # One compiled step per batch shape (bucket), all ahead of the loop; MFU from analytic model FLOPs
  # (docs/sharding.md#compute-anchors) per shape: XLA's cost analysis undercounts convolutions.
  compiled, step_flops = {}, {}
  for rows, samples in iterator.shapes():
    compiled[samples] = run.step.lower(run.abstract_state, abstract_batch(rows, samples, store.spec,
                                                                           batch_sharding)).compile()
    seconds = samples / audio.SAMPLE_RATE
    step_flops[samples] = flops.model_flops_per_audio_second(cfg.model, seconds) * rows * seconds
    log(f"step compiled for {rows} x {seconds:.2f} s: {step_flops[samples] / 1e9:.2f} model GFLOP per step "
        f"(XLA cost analysis {flops.compiled_flops(compiled[samples]) / 1e9:.2f})")
  peak = flops.peak_flops_per_device(cfg.peak_flops_per_device) * jax.device_count()
  log(f"peak {peak / 1e12:.2f} TFLOP/s over all devices")
  host_batch, batch = next_batch()

  # ---- Loop ---------------------------------------------------------------------------------
  reporter = Reporter(cfg, workdir, total_steps, start_step, peak, constants=run.attention.metrics())
  step = start_step
  with LoopGuard(cfg, ckpt, reporter, workdir, total_steps) as guard:
    while step < total_steps:
      data_state = iterator.get_state()  # the iterator position *after* this step's batch
      samples = batch["audio"].shape[1]
      state, step_metrics = compiled[samples](state, batch)
      step += 1
      guard.check(reporter.add(step, step_metrics, host_batch, step_flops[samples]))  # the previous step's
      if guard.end_of_step(step, state, data_state):
        break
      if step < total_steps:
        host_batch, batch = next_batch()
    reporter.flush()
  status = guard.status

  # ---- Finish -------------------------------------------------------------------------------
  summary = {"status": status, "step": step, "workdir": workdir, "label_rate": store.label_rate,
             "num_label_classes": cfg.model.num_label_classes,
             "chance_accuracy": 1.0 / max(store.num_classes, 1)}
  summary |= reporter.averages.summary()  # means over the first and last tenth of this run's steps
  summary |= run.attention.summary()
  if status == "finished":  # the model directory for load_encoder, the tokenizer and conversion
    params = host_params(state)  # collective: every process
    if jax.process_index() == 0:
      directory.save_model(storage.path(workdir) / "model", params_lib.flatten(params), cfg.model, overwrite=True)
    summary["model"] = str(storage.path(workdir) / "model")
  if jax.process_index() == 0:
    (storage.path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
    log("summary: " + json.dumps(summary))
  if jax.process_count() > 1:  # no host exits before the summary exists: launchers read it when hosts exit
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("summary written")
  return summary


class LoopGuard:
  """What surrounds and follows every step of a training loop (pretraining and fine-tuning): SIGTERM is
  caught while the loop runs; after a step, a stop after `nan_patience` non-finite steps in a row, the
  preemption check and the checkpoint; on leaving, the checkpointer and the reporter are closed."""

  def __init__(self, cfg, ckpt: checkpoint.TrainCheckpointer, reporter: "Reporter", workdir: str, total_steps: int):
    self.cfg, self.ckpt, self.reporter, self.workdir, self.total_steps = cfg, ckpt, reporter, workdir, total_steps
    self.stop = {"signal": None}
    self.status = "finished"

  def __enter__(self) -> "LoopGuard":
    self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.update(signal=signum))
    return self

  def __exit__(self, *exc) -> bool:
    signal.signal(signal.SIGTERM, self._previous)
    self.ckpt.close()
    self.reporter.close()
    return False

  def check(self, reported) -> None:
    """Raises NonFiniteError when the reported step ends `nan_patience` non-finite steps in a row."""
    if reported is not None and reported[1]["bad_streak"] >= self.cfg.nan_patience:
      self.ckpt.wait()
      raise NonFiniteError(
          f"{self.cfg.nan_patience} non-finite steps in a row (loss or gradients), the last at step {reported[0]}; "
          f"stopping. Non-finite updates were skipped, so the last good checkpoint is step "
          f"{self.ckpt.latest_step()} in {self.workdir}/checkpoints.")

  def end_of_step(self, step: int, state, data_state: dict) -> bool:
    """Checkpoints when due (and when stopping); True when the run must stop (preempted)."""
    c = self.cfg.checkpoint
    preempted = _preempted(self.stop, step, c.preemption_check_every, self.total_steps)
    if step % c.every_steps == 0 or preempted or step == self.total_steps:
      self.ckpt.save(step, state, data_state, self.cfg.to_dict(), force=True)
    if preempted:
      self.status = "preempted"
      log(f"signal {self.stop['signal']}: saved a checkpoint at step {step} and stopping; rerun the same "
          "command to resume")
    return preempted


def _preempted(stop, step: int, every: int, total_steps: int) -> bool:
  """Whether to save and stop after `step`: at once on one host; on several, every process gets the
  same answer from a collective check every `every` steps (a host round trip, so not every step)."""
  local = stop["signal"] is not None
  if jax.process_count() == 1:
    return local
  if step % max(1, every) and step != total_steps:
    return False
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.array([local]))))


class Reporter:
  """A step's metrics, fetched one step late (the device runs the next step meanwhile): TensorBoard and
  metrics.jsonl every `log_every` steps, the console line, mixed-input audio, per-step throughput and
  MFU, a mixture's per-component audio shares (`data/share/NAME`), and the first/last-tenth averages of
  the summary. A step's time runs from the previous step's
  metrics to its own: with the next step always queued, the device ran this step in between; its FLOPs
  and audio are its own bucket's."""

  def __init__(self, cfg, workdir: str, total_steps: int, start_step: int, peak: float, *,
               keys: tuple[str, ...] = Averages.KEYS, fields=metrics_lib.Progress.FIELDS, constants=None):
    self.cfg, self.peak = cfg, peak
    self.constants = dict(constants or {})  # logged with every step (which attention path runs)
    self.writer = metrics_lib.Writer(workdir, enabled=jax.process_index() == 0)
    self.progress = metrics_lib.Progress(total_steps, start_step, fields)
    self.averages = Averages((total_steps - start_step) // 10, keys)
    mixture = cfg.data.get("mixture") if "data" in cfg else None
    self.shares = mixture_lib.Shares([c.name for c in mixture_lib.components(mixture)]) if mixture else None
    self._pending, self._done = None, None

  def add(self, step: int, device_metrics: dict, host_batch: dict, step_flops: float):
    """Queues this step; logs the previous one and returns (its step, its metrics), or None."""
    previous, self._pending = self._pending, (step, device_metrics, host_batch, step_flops)
    return self._log(*previous) if previous is not None else None

  def flush(self):
    """Logs the last queued step (at the end of the run or before stopping)."""
    if self._pending is not None:
      self._log(*self._pending, force=True)
      self._pending = None

  def close(self) -> None:
    self.writer.close()

  def _log(self, step, device_metrics, host_batch, step_flops, force=False):
    m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    done, previous = time.perf_counter(), self._done
    self._done = done
    if previous is not None:  # the first step has no previous one to time against
      seconds = done - previous
      m["steps_per_second"] = 1.0 / seconds
      m["audio_seconds_per_second"] = m["audio_seconds"] / seconds  # real audio only, never padding
      m["mfu"] = step_flops / seconds / self.peak if self.peak > 0 else 0.0
    m |= self.constants
    if self.shares is not None and "component" in host_batch:  # a mixture's batch is one component's
      m |= self.shares.add(int(host_batch["component"][0]), m["audio_seconds"])
    self.averages.add(m)
    cfg = self.cfg
    if step % cfg.log_every == 0 or force or step == 1:
      self.writer.scalars(step, m)
      log(self.progress.line(step, m))
    if cfg.audio_every and step % cfg.audio_every == 0 and host_batch.get("mixed") is not None:
      mixed = np.flatnonzero(host_batch["mixed"])[:2]
      self.writer.audio(step, {f"mixed_input/{i}": host_batch["audio"][r] for i, r in enumerate(mixed)})
    return step, m


def _warm_start(state, cfg, state_sharding, model_cfg=None):
  """Parameters from a model directory (e.g. a converted released WavLM); heads it lacks stay fresh."""
  flat = directory.load_flat_params(cfg.init_from, model_cfg or cfg.model)
  current = params_lib.flatten(state["params"])
  taken, fresh = [], []
  for key, value in current.items():
    if key in flat:
      if tuple(flat[key].shape) != tuple(value.shape):
        raise ValueError(f"init_from {cfg.init_from}: {key} has shape {flat[key].shape}, the model wants {value.shape}")
      current[key] = flat[key]
      taken.append(key)
    else:
      fresh.append(key)
  log(f"warm start from {cfg.init_from}: {len(taken)} tensors loaded, {len(fresh)} initialised fresh "
      f"({sorted({k.split('/')[0] for k in fresh}) or 'none'})")
  state = dict(state, params=params_lib.nest(current))
  return jax.device_put(state, state_sharding)


# ================================================================================================
# Command line
# ================================================================================================
def main(argv):
  from absl import flags

  del argv
  train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "run recipe (configs/*.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard logs and metrics.jsonl go here")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
