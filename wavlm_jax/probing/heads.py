"""Probe heads on top of the featurizer (SUPERB's downstream models, docs/probing.md#tasks-and-heads), and
`Probe`, the featurizer and a head together: the one module a probe trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import layers
from wavlm_jax.probing.featurizer import Featurizer

_NO_AXES = (None, None)


def _dense(din: int, dout: int, rngs: nnx.Rngs) -> layers.Dense:
  """PyTorch's nn.Linear init (s3prl's heads keep it)."""
  init = layers.torch_linear_init(din)
  return layers.Dense(din, dout, axes=_NO_AXES, kernel_init=init, bias_init=init, rngs=rngs)


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over time of x (B, T, D) counting only valid frames (B, T); padding values never matter."""
  w = valid.astype(x.dtype)[..., None]
  return jnp.sum(jnp.where(valid[..., None], x, 0), axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)


class FrameLinear(nnx.Module):
  """Per-frame logits: an optional linear projector, then a linear classifier (PR; the phone probe)."""

  def __init__(self, dim: int, classes: int, *, project_dim: int = 0, rngs: nnx.Rngs):
    self.project = _dense(dim, project_dim, rngs) if project_dim else None
    self.out = _dense(project_dim or dim, classes, rngs)

  def __call__(self, x, valid, key=None):
    del valid, key
    return self.out(self.project(x) if self.project is not None else x)


class MeanPoolLinear(nnx.Module):
  """Per-utterance logits: an optional projector, mean pooling over valid frames, a linear classifier
  (SID, LID; the speaker probe)."""

  def __init__(self, dim: int, classes: int, *, project_dim: int = 0, rngs: nnx.Rngs):
    self.project = _dense(dim, project_dim, rngs) if project_dim else None
    self.out = _dense(project_dim or dim, classes, rngs)

  def __call__(self, x, valid, key=None):
    del key
    if self.project is not None:
      x = self.project(x)
    return self.out(masked_mean(x, valid))


def _lstm(din: int, hidden: int, rngs: nnx.Rngs, *, reverse: bool = False) -> nnx.RNN:
  return nnx.RNN(nnx.OptimizedLSTMCell(din, hidden, rngs=rngs), reverse=reverse, keep_order=True, rngs=False)


class RecurrentHead(nnx.Module):
  """Per-frame logits from stacked LSTMs over the valid frames (the padding never reaches a valid
  frame, in either direction): SUPERB's ASR model is a projector, 2 bidirectional layers of 1024 units
  with dropout 0.2 and a linear output; its SD model is 1 forward layer of 512 units and a linear output."""

  def __init__(self, dim: int, classes: int, *, hidden: int, num_layers: int, bidirectional: bool,
               project_dim: int = 0, dropout: float = 0.0, rngs: nnx.Rngs):
    self.project = _dense(dim, project_dim, rngs) if project_dim else None
    width, rnns = project_dim or dim, []
    for _ in range(num_layers):
      if bidirectional:
        rnns.append(nnx.Bidirectional(_lstm(width, hidden, rngs), _lstm(width, hidden, rngs, reverse=True), rngs=False))
      else:
        rnns.append(_lstm(width, hidden, rngs))
      width = hidden * (2 if bidirectional else 1)
    self.rnns = nnx.List(rnns)
    self.out = _dense(width, classes, rngs)
    self.dropout, self.hidden = dropout, hidden

  def __call__(self, x, valid, key=None):
    lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
    if self.project is not None:
      x = self.project(x)
    for i, rnn in enumerate(self.rnns):
      zeros = jnp.zeros((x.shape[0], self.hidden), x.dtype)  # (c, h) start at zero: no RNG needed
      carry = ((zeros, zeros), (zeros, zeros)) if isinstance(rnn, nnx.Bidirectional) else (zeros, zeros)
      x = rnn(x, initial_carry=carry, seq_lengths=lengths)
      x = layers.dropout(x, self.dropout, layers.fold(key, i))
    return self.out(x)


class Probe(nnx.Module):
  """The featurizer and a head: (B, L, T, D) hidden states and (B, T) valid frames -> the head's logits."""

  def __init__(self, featurizer: Featurizer, head: nnx.Module):
    self.featurizer, self.head = featurizer, head

  def __call__(self, hidden, valid, key=None):
    return self.head(self.featurizer(hidden), valid, key)
