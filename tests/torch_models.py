"""Tiny transformers reference models for parity tests, with every parameter perturbed so that no
default initialisation (ones, zeros) can hide a mapping error."""

from __future__ import annotations

import numpy as np
import torch
import transformers

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

VARIANTS = {
    # name: (config class, model class, config overrides)
    "wavlm_post_ln_group_norm": (transformers.WavLMConfig, "WavLM", dict(num_buckets=32, max_bucket_distance=64)),
    "wavlm_pre_ln_layer_norm_conv_bias": (
        transformers.WavLMConfig, "WavLM",
        dict(num_buckets=32, max_bucket_distance=64, do_stable_layer_norm=True, feat_extract_norm="layer",
             conv_bias=True)),
    "hubert_post_ln": (transformers.HubertConfig, "Hubert", {}),
}


def make(variant: str, ctc: bool = False, seed: int = 0, **overrides):
  config_cls, prefix, extra = VARIANTS[variant]
  config = config_cls(**{**TINY, **extra, **overrides}, vocab_size=12)
  model_cls = getattr(transformers, f"{prefix}ForCTC" if ctc else f"{prefix}Model")
  torch.manual_seed(seed)
  model = model_cls(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def waveforms(batch: int = 2, samples: int = 16000, seed: int = 0):
  """Random waveforms and a padding mask (True = padding) with the second row 30 % padded."""
  x = np.random.RandomState(seed).randn(batch, samples).astype(np.float32)
  pad = np.zeros((batch, samples), bool)
  pad[-1, int(samples * 0.7):] = True
  x[pad] = 0.0
  return x, pad


def reference(model, x, pad=None):
  """(hidden_states, last_hidden_state) of the PyTorch model as NumPy."""
  with torch.no_grad():
    out = model(torch.from_numpy(x), attention_mask=None if pad is None else torch.from_numpy(~pad).long(),
                output_hidden_states=True)
  base = out
  hidden = [h.numpy() for h in base.hidden_states]
  last = getattr(base, "last_hidden_state", None)
  return hidden, (None if last is None else last.numpy()), out


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
