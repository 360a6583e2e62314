"""The waveform frontend: the 7-block convolutional feature encoder and the feature projection
(docs/model.md#convolutional-frontend)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import layers, partitioning
from wavlm_jax.models.config import conv_output_length

_kaiming_normal = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)


class Conv(nnx.Module):
  """A strided 1-D convolution with kernel (K, Cin, Cout) and optional bias."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int, use_bias: bool, *, rngs: nnx.Rngs):
    self.kernel = layers.param(rngs, _kaiming_normal, (kernel, cin, cout), ("conv_width", "conv_in", "conv_out"))
    self.bias = layers.param(rngs, layers.zeros, (cout,), ("conv_out",)) if use_bias else None
    self.stride = stride

  def __call__(self, x: jax.Array) -> jax.Array:
    y = layers.conv1d(x, self.kernel[...], stride=self.stride)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y


class ConvBlock(nnx.Module):
  """Conv -> [norm] -> GELU. `norm` is "group" (per-channel over time), "layer" or None."""

  def __init__(self, cin, cout, kernel, stride, *, norm: str | None, use_bias: bool, eps: float,
               rngs: nnx.Rngs):
    self.conv = Conv(cin, cout, kernel, stride, use_bias, rngs=rngs)
    if norm == "group":
      self.norm = layers.ChannelNorm(cout, eps=eps, axis_name="conv_out", rngs=rngs)
    elif norm == "layer":
      self.norm = layers.LayerNorm(cout, eps=eps, axis_name="conv_out", rngs=rngs)
    else:
      self.norm = None

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    x = self.conv(x)
    if isinstance(self.norm, layers.ChannelNorm):
      x = self.norm(x, valid)
    elif self.norm is not None:
      x = self.norm(x)
    return layers.gelu(x)


class FeatureExtractor(nnx.Module):
  """Waveform (B, N) -> features (B, T, C) at a 320-sample hop (50 Hz for the released models)."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    blocks = []
    cin = 1
    for i, (cout, kernel, stride) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride)):
      if config.extractor_mode == "layer_norm":
        norm = "layer"
      else:
        norm = "group" if i == 0 else None
      blocks.append(ConvBlock(cin, cout, kernel, stride, norm=norm, use_bias=config.conv_bias,
                              eps=config.layer_norm_eps, rngs=rngs))
      cin = cout
    self.conv_layers = nnx.List(blocks)
    self.dtype = config.dtype
    self.remat = config.remat == "full"

  def __call__(self, waveforms: jax.Array, padding_mask: jax.Array | None = None) -> jax.Array:
    """padding_mask (B, N), True = padding: if given, GroupNorm statistics cover valid frames only, so
    the valid frames equal those of the unpadded utterance. (transformers and fairseq include padding in
    the statistics; pass None for parity with them.)

    With `remat="full"` each block runs under `jax.checkpoint`: the backward pass keeps the blocks'
    outputs only and recomputes their insides (the first block's output has 64 times the encoder's frames,
    512 channels each; WavLM Large's step on 16 v5e chips drops from 16.1 to 12.7 GiB per chip,
    bench/measured/aot_large_v5e_variants.json), for one
    more forward of the frontend: 4.9 GFLOP per audio-second, +4 % of Large's step, +11 % of Base's.
    (Checkpointing the whole frontend as well recomputes it twice and, as XLA schedules it, needs more.)"""
    x = waveforms[..., None].astype(jnp.dtype(self.dtype))
    num_valid = None if padding_mask is None else jnp.sum(~padding_mask, axis=-1)
    for block in self.conv_layers:
      valid = None
      if num_valid is not None:
        num_valid = (num_valid - block.conv.kernel.shape[0]) // block.conv.stride + 1
        valid = jnp.arange((x.shape[1] - block.conv.kernel.shape[0]) // block.conv.stride + 1)[None] < num_valid[:, None]
      if self.remat:  # the frontend's backward then holds the blocks' outputs and one block's internals
        graphdef, state = nnx.split(block)
        y = jax.checkpoint(lambda st, x, v, g=graphdef: nnx.merge(g, st)(x, v))(state, x, valid)
      else:
        y = block(x, valid)
      x = partitioning.constrain(y, ("batch", "frames", "act_channels"))
    return x


class FeatureProjection(nnx.Module):
  """LayerNorm over CNN channels -> Dense to the model width -> dropout (`dropout_input`)."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    cdim = config.conv_dim[-1]
    self.layer_norm = layers.LayerNorm(cdim, eps=config.layer_norm_eps, axis_name="conv_out", rngs=rngs)
    init = layers.torch_linear_init(cdim)  # HF and fairseq leave this Linear at PyTorch's default
    self.projection = layers.Dense(cdim, config.embed_dim, axes=("conv_out", "embed"), rngs=rngs,
                                   kernel_init=init, bias_init=init, dtype=config.dtype)
    self.rate = config.dropout_input

  def __call__(self, features: jax.Array, key: jax.Array | None = None) -> jax.Array:
    x = self.projection(self.layer_norm(features))
    return layers.dropout(x, self.rate, key)


def frame_valid_mask(padding_mask: jax.Array | None, num_frames: int, config) -> jax.Array | None:
  """Sample-level padding (B, N), True = padding, -> frame validity (B, T), True = valid.

  Follows transformers: a frame is valid iff its index is below the conv output length of the number
  of valid samples. fairseq/unilm instead keep a frame unless all its samples are padding, which
  usually yields one more valid frame (docs/model.md#padding-from-samples-to-frames); pre-training never
  pads, so this only matters for padded inference and fine-tuning batches.
  """
  if padding_mask is None:
    return None
  num_valid = jnp.sum(~padding_mask, axis=-1).astype(jnp.int32)
  lengths = conv_output_length(num_valid, config)
  return jnp.arange(num_frames)[None, :] < lengths[:, None]
