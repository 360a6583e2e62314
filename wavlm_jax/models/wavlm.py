"""The WavLM / HuBERT model: frontend, projection, masking, encoder, and optional heads.

`WavLM` is the backbone (what transformers calls `WavLMModel`/`HubertModel`); `Model` adds the heads
a config asks for (pre-training head or ILS-SSL heads, CTC head) and is what checkpoints hold.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import frontend, layers, masking
from wavlm_jax.models.encoder import TransformerEncoder
from wavlm_jax.models.heads import CTCHead, LabelHead

# Keys derived from the forward key.
_PROJ_DROPOUT, _TIME_MASK, _CHANNEL_MASK, _ENCODER, _CTC = range(5)


@dataclasses.dataclass
class Output:
  last_hidden_state: jax.Array  # (B, T, E)
  hidden_states: list[jax.Array] | None  # num_layers + 1, transformers' `output_hidden_states` meaning
  layer_outputs: list[jax.Array] | None  # index l = un-normalised output of layer l (fairseq's layer_results)
  frame_valid: jax.Array | None  # (B, T) True = real frame; None = no padding
  mask_time: jax.Array | None  # (B, T) True = frame replaced by the mask embedding
  features_pen: jax.Array  # mean square of the CNN features (fairseq's feature penalty)


class WavLM(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.feature_extractor = frontend.FeatureExtractor(config, rngs=rngs)
    self.feature_projection = frontend.FeatureProjection(config, rngs=rngs)
    self.masked_spec_embed = layers.param(rngs, jax.nn.initializers.uniform(1.0), (config.embed_dim,), ("embed",))
    self.encoder = TransformerEncoder(config, rngs=rngs)
    self.config = config

  def __call__(self, waveforms: jax.Array, padding_mask: jax.Array | None = None, *,
               mask_time: jax.Array | None = None, apply_mask: bool = False, key: jax.Array | None = None,
               collect: bool = True, padding_invariant: bool = False) -> Output:
    """Encodes waveforms (B, N) at 16 kHz; padding_mask (B, N) is True on padding samples.

    mask_time: a precomputed (B, T) frame mask to apply; otherwise `apply_mask` draws one (needs `key`).
    key: enables dropout, LayerDrop and channel masking (training). collect: keep every layer's output.
    padding_invariant: GroupNorm statistics over valid frames only, so that padded utterances give
      exactly their unpadded features (for feature extraction); the reference models include padding.
    """
    c = self.config
    features = self.feature_extractor(waveforms, padding_mask if padding_invariant else None)
    features = layers.scale_gradient(features, c.feature_grad_mult)
    features_pen = jnp.mean(jnp.square(features.astype(jnp.float32)))
    frame_valid = frontend.frame_valid_mask(padding_mask, features.shape[1], c)
    x = self.feature_projection(features, layers.fold(key, _PROJ_DROPOUT))

    batch, length = x.shape[:2]
    if mask_time is None and apply_mask and c.mask_prob > 0:
      if key is None:
        raise ValueError("apply_mask=True needs a PRNG key")
      mask_time = masking.time_mask(layers.fold(key, _TIME_MASK), (batch, length), c, frame_valid)
    if mask_time is not None:
      x = masking.apply_time_mask(x, mask_time, self.masked_spec_embed[...])
    if key is not None and c.mask_channel_prob > 0:
      x = masking.apply_channel_mask(x, masking.channel_mask(layers.fold(key, _CHANNEL_MASK), (batch, x.shape[2]), c))

    out = self.encoder(x, frame_valid, key=layers.fold(key, _ENCODER), collect=collect)
    return Output(out.last_hidden_state, out.hidden_states, out.layer_outputs, frame_valid, mask_time, features_pen)


class Model(nnx.Module):
  """Backbone plus the heads the config asks for; the unit a checkpoint stores."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.wavlm = WavLM(config, rngs=rngs)
    heads = config.num_label_classes > 0
    self.pretrain_head = LabelHead(config, rngs=rngs) if heads and not config.predict_layers else None
    self.ils_heads = (nnx.List([LabelHead(config, post_layer_norm=config.layer_norm_first, rngs=rngs)
                                for _ in config.predict_layers]) if heads and config.predict_layers else None)
    self.ctc_head = CTCHead(config, rngs=rngs) if config.vocab_size > 0 else None
    self.config = config

  def __call__(self, waveforms, padding_mask=None, **kwargs) -> Output:
    return self.wavlm(waveforms, padding_mask, **kwargs)

  def label_logits(self, out: Output) -> dict[str, jax.Array]:
    """Cosine logits (B, T, C + 4) per prediction head, by name: {"top": ...}, or {"layer4": ...,
    "layer12": ...} for ILS heads, in the order of `predict_layers` (the last is the top-most)."""
    if self.ils_heads is not None:
      return {f"layer{layer}": head(out.layer_outputs[layer])
              for head, layer in zip(self.ils_heads, self.config.predict_layers)}
    if self.pretrain_head is None:
      raise ValueError("this model has no pre-training head (num_label_classes = 0)")
    return {"top": self.pretrain_head(out.last_hidden_state)}

  def ctc_logits(self, out: Output, key: jax.Array | None = None) -> jax.Array:
    if self.ctc_head is None:
      raise ValueError("this model has no CTC head (vocab_size = 0)")
    return self.ctc_head(out.last_hidden_state, layers.fold(key, _CTC))


def build(config, seed: int = 0) -> Model:
  """A randomly initialised model (on the default device; the trainer builds sharded instead)."""
  return Model(config, rngs=nnx.Rngs(seed))


def abstract(config) -> Model:
  """The model with shapes only (jax.ShapeDtypeStruct leaves): no memory, no compute."""
  return nnx.eval_shape(lambda: Model(config, rngs=nnx.Rngs(0)))
