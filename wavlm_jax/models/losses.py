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
