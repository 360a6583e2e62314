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
