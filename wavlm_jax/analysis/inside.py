"""Looking inside a model on a few recordings (notebooks/01_quickstart.ipynb): every hidden state, the
attention probabilities of chosen layers per head, the gate of WavLM's relative position bias per head
and query frame, the bias D itself, and the masked-prediction logits over units when the model has a
pre-training head (docs/model.md#gate).

    from wavlm_jax.analysis.inside import look_inside
    inside = look_inside(directory.load_model(DIR), waveforms, layers=(1, 12))
    inside.attention[12][0, 3]           # layer 12, utterance 0, head 3: (T_query, T_key)
    inside.gates[12][0, 3] * inside.position_bias[3]   # the bias that head added, (T, T)

Layers are numbered as hidden states are: layer l reads hidden state l - 1 and writes hidden state l.
Attention rows are queries; padded keys get probability 0. The gated bias a query adds is
gate[b, h, q] * D[h, q, k] (docs/model.md#gate); HuBERT has neither gate nor D.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavlm_jax import audio
from wavlm_jax.models import config as config_lib
from wavlm_jax.models.heads import LABEL_OFFSET


@dataclasses.dataclass
class Inside:
  hidden_states: list[np.ndarray]  # num_layers + 1 arrays (B, T, E), as Encoder.hidden_states
  frame_valid: np.ndarray | None  # (B, T) True = real frame; None = no padding
  attention: dict[int, np.ndarray]  # layer -> (B, H, T_query, T_key) probabilities
  gates: dict[int, np.ndarray]  # layer -> (B, H, T) multiplier of D per query (gated models only)
  position_bias: np.ndarray | None  # D (H, T_query, T_key), shared by every layer; None for HuBERT
  unit_logits: dict[str, np.ndarray]  # head name ("top", "layer4", ...) -> (B, T, num units)
  mask_time: np.ndarray | None  # (B, T) the frames replaced by the mask embedding, if a mask was given

  def feature_norms(self) -> np.ndarray:
    """(num_layers + 1, B) mean L2 norm of the valid frames of every hidden state."""
    valid = np.ones(self.hidden_states[0].shape[:2], bool) if self.frame_valid is None else self.frame_valid
    norms = np.stack([np.linalg.norm(h, axis=-1) for h in self.hidden_states])  # (L + 1, B, T)
    return (norms * valid).sum(-1) / np.maximum(valid.sum(-1), 1)


def look_inside(model, waveforms, padding_mask=None, *, layers: Sequence[int] | None = None,
                mask_time=None, normalize: bool | None = None) -> Inside:
  """Runs `model` (a wavlm_jax.models.wavlm.Model, e.g. from directory.load_model) on waveforms (B, N)
  at 16 kHz without dropout and returns what it computes inside. padding_mask (B, N): True = padding.

  layers: 1-based layers whose attention to keep (default all; each costs B x H x T^2 floats).
  mask_time: an optional (B, T) frame mask applied as in pre-training, to see the unit logits the model
    predicts for masked frames. normalize: per-utterance waveform normalisation (default: the model's).
  """
  config = model.config
  audio.check_batch(waveforms, padding_mask)
  waveforms = jnp.asarray(waveforms, jnp.float32)
  padding_mask = None if padding_mask is None else jnp.asarray(padding_mask, bool)
  layers = tuple(range(1, config.num_layers + 1)) if layers is None else tuple(int(l) for l in layers)
  bad = [l for l in layers if not 1 <= l <= config.num_layers]
  if bad:
    raise ValueError(f"layers {bad} out of range: this model has layers 1..{config.num_layers}")
  normalize = config.normalize_waveform if normalize is None else bool(normalize)
  if mask_time is not None:
    frames = (waveforms.shape[0], int(config_lib.conv_output_length(waveforms.shape[1], config)))
    if np.shape(mask_time) != frames:
      raise ValueError(f"mask_time has shape {np.shape(mask_time)}; these waveforms have {frames} "
                       "(batch, frames)")
    mask_time = jnp.asarray(mask_time, bool)
  graphdef, state = nnx.split(model)
  out = _jitted_forward(model, graphdef, layers, normalize)(state, waveforms, padding_mask, mask_time)
  as_np = lambda tree: jax.tree.map(np.asarray, tree)
  return Inside(hidden_states=as_np(out["hidden_states"]),
                frame_valid=None if out["frame_valid"] is None else np.asarray(out["frame_valid"]),
                attention=dict(zip(layers, as_np(out["attention"]))),
                gates=dict(zip(layers, as_np(out["gates"]))) if out["gates"] else {},
                position_bias=None if out["position_bias"] is None else np.asarray(out["position_bias"]),
                unit_logits=as_np(out["unit_logits"]),
                mask_time=None if mask_time is None else np.asarray(mask_time))


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jitted_forward(model, graphdef, layers: tuple[int, ...], normalize: bool):
  """One jitted forward per (model, layers, normalisation): a notebook calling look_inside again on
  same-shaped audio does not compile again."""
  per_model = _COMPILED.setdefault(model, {})
  key = (layers, normalize)
  if key not in per_model:
    per_model[key] = jax.jit(functools.partial(_forward, graphdef, layers=layers, normalize=normalize))
  return per_model[key]


def _forward(graphdef, state, waveforms, padding_mask, mask_time, *, layers, normalize):
  model = nnx.merge(graphdef, state)
  if normalize:
    waveforms = audio.normalize_waveform(waveforms, padding_mask, xp=jnp)
  out = model(waveforms, padding_mask, mask_time=mask_time)
  encoder = model.wavlm.encoder
  bias = encoder.position_bias(out.last_hidden_state.shape[1])
  attention, gates = [], []
  for l in layers:
    layer = encoder.layer(l - 1)
    x = layer.attention_input(out.layer_outputs[l - 1])
    attention.append(layer.attention.weights(x, bias, out.frame_valid))
    if layer.attention.gated and bias is not None:
      gates.append(layer.attention.gate(x))
  units = {}
  if model.pretrain_head is not None or model.ils_heads is not None:
    units = {name: logits[..., LABEL_OFFSET:] for name, logits in model.label_logits(out).items()}
  return {"hidden_states": out.hidden_states, "frame_valid": out.frame_valid, "attention": attention,
          "gates": gates, "position_bias": bias, "unit_logits": units}
