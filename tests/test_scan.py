"""The scanned layer stack and the Python loop give identical outputs, in inference and in training
(dropout, LayerDrop, masking), and remat does not change the numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm


def _pair(**overrides):
  scanned = wavlm.build(config_lib.model_card("tiny", scan_layers=True, **overrides), seed=1)
  looped = wavlm.abstract(config_lib.model_card("tiny", scan_layers=False, **overrides))
  params.set_params(looped, params.to_layout(params.get_params(scanned), looped.config))
  return scanned, looped


@pytest.mark.parametrize("relative_position", ["gated", "bucket", "none"])
def test_scanned_equals_looped(relative_position):
  scanned, looped = _pair(relative_position=relative_position, num_layers=3, layer_norm_first=True)
  x = jnp.asarray(np.random.RandomState(0).randn(2, 8000).astype(np.float32))
  pad = jnp.zeros((2, 8000), bool).at[1, 5000:].set(True)
  a, b = scanned(x, pad), looped(x, pad)
  for ha, hb in zip(a.hidden_states, b.hidden_states):
    np.testing.assert_allclose(ha, hb, rtol=1e-6, atol=1e-6)


def test_scanned_equals_looped_in_training_and_with_remat():
  scanned, looped = _pair(num_layers=4, layerdrop=0.5, dropout=0.2, attention_dropout=0.2)
  remat, _ = _pair(num_layers=4, layerdrop=0.5, dropout=0.2, attention_dropout=0.2, remat="full")
  x = jnp.asarray(np.random.RandomState(0).randn(2, 8000).astype(np.float32))
  key = jax.random.key(3)
  outs = [m(x, apply_mask=True, key=key) for m in (scanned, looped, remat)]
  for o in outs[1:]:
    np.testing.assert_array_equal(o.mask_time, outs[0].mask_time)
    np.testing.assert_allclose(o.last_hidden_state, outs[0].last_hidden_state, rtol=1e-5, atol=1e-5)
  inference = scanned(x).last_hidden_state
  assert not np.allclose(outs[0].last_hidden_state, inference)  # dropout and masking really acted

  def loss(model_params, model):
    params.set_params(model, model_params)
    return jnp.mean(jnp.square(model(x, apply_mask=True, key=key).last_hidden_state))

  flat = {k: jnp.asarray(v) for k, v in params.get_params(scanned).items()}
  g_plain = jax.grad(lambda p: loss(p, wavlm.abstract(scanned.config)))(flat)
  g_remat = jax.grad(lambda p: loss(p, wavlm.abstract(remat.config)))(flat)
  for k in g_plain:
    np.testing.assert_allclose(g_plain[k], g_remat[k], rtol=1e-4, atol=1e-6)


def test_layerdrop_never_drops_layer_zero():
  model = wavlm.build(config_lib.model_card("tiny", num_layers=3, layerdrop=1.0, dropout=0.0, attention_dropout=0.0,
                                            dropout_input=0.0), seed=0)
  x = jnp.asarray(np.random.RandomState(0).randn(1, 8000).astype(np.float32))
  out = model(x, key=jax.random.key(0))
  outs = out.layer_outputs
  assert not np.allclose(outs[1], outs[0])  # layer 0 ran
  np.testing.assert_array_equal(outs[2], outs[1])  # layers 1 and 2 were dropped (p = 1)
  np.testing.assert_array_equal(outs[3], outs[2])


def test_bfloat16_compute_keeps_fp32_parameters_and_outputs_close():
  f32 = wavlm.build(config_lib.model_card("tiny"), seed=0)
  bf16 = wavlm.abstract(config_lib.model_card("tiny", dtype="bfloat16"))
  params.set_params(bf16, params.get_params(f32))
  assert all(v.dtype == jnp.float32 for v in params.param_variables(bf16).values())
  x = jnp.asarray(0.1 * np.random.RandomState(0).randn(2, 16000).astype(np.float32))
  a, b = f32(x).last_hidden_state, bf16(x).last_hidden_state
  assert b.dtype == jnp.bfloat16
  assert float(jnp.max(jnp.abs(a - b.astype(jnp.float32)))) < 0.1 * float(jnp.max(jnp.abs(a)))
  logits = bf16.label_logits(bf16(x))["top"]
  assert logits.dtype == jnp.float32  # logits and losses stay fp32


def test_positional_conv_implementations_agree():
  conv = wavlm.build(config_lib.model_card("tiny", conv_pos_impl="conv"), seed=0)
  matmul = wavlm.abstract(config_lib.model_card("tiny", conv_pos_impl="matmul"))
  params.set_params(matmul, params.get_params(conv))
  x = jnp.asarray(np.random.RandomState(0).randn(2, 16000).astype(np.float32))
  np.testing.assert_allclose(conv(x).last_hidden_state, matmul(x).last_hidden_state, rtol=1e-5, atol=1e-5)
