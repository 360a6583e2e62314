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


HASH_M1, HASH_M2, HASH_GOLDEN = -2048144789, -1028477387, -1640531527  # 0x85ebca6b, 0xc2b2ae35, 0x9e3779b9


def fmix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser on int32 (wrapping multiplies, logical shifts): a bijection whose
  every output bit depends on every input bit."""
  x = x ^ jax.lax.shift_right_logical(x, 16)
  x = x * HASH_M1
  x = x ^ jax.lax.shift_right_logical(x, 13)
  x = x * HASH_M2
  return x ^ jax.lax.shift_right_logical(x, 16)


def seed_from_key(key: jax.Array) -> jax.Array:
  """An int32 scalar seed from a JAX PRNG key (any implementation: threefry, rbg, unsafe_rbg)."""
  return jax.lax.bitcast_convert_type(jax.random.bits(key, (), jnp.uint32), jnp.int32)


def keep_threshold(rate: float) -> int:
  """Keep an element when the top 24 bits of its hash are below this: probability 1 - rate."""
  return int(round((1.0 - rate) * (1 << 24)))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when `key` is None (inference) or the rate is 0.

  The mask is a counter-based hash of (seed from `key`, the element's flat index), as attention dropout
  (docs/model.md#fused-attention): a few integer operations per element whatever the PRNG, partitioned
  with the array under any sharding (iota), the same bits on every mesh and platform, and deterministic
  for a key (exact resume). A draw of (B, T, E) bits from the PRNG instead dominated dropout's cost on
  GPU with threefry, and with rbg a sharded step drew the whole global batch on every device."""
  if key is None or rate <= 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  index = jnp.zeros(x.shape, jnp.int32)
  stride = 1
  for axis in reversed(range(x.ndim)):  # the row-major flat index, mod 2^32 (int32 arithmetic wraps)
    wrapped = (stride + (1 << 31)) % (1 << 32) - (1 << 31)
    index = index + jax.lax.broadcasted_iota(jnp.int32, x.shape, axis) * jnp.int32(wrapped)
    stride *= x.shape[axis]
  bits = fmix32(seed_from_key(key) ^ fmix32(index * HASH_GOLDEN + 1))
  keep = jax.lax.shift_right_logical(bits, 8) < keep_threshold(rate)
  # The scale in fp32: in bf16, 1 - 0.1 rounds to 0.8984 and every kept element would be 0.17 % too large.
  return jnp.where(keep, x.astype(jnp.float32) * (1.0 / (1.0 - rate)), 0.0).astype(x.dtype)


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
