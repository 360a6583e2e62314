"""Span masking of frames (time) and channels, computed inside jit (docs/model.md#masking).

Semantics of the masking HuBERT and WavLM were trained with (fairseq's original
`compute_mask_indices`, mask_type "static", overlapping spans allowed):
  num_spans = max(min_masks, floor(p * T_valid / l + U)) per row (one draw per batch without padding);
  span starts drawn without replacement from [0, T_valid - l); each span covers l frames;
  then every row keeps a random subset of its masked frames so that all rows have the batch minimum --
  here among the rows of the longest valid length only (pretraining batches have no padding, so that
  is every row; a padded row never shrinks the others' masks).
The span count is bounded by a static maximum so the shapes never depend on the data. The random
stream is JAX's, so masks are not bit-identical to fairseq's NumPy draws; their statistics are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_spans(length: int, mask_prob: float, mask_length: int, min_masks: int) -> int:
  """Static upper bound of the number of spans drawn for a row of `length` frames."""
  return max(1, min(length - 1, max(min_masks, int(mask_prob * length / mask_length + 1))))


def span_mask(key: jax.Array, shape: tuple[int, int], mask_prob: float, mask_length: int, min_masks: int,
              valid: jax.Array | None = None, equalize: bool = True) -> jax.Array:
  """Boolean (B, T) mask, True = masked. `valid` (B, T) marks non-padding frames (a prefix per row)."""
  batch, length = shape
  k_num, k_start, k_equal = jax.random.split(key, 3)
  if valid is None:
    size = jnp.full((batch,), length, jnp.int32)
    u = jnp.broadcast_to(jax.random.uniform(k_num), (batch,))  # one draw for the batch
  else:
    size = jnp.sum(valid, axis=-1).astype(jnp.int32)
    u = jax.random.uniform(k_num, (batch,))  # a fresh draw per row
  num = jnp.maximum(min_masks, jnp.floor(mask_prob * size / mask_length + u).astype(jnp.int32))
  # fairseq shrinks the span length for very short rows so that enough distinct starts exist.
  min_len = jnp.where(size - mask_length <= num, size - num - 1, mask_length)
  start_range = jnp.maximum(size - min_len, 1)
  num = jnp.minimum(num, start_range)

  k = max_spans(length, mask_prob, mask_length, min_masks)
  positions = jnp.arange(length)
  scores = jnp.where(positions[None, :] < start_range[:, None], jax.random.uniform(k_start, (batch, length)), -1.0)
  _, starts = jax.lax.top_k(scores, k)  # distinct, uniformly random starts, in random order
  enabled = (jnp.arange(k)[None, :] < num[:, None]).astype(jnp.int32)

  rows = jnp.arange(batch)[:, None]
  edges = jnp.zeros((batch, length + mask_length + 1), jnp.int32)
  edges = edges.at[rows, starts].add(enabled).at[rows, starts + mask_length].add(-enabled)
  mask = (jnp.cumsum(edges, axis=-1)[:, :length] > 0) & (positions[None, :] < size[:, None])

  if equalize:
    # fairseq trims every row to the batch's smallest masked count. Among rows of one length that only
    # evens out the span-count draw; but a short padded row would shrink every full row's mask (one
    # 2 s row in a batch of 15.6 s rows: 8 % masked instead of ~50 %). So only the rows of the longest
    # valid length are trimmed, to their own minimum; shorter (padded) rows keep their own count, and a
    # row's masked fraction never depends on the other lengths in the batch.
    full = size == jnp.max(size)
    target = jnp.min(jnp.where(full, jnp.sum(mask, axis=-1), length))
    r = jnp.where(mask, jax.random.uniform(k_equal, (batch, length)), 2.0)
    rank = jnp.argsort(jnp.argsort(r, axis=-1), axis=-1)
    mask = mask & (~full[:, None] | (rank < target))
  return mask


def time_mask(key: jax.Array, shape: tuple[int, int], config, valid: jax.Array | None = None) -> jax.Array:
  """Frame mask per the model config (mask_prob, mask_length, mask_min_masks)."""
  return span_mask(key, shape, config.mask_prob, config.mask_length, config.mask_min_masks, valid)


def channel_mask(key: jax.Array, shape: tuple[int, int], config) -> jax.Array:
  """Channel mask (B, C) per the config; masked channels are zeroed at every frame."""
  return span_mask(key, shape, config.mask_channel_prob, config.mask_channel_length, 0, None)


def apply_time_mask(x: jax.Array, mask: jax.Array, embedding: jax.Array) -> jax.Array:
  """Replaces masked frames of x (B, T, E) by the learned mask embedding (E,)."""
  return jnp.where(mask[..., None], embedding.astype(x.dtype), x)


def apply_channel_mask(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.where(mask[:, None, :], jnp.zeros((), x.dtype), x)
