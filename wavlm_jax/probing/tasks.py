"""The probing tasks (docs/probing.md#tasks-and-heads): what each predicts from which dataset field, its
head, loss and metric, SUPERB's learning rate; the two-speaker mixtures and DER of the diarization task;
padded batches of cached features; and the one training loop every probe uses (Adam, gradient clipping
1, the best validation result kept).

    task = tasks.get("sid")
    data = tasks.build(task, {"train": f_train, "validation": f_valid, "test": f_test}, tasks.Fields(), 50.0)
    probe = tasks.build_probe(task, f_train.num_layers, f_train.dim, data.classes, {})
    train = tasks.Batches(task.kind, f_train, data, "train", 8)   # likewise "validation", "test"
    result = tasks.fit(task, data, probe, train, valid, lr=1e-2, steps=500)
    tasks.evaluate(task, data, "test", tasks.predict(result.probe, test))   # {"accuracy": ...}
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wavlm_jax import audio
from wavlm_jax.data.vocab import Vocabulary
from wavlm_jax.decoding import greedy, score
from wavlm_jax.models import losses
from wavlm_jax.probing import features as features_lib
from wavlm_jax.probing.featurizer import Featurizer
from wavlm_jax.probing.heads import FrameLinear, MeanPoolLinear, Probe, RecurrentHead

CTC, UTTERANCE, FRAMES, ACTIVITY = "ctc", "utterance", "frames", "activity"


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  title: str
  kind: str  # ctc | utterance | frames | activity
  metric: str
  higher_is_better: bool
  lr: float  # SUPERB's (s3prl downstream/*/config.yaml), tuned for `superb_steps`
  superb_steps: int
  steps: int  # this project's default: minutes on a CPU (docs/probing.md#tasks-and-heads)
  head: dict  # head options (flags override them)


TASKS = {t.name: t for t in (
    Task("pr", "phoneme recognition", CTC, "per", False, 1e-2, 100_000, 1000,
         {"head": "frame", "project_dim": 256}),
    Task("sid", "speaker identification", UTTERANCE, "accuracy", True, 1e-4, 200_000, 1000,
         {"head": "mean_pool", "project_dim": 256}),
    Task("asr", "speech recognition (letters)", CTC, "wer", False, 1e-4, 200_000, 2000,
         {"head": "rnn", "project_dim": 1024, "rnn_hidden": 1024, "rnn_layers": 2, "bidirectional": True, "dropout": 0.2}),
    Task("sd", "speaker diarization (two-speaker mixtures)", ACTIVITY, "der", False, 1e-4, 30_000, 1000,
         {"head": "rnn", "project_dim": 0, "rnn_hidden": 512, "rnn_layers": 1, "bidirectional": False, "dropout": 0.0}),
    Task("lid", "language identification", UTTERANCE, "accuracy", True, 1e-4, 200_000, 1000,
         {"head": "mean_pool", "project_dim": 256}),
    Task("phone", "frame-level phone classification (linear, on the alignment)", FRAMES, "accuracy", True,
         1e-3, 0, 500, {"head": "frame", "project_dim": 0}),
)}


def get(name: str) -> Task:
  """A task by name; an unknown name is an error listing the known ones."""
  if name not in TASKS:
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
  return TASKS[name]


@dataclasses.dataclass
class Fields:
  """Which dataset field each task reads (flags: --text-field, ...), and the alignment's label rate."""
  text: str = "text"
  phonemes: str = "phonemes"
  speaker: str = "speaker"
  language: str = "language"
  alignment: str = "phone_alignment"
  label_rate: float = 100.0


FLAG = {"text": "--text-field", "phonemes": "--phoneme-field", "speaker": "--speaker-field",
        "language": "--language-field", "alignment": "--alignment-field"}


# ================================================================================================
# Targets
# ================================================================================================
@dataclasses.dataclass
class TaskData:
  """Targets per split: `targets[split][i]` for utterance `keep[split][i]` of that split's features."""
  classes: int  # the head's outputs
  targets: dict[str, list]
  keep: dict[str, list[int]]
  vocab: Vocabulary | None = None
  references: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  class_names: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)


def _field(feats: features_lib.Features, fields: Fields, which: str) -> list:
  return feats.field(getattr(fields, which), FLAG.get(which, ""))


def phone_frames(alignments: list[np.ndarray], num_frames: list[int], label_rate: float,
                 frame_rate: float) -> list[np.ndarray]:
  """Per-frame phone labels at the model's frame rate from alignments at `label_rate`, by the loss' rule
  (`losses.frame_targets`: frame t takes label floor(t * label_rate / frame_rate), i.e. every second
  10 ms label at 50 Hz); -1 past an alignment's end. One call for all utterances: one compilation."""
  if not alignments:
    return []
  width = max(1, max(len(a) for a in alignments))
  padded = np.full((len(alignments), width), -1, np.int32)
  for i, a in enumerate(alignments):
    padded[i, :len(a)] = a
  frames = np.asarray(losses.frame_targets(padded, max(num_frames), label_rate, frame_rate))
  return [frames[i, :n] for i, n in enumerate(num_frames)]


def build(task: Task, splits: dict[str, features_lib.Features], fields: Fields, frame_rate: float) -> TaskData:
  """The targets of `task` for every split (the first split, "train", defines classes and vocabulary);
  validation/test utterances of classes unseen in training are dropped and counted in `notes`."""
  train = splits["train"]
  if task.kind == CTC:
    which = "phonemes" if task.name == "pr" else "text"
    vocab = Vocabulary.build(_field(train, fields, which), kind="phonemes" if which == "phonemes" else "letters")
    data = TaskData(len(vocab), {}, {}, vocab=vocab)
    for split, feats in splits.items():
      texts = _field(feats, fields, which)
      keep = [i for i, t in enumerate(texts) if vocab.reference(t).strip()]
      data.keep[split] = keep
      data.targets[split] = [vocab.encode(texts[i]) for i in keep]
      data.references[split] = [vocab.reference(texts[i]) for i in keep]
      if len(keep) < len(texts):
        data.notes.append(f"{split}: {len(texts) - len(keep)} utterances with an empty transcript skipped")
    return data
  if task.kind == UTTERANCE:
    which = "language" if task.name == "lid" else "speaker"
    names = sorted(set(_field(train, fields, which)))
    if len(names) < 2:
      more = (" (espeak_speech/small has en-us and en-gb, espeak_speech/base seven languages)"
              if task.name == "lid" else "")
      raise ValueError(f"{task.name}: {train.meta['dataset']} has only {len(names)} {which} value(s) "
                       f"{names} in field {getattr(fields, which)!r} of split {train.meta['split']!r}: "
                       f"{task.title} needs at least two{more}")
    index = {n: i for i, n in enumerate(names)}
    data = TaskData(len(names), {}, {}, class_names=names)
    for split, feats in splits.items():
      values = _field(feats, fields, which)
      keep = [i for i, v in enumerate(values) if v in index]
      data.keep[split], data.targets[split] = keep, [index[values[i]] for i in keep]
      if len(keep) < len(values):
        data.notes.append(f"{split}: {len(values) - len(keep)} utterances of a {which} unseen in training skipped")
    return data
  if task.kind == FRAMES:
    data = TaskData(0, {}, {})
    for split, feats in splits.items():
      align = _field(feats, fields, "alignment")
      data.keep[split] = list(range(len(feats)))
      data.targets[split] = phone_frames(align, [int(n) for n in feats.lengths], fields.label_rate, frame_rate)
    data.classes = 1 + max(int(t.max(initial=-1)) for ts in data.targets.values() for t in ts)
    return data
  if task.kind == ACTIVITY:
    data = TaskData(2, {}, {})
    for split, feats in splits.items():
      acts = feats.field("activity")
      data.keep[split] = list(range(len(feats)))
      data.targets[split] = [np.asarray(a, np.float32).reshape(n, 2) for a, n in zip(acts, feats.lengths)]
    return data
  raise ValueError(f"task kind {task.kind!r}")


def build_probe(task: Task, num_states: int, dim: int, classes: int, options: dict, *, layer: int | None = None,
                layer_norm: bool = False, seed: int = 0) -> Probe:
  """The featurizer and the task's head; `options` override the task's head options (flags)."""
  o = {**task.head, **{k: v for k, v in options.items() if v is not None}}
  rngs = nnx.Rngs(seed)
  featurizer = Featurizer(num_states, layer_norm=layer_norm, layer=layer)
  if o["head"] == "frame":
    head = FrameLinear(dim, classes, project_dim=o["project_dim"], rngs=rngs)
  elif o["head"] == "mean_pool":
    head = MeanPoolLinear(dim, classes, project_dim=o["project_dim"], rngs=rngs)
  else:
    head = RecurrentHead(dim, classes, hidden=o["rnn_hidden"], num_layers=o["rnn_layers"],
                         bidirectional=o["bidirectional"], project_dim=o["project_dim"], dropout=o["dropout"],
                         rngs=rngs)
  return Probe(featurizer, head)


# ================================================================================================
# Losses (jitted) and scores (host)
# ================================================================================================
def pit_bce(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
  """Permutation-invariant BCE for two speakers: per utterance the smaller of the summed BCE against the
  targets as given and with the speakers swapped, summed over utterances, over valid frame-speakers."""
  bce = lambda y: jnp.sum(jnp.where(valid[..., None], optax.sigmoid_binary_cross_entropy(logits, y), 0), axis=(1, 2))
  per_utt = jnp.minimum(bce(targets), bce(targets[..., ::-1]))
  return jnp.sum(per_utt) / jnp.maximum(2 * jnp.sum(valid), 1)


def loss(kind: str, logits: jax.Array, batch: dict) -> jax.Array:
  """The task loss of a batch (filler rows and padding frames count for nothing)."""
  logits = logits.astype(jnp.float32)
  valid, rows, labels = batch["valid"], batch["rows"], batch["labels"]
  if kind == CTC:
    per_utt, feasible = losses.ctc_loss(logits, valid, labels)
    return losses.ctc_reduce(per_utt, feasible, labels, rows, "token")
  if kind == UTTERANCE:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return jnp.sum(jnp.where(rows, ce, 0)) / jnp.maximum(jnp.sum(rows), 1)
  if kind == FRAMES:
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    select = valid & (labels >= 0)
    return jnp.sum(jnp.where(select, ce, 0)) / jnp.maximum(jnp.sum(select), 1)
  if kind == ACTIVITY:
    return pit_bce(logits, labels, valid)
  raise ValueError(f"task kind {kind!r}")


def diarization_error(reference: np.ndarray, hypothesis: np.ndarray) -> dict[str, float]:
  """Frame-level diarization error of one recording. reference, hypothesis: (T, S) speaker activity.

  Speaker time is counted per (frame, speaker): with N_ref(t), N_sys(t) the speakers active in frame t
  in the reference and the hypothesis and N_map(t) those active in both under the speaker mapping,
    missed      = sum_t max(N_ref - N_sys, 0)
    false alarm = sum_t max(N_sys - N_ref, 0)
    confusion   = sum_t min(N_ref, N_sys) - N_map
    DER = (missed + false alarm + confusion) / sum_t N_ref
  (NIST's definition without a collar, as EEND and s3prl score SD frame by frame). The mapping of
  hypothesis to reference speakers is the permutation with the most matched speaker time, which is the
  one with the lowest DER (missed and false alarm do not depend on it)."""
  ref, hyp = np.asarray(reference, bool), np.asarray(hypothesis, bool)
  if ref.shape != hyp.shape or ref.ndim != 2:
    raise ValueError(f"reference {ref.shape} and hypothesis {hyp.shape} must both be (frames, speakers)")
  matched = max(int(np.sum(ref & hyp[:, list(p)])) for p in itertools.permutations(range(ref.shape[1])))
  n_ref, n_sys = ref.sum(1), hyp.sum(1)
  return {"speech": int(n_ref.sum()), "missed": int(np.maximum(n_ref - n_sys, 0).sum()),
          "false_alarm": int(np.maximum(n_sys - n_ref, 0).sum()),
          "confusion": int(np.minimum(n_ref, n_sys).sum()) - matched}


def der(references: list[np.ndarray], hypotheses: list[np.ndarray]) -> dict[str, float]:
  """DER over recordings (each mapped with its own best permutation), and its parts as fractions."""
  totals = {"speech": 0, "missed": 0, "false_alarm": 0, "confusion": 0}
  for r, h in zip(references, hypotheses):
    for k, v in diarization_error(r, h).items():
      totals[k] += v
  speech = max(totals["speech"], 1)
  return {"der": (totals["missed"] + totals["false_alarm"] + totals["confusion"]) / speech,
          "missed": totals["missed"] / speech, "false_alarm": totals["false_alarm"] / speech,
          "confusion": totals["confusion"] / speech, "speech_frames": totals["speech"]}


def evaluate(task: Task, data: TaskData, split: str, outputs: list[np.ndarray]) -> dict[str, float]:
  """The task's metric (and its parts) from per-utterance head outputs, in `data.keep[split]` order."""
  targets = data.targets[split]
  if task.kind == CTC:
    hyps = [data.vocab.decode(ids) for out in outputs
            for ids in greedy.decode(out[None], np.array([len(out)]))]
    return score.error_rates(data.references[split], hyps, data.vocab.kind)
  if task.kind == UTTERANCE:
    correct = sum(int(np.argmax(o) == t) for o, t in zip(outputs, targets))
    return {"accuracy": correct / max(len(targets), 1), "utterances": len(targets), "classes": data.classes}
  if task.kind == FRAMES:
    hits = total = 0
    for o, t in zip(outputs, targets):
      sel = t >= 0
      hits, total = hits + int(np.sum(np.argmax(o, -1)[sel] == t[sel])), total + int(sel.sum())
    return {"accuracy": hits / max(total, 1), "frames": total, "classes": data.classes}
  return der([t > 0.5 for t in targets], [o > 0 for o in outputs])


def better(task: Task, a: float, b: float | None) -> bool:
  return b is None or (a > b if task.higher_is_better else a < b)


# ================================================================================================
# Batches
# ================================================================================================
class Batches:
  """Padded batches of one split: hidden (B, L, T, D) (only `layers` of the hidden states), valid (B, T),
  rows (B,) (False = filler row), labels by task kind. Utterances of similar length go together; frames
  are padded to at most `count` lengths (or to `levels`, another split's) and labels to one length, so
  that jit compiles a few shapes."""

  def __init__(self, kind: str, feats: features_lib.Features, data: TaskData, split: str, batch_size: int,
               layers=slice(None), levels: np.ndarray | None = None, count: int = 4):
    self.kind, self.feats, self.layers, self.batch_size = kind, feats, layers, batch_size
    self.keep, self.targets = data.keep[split], data.targets[split]
    self.lengths = feats.lengths[self.keep]
    own = features_lib.length_levels(self.lengths, count, 16)
    # Another split's levels (the training split's): the same shapes, no new compilation.
    self.levels = own if levels is None else np.unique(np.append(levels, own[-1] if own[-1] > levels[-1] else []))
    longest = max((len(t) for t in self.targets), default=1) if kind == CTC else 1
    self.label_len = -(-max(longest, 1) // 16) * 16

  def __len__(self) -> int:
    return len(self.keep)

  def make(self, members: list[int]) -> dict[str, np.ndarray]:
    """The batch of positions `members` (into `keep`)."""
    b = self.batch_size
    t = int(self.levels[np.searchsorted(self.levels, max(self.lengths[m] for m in members))])
    states = len(range(self.feats.num_layers)[self.layers]) if isinstance(self.layers, slice) else 1
    hidden = np.zeros((b, states, t, self.feats.dim), np.float32)
    valid, rows = np.zeros((b, t), bool), np.zeros(b, bool)
    labels = {CTC: np.full((b, self.label_len), -1, np.int32), UTTERANCE: np.full(b, -1, np.int32),
              FRAMES: np.full((b, t), -1, np.int32), ACTIVITY: np.zeros((b, t, 2), np.float32)}[self.kind]
    for row, m in enumerate(members):
      n = int(self.lengths[m])
      h = self.feats.utterance(self.keep[m], self.layers)
      hidden[row, :, :n] = h if h.ndim == 3 else h[None]
      valid[row, :n], rows[row] = True, True
      target = self.targets[m]
      if self.kind == UTTERANCE:
        labels[row] = target
      elif self.kind == CTC:
        labels[row, :len(target)] = target  # the row is as wide as the longest target
      else:  # per frame
        labels[row, :min(len(target), t)] = target[:t]
    return {"hidden": hidden, "valid": valid, "rows": rows, "labels": labels}

  def in_order(self):
    """(positions, batch) over the split once, sorted by length (evaluation)."""
    order = sorted(range(len(self)), key=lambda m: self.lengths[m])
    for k in range(0, len(order), self.batch_size):
      yield order[k:k + self.batch_size], self.make(order[k:k + self.batch_size])

  def forever(self, seed: int):
    """Training batches: each epoch shuffles, then sorts by length within windows of 8 batches."""
    for epoch in itertools.count():
      perm = np.random.default_rng([seed, epoch]).permutation(len(self))
      window = 8 * self.batch_size
      groups = []
      for k in range(0, len(perm), window):
        part = sorted(perm[k:k + window], key=lambda m: self.lengths[m])
        groups += [part[j:j + self.batch_size] for j in range(0, len(part), self.batch_size)]
      for g in np.random.default_rng([seed, epoch, 1]).permutation(len(groups)):
        yield self.make([int(m) for m in groups[g]])


# ================================================================================================
# The training loop
# ================================================================================================
@dataclasses.dataclass
class FitResult:
  lr: float
  validation: dict
  best_step: int
  layer_weights: list[float]
  probe: Probe
  history: list[dict]
  seconds: float
  diverged: bool = False  # the loss went non-finite before any validation: no usable parameters


def _mesh(devices: int) -> Mesh:
  """A 1-D mesh over the first `devices` devices (0: all). Probes are small: one device trains them
  fastest on a CPU host (fake devices share its cores); on accelerators, rows can be spread over all."""
  return Mesh(np.array(jax.devices()[:devices or None]), ("data",))


def rows_for(batch_size: int, devices: int = 1) -> int:
  """Batch rows: a multiple of the training devices (rows are sharded over them)."""
  n = len(jax.devices()[:devices or None])
  return -(-batch_size // n) * n


def predict(probe: Probe, batches: Batches, devices: int = 1) -> list[np.ndarray]:
  """Head outputs per utterance of a split (valid frames only for frame-level outputs), in `keep` order."""
  mesh = _mesh(devices)
  rows = NamedSharding(mesh, P("data"))
  graphdef, state = nnx.split(probe)
  state = jax.device_put(state, NamedSharding(mesh, P()))
  forward = _forward(graphdef)
  outputs: list = [None] * len(batches)
  for members, batch in batches.in_order():
    out = np.asarray(forward(state, jax.device_put(batch["hidden"], rows), jax.device_put(batch["valid"], rows)))
    for row, m in enumerate(members):
      outputs[m] = out[row] if batches.kind == UTTERANCE else out[row, :int(batches.lengths[m])]
  return outputs


_FORWARDS: dict = {}


def _forward(graphdef):
  """One jitted forward per probe structure (reused across evaluations)."""
  if graphdef not in _FORWARDS:
    _FORWARDS[graphdef] = jax.jit(lambda state, hidden, valid: nnx.merge(graphdef, state)(hidden, valid))
  return _FORWARDS[graphdef]


def _optimizer(lr: float) -> optax.GradientTransformation:
  """Adam with the gradient norm clipped at 1 (s3prl's runner); the learning rate lives in the optimizer
  state, so one compiled step serves every learning rate of a sweep."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=lr))


_STEPS: dict = {}


def _train_step(graphdef, kind: str):
  """One jitted training step per probe structure and task kind (reused across fits)."""
  if (graphdef, kind) not in _STEPS:
    update = _optimizer(0.0).update  # reads the learning rate from the state

    def step(params, rest, opt_state, batch, key):
      def loss_fn(params):
        logits = nnx.merge(graphdef, params, rest)(batch["hidden"], batch["valid"], key)
        return loss(kind, logits, batch)

      value, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, value

    _STEPS[(graphdef, kind)] = jax.jit(step)
  return _STEPS[(graphdef, kind)]


def fit(task: Task, data: TaskData, probe: Probe, train: Batches, validation: Batches, *, lr: float, steps: int,
        eval_every: int = 0, seed: int = 0, devices: int = 1, log: Callable[[str], None] = print) -> FitResult:
  """Trains the probe's featurizer weights and head with Adam (gradient norm clipped at 1, as s3prl's
  runner) for `steps` steps; validates every `eval_every` steps (0: at the end only) and keeps the
  parameters of the best validation result (SUPERB tests the best dev checkpoint). Batch rows are
  sharded over the first `devices` devices (0: all; the batch size must be a multiple: `rows_for`)."""
  start = time.time()
  mesh = _mesh(devices)
  rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  graphdef, params, rest = nnx.split(probe, nnx.Param, ...)
  params, rest = jax.device_put((params, rest), replicated)
  opt_state = jax.device_put(_optimizer(lr).init(params), replicated)
  step = _train_step(graphdef, task.kind)
  eval_every = eval_every if 0 < eval_every < steps else steps
  key = jax.random.key(seed)
  best, best_state, best_step, history, running = None, None, 0, [], []
  for i, batch in zip(range(1, steps + 1), train.forever(seed)):
    batch = jax.device_put(batch, rows)
    params, opt_state, value = step(params, rest, opt_state, batch, jax.random.fold_in(key, i))
    running.append(value)
    if i % eval_every == 0 or i == steps:
      nnx.update(probe, jax.device_get(params))
      metrics = evaluate(task, data, "validation", predict(probe, validation, devices))
      train_loss = float(np.mean(jax.device_get(running)))
      running = []
      history.append({"step": i, "train_loss": train_loss, **metrics})
      log(f"  lr {lr:g} step {i}: train loss {train_loss:.4f}, validation {task.metric} {metrics[task.metric]:.4f}")
      if not math.isfinite(train_loss):
        log(f"  lr {lr:g}: the loss is not finite; stopping this run")
        break
      if best_state is None or better(task, metrics[task.metric], best[task.metric]):
        best, best_state, best_step = metrics, jax.device_get(params), i
  if best_state is None:  # diverged before its first validation
    worst = -math.inf if task.higher_is_better else math.inf
    return FitResult(lr, {task.metric: worst}, 0, [float(w) for w in probe.featurizer.layer_weights()], probe,
                     history, time.time() - start, diverged=True)
  nnx.update(probe, best_state)
  return FitResult(lr, best, best_step, [float(w) for w in probe.featurizer.layer_weights()], probe, history,
                   time.time() - start)


# ================================================================================================
# Two-speaker mixtures (the diarization task)
# ================================================================================================
def receptive_field(conv_kernel, conv_stride) -> int:
  """Samples one model frame sees (400 for every WavLM/HuBERT card)."""
  field, jump = 1, 1
  for k, s in zip(conv_kernel, conv_stride):
    field, jump = field + (k - 1) * jump, jump * s
  return field


def frame_activity(signal: np.ndarray, num_frames: int, hop: int, field: int, floor_db: float = -40.0) -> np.ndarray:
  """Per model frame, whether `signal` is active: the mean square over the frame's receptive field is
  above `floor_db` relative to the loudest frame of the signal (an energy VAD; eSpeak's pauses are
  silent, so it marks words and pauses exactly)."""
  padded = np.zeros(max(len(signal), (num_frames - 1) * hop + field), np.float32)
  padded[:len(signal)] = signal
  energy = np.array([np.mean(np.square(padded[t * hop:t * hop + field])) for t in range(num_frames)])
  peak = energy.max(initial=0.0)
  return energy > peak * 10 ** (floor_db / 10) if peak > 0 else np.zeros(num_frames, bool)


class Mixtures:
  """Two-speaker recordings made from one split (an `AudioSource`): mixture j lays utterance a = j mod N
  at 0 and an utterance b of another speaker starting at a random 20-80 % of a's length (so the two
  overlap), b scaled to a's RMS times a random -3..3 dB; the sum is scaled down if it would clip.
  Fields: id, speakers, overlap (fraction of speech frames with both active), activity (frames, 2)."""

  def __init__(self, source, *, speaker_field: str, count: int, seed: int, split: str, config,
               audio_field: str = "audio", name: str = "dataset"):
    self.source = features_lib.DatasetAudio(source, audio_field=audio_field, name=name)
    self.hop = audio.samples_per_frame(config.conv_stride)
    self.field = receptive_field(config.conv_kernel, config.conv_stride)
    self.config = config
    infos = [self.source.info(i) for i in range(len(self.source))]
    if infos and speaker_field not in infos[0][1]:
      raise KeyError(f"sd: {name} has no field {speaker_field!r} (choose another with --speaker-field); "
                     f"its fields: {sorted(infos[0][1])}")
    self.lengths = np.array([n for n, _ in infos])
    self.speakers = [str(f[speaker_field]) for _, f in infos]
    n = len(infos)
    if len(set(self.speakers)) < 2:
      raise ValueError(f"sd: {name} split {split!r} has {len(set(self.speakers))} speaker(s); mixtures need two")
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    self.plan = []
    for j in range(count or n):
      a = j % n
      others = [i for i in range(n) if self.speakers[i] != self.speakers[a]]
      b = others[int(rng.integers(len(others)))]
      shift = int(rng.uniform(0.2, 0.8) * self.lengths[a])
      self.plan.append((a, b, shift, float(rng.uniform(-3, 3))))

  def __len__(self) -> int:
    return len(self.plan)

  def _parts(self, j: int) -> tuple[np.ndarray, np.ndarray]:
    a, b, shift, gain_db = self.plan[j]
    wa, wb = self.source.audio(a), self.source.audio(b)
    rms = lambda w: np.sqrt(np.mean(np.square(w)) + 1e-12)
    wb = wb * (rms(wa) / rms(wb)) * 10 ** (gain_db / 20)
    total = max(len(wa), shift + len(wb))
    pa, pb = np.zeros(total, np.float32), np.zeros(total, np.float32)
    pa[:len(wa)], pb[shift:shift + len(wb)] = wa, wb
    peak = np.max(np.abs(pa + pb))
    scale = 0.95 / peak if peak > 0.95 else 1.0
    return pa * scale, pb * scale

  def audio(self, j: int) -> np.ndarray:
    pa, pb = self._parts(j)
    return (pa + pb).astype(np.float32)

  def info(self, j: int) -> tuple[int, dict]:
    from wavlm_jax.models.config import conv_output_length

    a, b, _, _ = self.plan[j]
    pa, pb = self._parts(j)
    frames = max(0, int(conv_output_length(len(pa), self.config)))
    act = np.stack([frame_activity(p, frames, self.hop, self.field) for p in (pa, pb)], axis=1)
    speech = act.any(1).sum()
    return len(pa), {"id": f"mix{j:05d}-{a}-{b}", "speakers": f"{self.speakers[a]},{self.speakers[b]}",
                     "overlap": float(act.all(1).sum() / max(speech, 1)), "activity": act.astype(np.int8)}
