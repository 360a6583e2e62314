"""The SUPERB featurizer (s3prl `Featurizer`, docs/probing.md#the-featurizer): a learned softmax-weighted sum
of all hidden states, or one chosen hidden state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavlm_jax.models import layers


class Featurizer(nnx.Module):
  """h = sum_l softmax(w)_l * norm(h_l) over the L hidden states, w initialised to zeros (a uniform
  average to start); norm is a LayerNorm over D without scale or bias when `layer_norm`, else identity.
  With `layer` set, only that hidden state is used (and there is no weight)."""

  def __init__(self, num_states: int, *, layer_norm: bool = False, layer: int | None = None,
               rngs: nnx.Rngs | None = None):
    del rngs  # zero init needs no randomness; the argument keeps the NNX constructor convention
    if layer is not None and not 0 <= layer < num_states:
      raise ValueError(f"--layer {layer} is out of range: this model has hidden states 0..{num_states - 1}")
    self.num_states, self.layer_norm, self.layer = num_states, layer_norm, layer
    self.weights = nnx.Param(jnp.zeros((num_states,), jnp.float32)) if layer is None else None

  def __call__(self, hidden: jax.Array) -> jax.Array:
    """hidden (B, L, T, D) -> (B, T, D) fp32; with `layer` set, L may be 1 (the chosen state only)."""
    h = hidden.astype(jnp.float32)
    if self.layer is not None:
      h = h[:, self.layer] if h.shape[1] == self.num_states else h[:, 0]
      return layers._normalize(h, -1, 1e-5) if self.layer_norm else h
    if h.shape[1] != self.num_states:
      raise ValueError(f"the featurizer has {self.num_states} weights but got {h.shape[1]} hidden states")
    if self.layer_norm:
      h = layers._normalize(h, -1, 1e-5)  # F.layer_norm(h, (D,)): no scale, no bias, eps 1e-5
    return jnp.einsum("bltd,l->btd", h, jax.nn.softmax(self.weights[...]))

  def layer_weights(self) -> np.ndarray:
    """The softmax weights per hidden state (a one-hot for a single layer)."""
    if self.layer is not None:
      return np.eye(self.num_states, dtype=np.float32)[self.layer]
    return np.asarray(jax.nn.softmax(self.weights[...]))
