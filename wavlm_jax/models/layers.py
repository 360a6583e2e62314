"""Building blocks shared by the model files: parameters with logical axes, dense, norms, conv, GELU,
dropout and gradient scaling. Norms, softmax and logits run in fp32 whatever the compute dtype."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jax.Array]
normal_002 = jax.nn.initializers.normal(0.02)  # fairseq init_bert_params / HF initializer_range
zeros = jax.nn.initializers.zeros
ones = jax.nn.initializers.ones


def torch_linear_init(fan_in: int) -> Initializer:
  """PyTorch's default nn.Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weight and bias alike:
  the layers fairseq and transformers leave at their default (feature projection, heads)."""
  bound = fan_in ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str | None]) -> nnx.Param:
  """An fp32 parameter carrying its logical axis names (mapped onto a mesh by `wavlm_jax.training.mesh`)."""
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {axes} do not match shape {shape}")
  return nnx.Param(init(rngs.params(), tuple(shape), jnp.float32), logical_axes=tuple(axes))


class Dense(nnx.Module):
  """y = x @ kernel + bias with kernel (din, dout); matmul in the compute dtype."""

  def __init__(self, din: int, dout: int, *, axes: tuple[str | None, str | None], rngs: nnx.Rngs,
               use_bias: bool = True, kernel_init: Initializer = normal_002, bias_init: Initializer = zeros,
               dtype: str = "float32"):
    self.kernel = param(rngs, kernel_init, (din, dout), axes)
    self.bias = param(rngs, bias_init, (dout,), axes[1:]) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    y = jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y


def _normalize(x: jax.Array, axis, eps: float, where: jax.Array | None = None) -> jax.Array:
  # Two-pass variance (as PyTorch) rather than E[x^2] - E[x]^2, for parity and stability.
  mean = jnp.mean(x, axis=axis, keepdims=True, where=where)
  centered = x - mean
  var = jnp.mean(jnp.square(centered), axis=axis, keepdims=True, where=where)
  return centered * jax.lax.rsqrt(var + eps)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, computed in fp32 and cast back to the input dtype."""

  def __init__(self, dim: int, *, eps: float, axis_name: str | None, rngs: nnx.Rngs):
    self.scale = param(rngs, ones, (dim,), (axis_name,))
    self.bias = param(rngs, zeros, (dim,), (axis_name,))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    y = _normalize(x.astype(jnp.float32), -1, self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class ChannelNorm(nnx.Module):
  """GroupNorm with one group per channel on (B, T, C): statistics over time, per utterance and channel
  (fairseq `Fp32GroupNorm(512, 512)` in the `default` extractor mode)."""

  def __init__(self, dim: int, *, eps: float, axis_name: str | None, rngs: nnx.Rngs):
    self.scale = param(rngs, ones, (dim,), (axis_name,))
    self.bias = param(rngs, zeros, (dim,), (axis_name,))
    self.eps = eps

  def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """valid (B, T): if given, statistics over valid frames only (padding-invariant)."""
    where = None if valid is None else valid[:, :, None]
    y = _normalize(x.astype(jnp.float32), 1, self.eps, where)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


def conv1d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding=((0, 0),), groups: int = 1) -> jax.Array:
  """1-D convolution of x (B, T, Cin) with kernel (K, Cin/groups, Cout), NWC layout."""
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=(stride,), padding=padding,
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, computed in fp32 as fairseq does."""
  return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when `key` is None (inference) or the rate is 0."""
  if key is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def fold(key: jax.Array | None, *tags: int) -> jax.Array | None:
  """Derives an independent key per tag (layer index, dropout site); None stays None."""
  if key is None:
    return None
  for tag in tags:
    key = jax.random.fold_in(key, tag)
  return key


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
  """Identity forward, gradient multiplied by `scale` backward (fairseq GradMultiply)."""
  if scale == 1.0:
    return x
  if scale == 0.0:
    return jax.lax.stop_gradient(x)
  frozen = jax.lax.stop_gradient(x)
  return frozen + scale * (x - frozen)
