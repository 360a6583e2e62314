"""Masked prediction objectives (docs/objectives.md#logits-and-loss): cross-entropy of cosine logits over the label
table for masked (and optionally unmasked) frames, targets aligned from any label rate to the 50 Hz
frames, accuracies, and the feature penalty."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wavlm_jax.models.heads import LABEL_OFFSET


def frame_targets(labels: jax.Array, num_frames: int, label_rate: float, frame_rate: float) -> jax.Array:
  """Labels (B, L) at `label_rate` -> (B, T) targets at the model's `frame_rate`
  (`wavlm_jax.audio.frame_rate` of the conv strides): fairseq's
  `target_inds = floor(arange(T) * label_rate / frame_rate)`, the alignment half of the label rule in
  `wavlm_jax.audio`; -1 where no label exists."""
  ratio = label_rate / frame_rate
  index = jnp.floor(jnp.arange(num_frames) * ratio).astype(jnp.int32)
  inside = index < labels.shape[1]
  picked = jnp.take(labels, jnp.minimum(index, labels.shape[1] - 1), axis=1)
  return jnp.where(inside[None, :], picked, -1)


def prediction_loss(logits: jax.Array, targets: jax.Array, select: jax.Array):
  """Sum of CE over selected frames, their count, and the number predicted correctly.

  logits (B, T, C + 4) fp32, targets (B, T) cluster ids (-1 = none), select (B, T) bool.
  """
  select = select & (targets >= 0)
  rows = jnp.maximum(targets, 0) + LABEL_OFFSET
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, rows[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(logits, axis=-1) == rows
  return jnp.sum(jnp.where(select, ce, 0.0)), jnp.sum(select), jnp.sum(select & correct)


# ================================================================================================
# CTC (fine-tuning; docs/downstream.md#ctc-fine-tuning)
# ================================================================================================
def ctc_required_frames(labels: jax.Array, label_valid: jax.Array) -> jax.Array:
  """Frames an alignment of each label sequence needs: its length plus one blank between every pair of
  equal neighbours. labels (B, L) int, label_valid (B, L) bool -> (B,) int32."""
  same = (labels[:, 1:] == labels[:, :-1]) & label_valid[:, 1:] & label_valid[:, :-1]
  return jnp.sum(label_valid, axis=1).astype(jnp.int32) + jnp.sum(same, axis=1).astype(jnp.int32)


def ctc_loss(logits: jax.Array, frame_valid: jax.Array | None, labels: jax.Array, *, blank: int = 0):
  """Per-utterance CTC negative log-likelihood, in fp32, with `zero_infinity` behaviour.

  logits (B, T, V); frame_valid (B, T) True = real frame (None: all); labels (B, L) ids, -1 = padding.
  Returns (loss (B,), feasible (B,) bool): an utterance whose labels cannot fit its frames has no
  alignment (infinite loss); its loss is 0 (and it gives no gradient), and `feasible` says so, for
  counting. (optax.ctc_loss returns ~1e5, not inf, for such an utterance, so it is masked here.)
  """
  import optax

  logits = logits.astype(jnp.float32)
  if frame_valid is None:
    frame_valid = jnp.ones(logits.shape[:2], bool)
  label_valid = labels >= 0
  feasible = ctc_required_frames(labels, label_valid) <= jnp.sum(frame_valid, axis=1)
  loss = optax.ctc_loss(logits, (~frame_valid).astype(jnp.float32), jnp.maximum(labels, 0),
                        (~label_valid).astype(jnp.float32), blank_id=blank)
  return jnp.where(feasible, loss, 0.0), feasible


def ctc_reduce(loss: jax.Array, feasible: jax.Array, labels: jax.Array, rows: jax.Array, reduction: str):
  """One number from per-utterance losses over the real rows (`rows` (B,) bool; filler rows added to
  fill a batch are False). "sentence": sum / utterances (fairseq's sentence_avg); "sum": the sum
  (transformers' default); "token": sum / target tokens (fairseq without sentence_avg)."""
  total = jnp.sum(jnp.where(rows & feasible, loss, 0.0))
  if reduction == "sum":
    return total
  if reduction == "sentence":
    return total / jnp.maximum(jnp.sum(rows), 1)
  if reduction == "token":
    return total / jnp.maximum(jnp.sum(jnp.where(rows[:, None], labels >= 0, False)), 1)
  raise ValueError(f"CTC reduction {reduction!r}: 'sentence', 'sum' or 'token'")
