"""The Transformer encoder: convolutional positional embedding, post-LN or pre-LN layers with
(gated) relative position bias, LayerDrop, and a layer stack that runs scanned or as a loop
(docs/model.md#transformer-encoder)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import fused_attention, layers, partitioning
from wavlm_jax.models.attention import SelfAttention
from wavlm_jax.models.position import PositionalConvEmbedding, relative_position_bias

# Dropout sites inside a layer, folded into the layer key.
_ATTN, _RESID1, _ACT, _RESID2 = range(4)
_RESIDUAL = ("batch", "frames", "act_embed")
# Keys derived from the encoder key.
_INPUT_DROPOUT, _LAYERDROP, _LAYERS = range(3)


class FeedForward(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.intermediate_dense = layers.Dense(config.embed_dim, config.ffn_dim, axes=("embed", "mlp"), rngs=rngs,
                                           dtype=config.dtype)
    self.output_dense = layers.Dense(config.ffn_dim, config.embed_dim, axes=("mlp", "embed"), rngs=rngs,
                                     dtype=config.dtype)
    self.rate = config.activation_dropout

  def __call__(self, x, key=None):
    h = partitioning.constrain(layers.gelu(self.intermediate_dense(x)), ("batch", "frames", "act_mlp"))
    return self.output_dense(layers.dropout(h, self.rate, key))


class EncoderLayer(nnx.Module):
  """One Transformer layer; `layer_norm_first` picks pre-LN (Large) or post-LN (Base) order."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    e = config.embed_dim
    self.attention = SelfAttention(config, rngs=rngs)
    self.layer_norm = layers.LayerNorm(e, eps=config.layer_norm_eps, axis_name="embed", rngs=rngs)
    self.feed_forward = FeedForward(config, rngs=rngs)
    self.final_layer_norm = layers.LayerNorm(e, eps=config.layer_norm_eps, axis_name="embed", rngs=rngs)
    self.pre_ln = config.layer_norm_first
    self.rate = config.dropout

  def attention_input(self, x: jax.Array) -> jax.Array:
    """What this layer's self-attention sees for the layer input x (LayerNorm'd first in pre-LN)."""
    return self.layer_norm(x) if self.pre_ln else x

  def _forward(self, x, position_bias, key_valid, key=None):
    k = lambda site: layers.fold(key, site)
    if self.pre_ln:
      h = self.attention(self.layer_norm(x), position_bias, key_valid, k(_ATTN))
      x = x + layers.dropout(h, self.rate, k(_RESID1))
      h = self.feed_forward(self.final_layer_norm(x), k(_ACT))
      return x + layers.dropout(h, self.rate, k(_RESID2))
    h = self.attention(x, position_bias, key_valid, k(_ATTN))
    x = self.layer_norm(x + layers.dropout(h, self.rate, k(_RESID1)))
    h = self.feed_forward(x, k(_ACT))
    return self.final_layer_norm(x + layers.dropout(h, self.rate, k(_RESID2)))

  def __call__(self, x, position_bias, key_valid, key=None):
    return partitioning.constrain(self._forward(x, position_bias, key_valid, key), _RESIDUAL)


def _stacked_layers(config, rngs: nnx.Rngs) -> EncoderLayer:
  """num_layers EncoderLayers with parameters stacked on a leading "layers" axis."""

  @nnx.split_rngs(splits=config.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def make(r):
    return EncoderLayer(config, rngs=r)

  stack = make(rngs)
  for _, var in nnx.iter_graph(stack):
    if isinstance(var, nnx.Param):
      var.set_metadata("logical_axes", ("layers",) + tuple(var.get_metadata()["logical_axes"]))
  return stack


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass
class EncoderOutput:
  last_hidden_state: jax.Array  # final output; LayerNorm'd for pre-LN models
  hidden_states: list[jax.Array] | None  # num_layers + 1 entries, transformers' meaning
  layer_outputs: list[jax.Array] | None  # un-normalised output of layer l at index l (0 = layer-1 input)


class TransformerEncoder(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.pos_conv_embed = PositionalConvEmbedding(config, rngs=rngs)
    self.layer_norm = layers.LayerNorm(config.embed_dim, eps=config.layer_norm_eps, axis_name="embed", rngs=rngs)
    if config.relative_position == "none":
      self.rel_attn_embed = None
    else:
      # Owned by the encoder (layer 0 in the reference code) and turned into D once per forward.
      self.rel_attn_embed = layers.param(rngs, layers.normal_002, (config.num_buckets, config.num_heads),
                                         (None, None))
    if config.scan_layers:
      self.layers = _stacked_layers(config, rngs)
    else:
      self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
    self.config = config

  def layer(self, index: int) -> EncoderLayer:
    """Layer `index` (0-based) as its own module; a scanned stack is sliced, not copied into the model."""
    if not self.config.scan_layers:
      return self.layers[index]
    graphdef, state = nnx.split(self.layers)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[index], state))

  def position_bias(self, length: int) -> jax.Array | None:
    """The un-gated relative position bias D (H, T, T) shared by every layer; None without one."""
    if self.rel_attn_embed is None:
      return None
    c = self.config
    return relative_position_bias(self.rel_attn_embed[...], length, c.num_buckets, c.max_distance)

  def attention_bias(self, length: int) -> jax.Array | None:
    """D in the form the layers' attention_impl takes: (H, T, T), or the fused kernel's bias tiles."""
    if self.rel_attn_embed is None:
      return None
    c = self.config
    return fused_attention.position_bias_for(c.attention_impl, self.rel_attn_embed[...], length, c.num_buckets,
                                             c.max_distance, c.attention_block)

  def __call__(self, x: jax.Array, frame_valid: jax.Array | None = None, *, key: jax.Array | None = None,
               collect: bool = True) -> EncoderOutput:
    """x (B, T, E) -> EncoderOutput. `key` enables dropout and LayerDrop (training)."""
    c = self.config
    if frame_valid is not None:
      x = jnp.where(frame_valid[..., None], x, 0)
    x = partitioning.constrain(x, _RESIDUAL)
    x = x + self.pos_conv_embed(x)
    if not c.layer_norm_first:
      x = self.layer_norm(x)
    x = layers.dropout(x, c.dropout, layers.fold(key, _INPUT_DROPOUT))
    position_bias = self.attention_bias(x.shape[1])

    def step(graphdef, state, h, index):
      layer = nnx.merge(graphdef, state)
      run = lambda: layer(h, position_bias, frame_valid, layers.fold(key, _LAYERS, index))
      if key is None or c.layerdrop <= 0.0:
        return run()
      # LayerDrop never drops layer 0 (transformers' rule; fairseq may, losing the position bias).
      u = jax.random.uniform(layers.fold(key, _LAYERDROP, index))
      return jax.lax.cond((index > 0) & (u < c.layerdrop), lambda: h, run)

    if c.remat != "none":
      step = jax.checkpoint(step, policy=_REMAT_POLICIES[c.remat], static_argnums=(0,))

    if c.scan_layers:
      graphdef, state = nnx.split(self.layers)

      def body(h, xs):
        layer_state, index = xs
        h = step(graphdef, layer_state, h, index)
        return h, (h if collect else None)

      x_last, outs = jax.lax.scan(body, x, (state, jnp.arange(c.num_layers)))
      outputs = [x] + [outs[i] for i in range(c.num_layers)] if collect else None
    else:
      outputs = [x]
      h = x
      for index, layer in enumerate(self.layers):
        graphdef, state = nnx.split(layer)
        h = step(graphdef, state, h, jnp.asarray(index))
        outputs.append(h)
      x_last = h
      outputs = outputs if collect else None

    final = self.layer_norm(x_last) if c.layer_norm_first else x_last
    hidden = outputs[:-1] + [final] if collect else None
    return EncoderOutput(last_hidden_state=final, hidden_states=hidden, layer_outputs=outputs)
