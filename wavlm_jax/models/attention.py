"""Multi-head self-attention with WavLM's gated relative position bias (docs/model.md#gate).

relative_position = "gated": bias = (2 - a + a*b*w_h) * D, the gates a, b computed per head and query
from the attention *input* split into heads; "bucket": bias = D (ILS-SSL); "none": no bias (HuBERT).
The bias is added after the 1/sqrt(d) scaling of the queries; logits and softmax run in fp32. How the
attention itself runs (in memory, chunked, or as a fused kernel) is `config.attention_impl`
(`wavlm_jax.models.fused_attention`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import fused_attention, layers
from wavlm_jax.models.config import head_dim


class SelfAttention(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    e = config.embed_dim
    dense = lambda axes: layers.Dense(e, e, axes=axes, rngs=rngs, dtype=config.dtype)
    self.q_proj = dense(("embed", "heads"))
    self.k_proj = dense(("embed", "heads"))
    self.v_proj = dense(("embed", "heads"))
    self.out_proj = dense(("heads", "embed"))
    self.gated = config.relative_position == "gated"
    if self.gated:
      self.gru_rel_pos_linear = layers.Dense(head_dim(config), 8, axes=("head_dim", None), rngs=rngs)
      self.gru_rel_pos_const = layers.param(rngs, layers.ones, (config.num_heads,), (None,))
    self.num_heads = config.num_heads
    self.rate = config.attention_dropout
    self.dtype = config.dtype
    self.impl = config.attention_impl
    self.block = config.attention_block

  def gate(self, x: jax.Array) -> jax.Array:
    """Per-(batch, head, query) multiplier (B, H, T) of the relative position bias."""
    b, t, _ = x.shape
    xh = x.reshape(b, t, self.num_heads, -1).astype(jnp.float32)
    kernel = self.gru_rel_pos_linear.kernel[...]
    z = xh @ kernel + self.gru_rel_pos_linear.bias[...]  # (B, T, H, 8)
    s = jax.nn.sigmoid(z.reshape(b, t, self.num_heads, 2, 4).sum(-1))
    a, g = s[..., 0], s[..., 1]
    gate = a * (g * self.gru_rel_pos_const[...] - 1.0) + 2.0
    return jnp.transpose(gate, (0, 2, 1))

  def _queries_keys(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    b, t, e = x.shape
    q = (self.q_proj(x) * (e // self.num_heads) ** -0.5).reshape(b, t, self.num_heads, -1)
    return q, self.k_proj(x).reshape(b, t, self.num_heads, -1)

  def logits(self, x: jax.Array, position_bias: jax.Array | None, key_valid: jax.Array | None) -> jax.Array:
    """Attention logits (B, H, T, T) in fp32: scaled q.k plus the (gated) relative position bias D
    (H, T, T), padded keys at the fp32 minimum (for analysis; training never forms them on the fused
    paths)."""
    q, k = self._queries_keys(x)
    gate = self.gate(x) if self.gated and position_bias is not None else None
    return fused_attention.dense_logits(q, k, gate, position_bias, key_valid)

  def weights(self, x: jax.Array, position_bias: jax.Array | None, key_valid: jax.Array | None) -> jax.Array:
    """The attention probabilities (B, H, T_query, T_key) without dropout (for analysis)."""
    return jax.nn.softmax(self.logits(x, position_bias, key_valid), axis=-1)

  def __call__(self, x: jax.Array, position_bias: jax.Array | None, key_valid: jax.Array | None,
               key: jax.Array | None = None) -> jax.Array:
    """position_bias: the encoder's `attention_bias` (its form depends on attention_impl)."""
    b, t, e = x.shape
    q, k = self._queries_keys(x)
    v = self.v_proj(x).reshape(b, t, self.num_heads, -1)
    gate = self.gate(x) if self.gated and position_bias is not None else None
    out = fused_attention.attend(self.impl, q, k, v, gate, position_bias, key_valid, rate=self.rate, key=key,
                                 block=self.block)
    return self.out_proj(out.reshape(b, t, e))
