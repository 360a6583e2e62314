"""The public inference API: `load_encoder(DIR).hidden_states(waveforms, padding_mask)`."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax import audio
from wavlm_jax.models.directory import load_model


class Encoder:
  """A loaded model for feature extraction. `config` is its model config."""

  def __init__(self, model):
    self.config = model.config
    self._graphdef, self._state = nnx.split(model)
    self._forward = jax.jit(self._hidden_states, static_argnames=("normalize",))

  def _hidden_states(self, state, waveforms, padding_mask, normalize):
    model = nnx.merge(self._graphdef, state)
    if normalize:
      waveforms = audio.normalize_waveform(waveforms, padding_mask, xp=jnp)
    return model(waveforms, padding_mask).hidden_states

  def hidden_states(self, waveforms, padding_mask=None, *, normalize: bool | None = None) -> list[jax.Array]:
    """num_layers + 1 arrays (B, T, E): index 0 is the input of the first layer, index l the output of
    layer l; the last is final-LayerNorm'd for pre-LN models (transformers' `output_hidden_states`).

    waveforms: float32 (B, N) at 16 kHz. padding_mask: bool (B, N), True = padding (at the end).
    normalize: per-utterance waveform normalisation; default = the model's `normalize_waveform`.
    Compiles once per input shape.
    """
    audio.check_batch(waveforms, padding_mask)
    waveforms = jnp.asarray(waveforms, jnp.float32)
    padding_mask = None if padding_mask is None else jnp.asarray(padding_mask, bool)
    normalize = self.config.normalize_waveform if normalize is None else normalize
    return self._forward(self._state, waveforms, padding_mask, normalize=bool(normalize))


def load_encoder(directory: str | os.PathLike, **config_overrides) -> Encoder:
  """Loads a model directory written by `python -m wavlm_jax.convert` or the trainer."""
  return Encoder(load_model(directory, **config_overrides))
