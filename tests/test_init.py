"""From-scratch initialisation follows PyTorch's defaults where fairseq and transformers leave them:
Linear layers (feature projection, final_proj) draw weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

import numpy as np

from wavlm_jax.models import wavlm
from wavlm_jax.models.config import model_card


def _check_torch_linear(kernel, bias, fan_in):
  bound = fan_in ** -0.5
  for w in (np.asarray(kernel).ravel(), np.asarray(bias).ravel()):
    assert np.abs(w).max() <= bound and w.min() < 0 < w.max()  # both signs (was U[0, 2b): all positive)
  w = np.asarray(kernel).ravel()
  assert w.min() < -0.9 * bound and w.max() > 0.9 * bound
  assert abs(w.mean()) < 0.05 * bound and abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound


def test_feature_projection_and_final_proj_use_pytorch_linear_init():
  cfg = model_card("tiny", num_label_classes=10)
  model = wavlm.build(cfg, seed=0)
  proj = model.wavlm.feature_projection.projection
  _check_torch_linear(proj.kernel[...], proj.bias[...], cfg.conv_dim[-1])
  head = model.pretrain_head.final_proj
  _check_torch_linear(head.kernel[...], head.bias[...], cfg.embed_dim)
