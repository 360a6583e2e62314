"""Position information: the weight-normalised grouped convolutional embedding
(docs/model.md#positional-convolution) and the bucketed relative positions of WavLM's attention bias (docs/model.md#bucketing)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavlm_jax.models import config as config_lib, layers


class PositionalConvEmbedding(nnx.Module):
  """x -> GELU(conv(x)) with a grouped, weight-normalised conv of even or odd width, same length.

  The weight-norm parameters keep PyTorch's layout, v: (E, E/G, K), g: (1, 1, K), so that conversion is
  lossless; the kernel W = g * v / ||v|| (norm over all but the tap axis, no epsilon) is formed on the fly.
  """

  def __init__(self, config, *, rngs: nnx.Rngs):
    e, groups, width = config.embed_dim, config.conv_pos_groups, config.conv_pos
    std = math.sqrt(4.0 / (width * e))
    v = std * jax.random.normal(rngs.params(), (e, e // groups, width), jnp.float32)
    g = jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1), keepdims=True))  # W == v at initialisation
    self.weight_v = nnx.Param(v, logical_axes=("embed", None, None))
    self.weight_g = nnx.Param(g, logical_axes=(None, None, None))
    self.bias = layers.param(rngs, layers.zeros, (e,), ("embed",))
    self.groups = groups
    self.width = width
    self.impl = config.conv_pos_impl

  def kernel(self) -> jax.Array:
    v = self.weight_v[...]
    w = self.weight_g[...] * v / jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1), keepdims=True))
    return jnp.transpose(w, (2, 1, 0))  # (K, E/G, E)

  def __call__(self, x: jax.Array) -> jax.Array:
    # PyTorch pads K//2 on both sides and drops the last frame for even K; pad one less on the right.
    pad = (self.width // 2, self.width // 2 - (1 - self.width % 2))
    # "auto" is resolved for the devices a step is built for (`config.for_platform`, e.g. by the trainer
    # for its mesh: an ahead-of-time TPU compile on a CPU host); left unresolved, this host's backend.
    impl = self.impl if self.impl != "auto" else config_lib.conv_pos_impl_for(jax.default_backend())
    if impl == "conv":
      y = layers.conv1d(x, self.kernel(), padding=(pad,), groups=self.groups)
    else:
      y = _grouped_conv_as_matmul(x, self.kernel().astype(x.dtype), pad, self.groups)
    return layers.gelu(y + self.bias[...].astype(y.dtype))


def _grouped_conv_as_matmul(x: jax.Array, kernel: jax.Array, pad: tuple[int, int], groups: int) -> jax.Array:
  """The grouped stride-1 convolution as one batched matmul per group over its taps, laid out
  (groups, B*T, K*C/groups) so that the matmul needs no transposes and the taps are built from
  shifted slices (their gradient is adds, not a scatter). XLA:CPU runs grouped convolutions far below
  its matmul speed (fwd+bwd for WavLM Base, 2 x 4 s: 1.4 s as a convolution, 0.23 s this way); on TPU
  and GPU the native convolution is the better choice."""
  b, t, e = x.shape
  k, cg, _ = kernel.shape
  xg = jnp.transpose(jnp.pad(x, ((0, 0), pad, (0, 0))).reshape(b, -1, groups, cg), (2, 0, 1, 3))  # (G, B, S, c)
  taps = jnp.stack([xg[:, :, i:i + t] for i in range(k)], axis=3).reshape(groups, b * t, k * cg)
  w = jnp.transpose(kernel.reshape(k, cg, groups, -1), (2, 0, 1, 3)).reshape(groups, k * cg, -1)
  y = jnp.einsum("gmk,gko->gmo", taps, w)  # (G, B*T, E/G)
  return jnp.transpose(y.reshape(groups, b, t, -1), (1, 2, 0, 3)).reshape(b, t, -1)


@functools.lru_cache(maxsize=64)
def _offset_buckets(max_offset: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket of every relative position r = key - query in [-max_offset, max_offset] (int32).

  T5-style bidirectional buckets as in WavLM: the upper half of the buckets holds keys to the right;
  |r| < num_buckets/4 gets its own bucket, larger distances share log-spaced ones up to max_distance.
  The log runs in float32 in the same operation order as the reference so that distances at bucket
  edges land in the same bucket.
  """
  r = np.arange(-max_offset, max_offset + 1, dtype=np.int64)
  half = num_buckets // 2
  max_exact = half // 2
  distance = np.abs(r)
  with np.errstate(divide="ignore"):
    large = np.log(distance.astype(np.float32) / np.float32(max_exact))
  large = large / np.float32(math.log(max_distance / max_exact))
  large = large * np.float32(half - max_exact)
  large = np.float32(max_exact) + large
  large = np.where(distance < max_exact, 0, large).astype(np.int64)  # avoid casting log(0) = -inf
  large = np.minimum(large, half - 1)
  buckets = (r > 0) * half + np.where(distance < max_exact, distance, large)
  return buckets.astype(np.int32)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """The (T, T) bucket matrix, entry [i, j] for query i and key j."""
  offsets = _offset_buckets(length - 1, num_buckets, max_distance)
  rel = np.arange(length)[None, :] - np.arange(length)[:, None] + (length - 1)
  return offsets[rel]


def relative_position_bias(table: jax.Array, length: int, num_buckets: int, max_distance: int) -> jax.Array:
  """Un-gated bias D (H, T, T) = table[bucket(j - i)] from an embedding table (num_buckets, H)."""
  offsets = jnp.asarray(_offset_buckets(length - 1, num_buckets, max_distance))
  rel = jnp.arange(length)[None, :] - jnp.arange(length)[:, None] + (length - 1)
  values = jnp.take(table, jnp.take(offsets, rel), axis=0)  # (T, T, H)
  return jnp.transpose(values, (2, 0, 1)).astype(jnp.float32)
