"""Output heads: the HuBERT/WavLM masked-prediction head (cosine logits against a label embedding
table, docs/objectives.md#pretraining-head), ILS-SSL intermediate-layer heads (docs/objectives.md#ils-ssl)
and the CTC head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from wavlm_jax.models import layers

# fairseq's Dictionary prepends <s>, <pad>, </s>, <unk>: target index = cluster id + LABEL_OFFSET.
LABEL_OFFSET = 4


def cosine_logits(projected: jax.Array, table: jax.Array, temperature: float, eps: float = 1e-8) -> jax.Array:
  """cos(projected, every table row) / temperature, in fp32. projected (..., D), table (C, D)."""
  p = projected.astype(jnp.float32)
  e = table.astype(jnp.float32)
  dots = p @ e.T
  norms = jnp.linalg.norm(p, axis=-1, keepdims=True) * jnp.linalg.norm(e, axis=-1)
  return dots / jnp.maximum(norms, eps) / temperature


class LabelHead(nnx.Module):
  """final_proj (E -> final_dim) and the (C + 4, final_dim) label table; logits over all C + 4 rows."""

  def __init__(self, config, *, post_layer_norm: bool = False, rngs: nnx.Rngs):
    e = config.embed_dim
    self.post_layer_norm = (layers.LayerNorm(e, eps=config.layer_norm_eps, axis_name="embed", rngs=rngs)
                            if post_layer_norm else None)
    init = layers.torch_linear_init(e)  # fairseq's final_proj is a default nn.Linear
    self.final_proj = layers.Dense(e, config.final_dim, axes=("embed", None), rngs=rngs, kernel_init=init,
                                   bias_init=init, dtype=config.dtype)
    self.label_embs_concat = layers.param(rngs, jax.nn.initializers.uniform(1.0),
                                          (config.num_label_classes + LABEL_OFFSET, config.final_dim),
                                          ("vocab", None))
    self.temperature = config.logit_temp

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.post_layer_norm is not None:
      x = self.post_layer_norm(x)
    return cosine_logits(self.final_proj(x), self.label_embs_concat[...], self.temperature)


class CTCHead(nnx.Module):
  """Dropout then a linear projection to the CTC vocabulary (blank = index 0 in HF's convention)."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.lm_head = layers.Dense(config.embed_dim, config.vocab_size, axes=("embed", "vocab"), rngs=rngs,
                                kernel_init=jax.nn.initializers.glorot_uniform())
    self.rate = config.final_dropout

  def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    return self.lm_head(layers.dropout(x, self.rate, key)).astype(jnp.float32)
