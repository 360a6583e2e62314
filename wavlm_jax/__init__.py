"""wavlm_jax: WavLM / HuBERT self-supervised speech pretraining in JAX. `load_encoder` loads JAX on first
use; model cards and configs import without it."""

import os

# gs:// paths go through gcsfs, not TensorFlow's file system (see wavlm_jax/storage.py); set before any
# epath call, which fixes the choice for the process.
os.environ.setdefault("EPATH_USE_TF", "false")

from wavlm_jax.models.config import model_card, model_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Encoder", "load_encoder", "model_card", "model_config"]


def __getattr__(name):
  if name in ("Encoder", "load_encoder"):
    from wavlm_jax import api

    return getattr(api, name)
  raise AttributeError(f"module 'wavlm_jax' has no attribute {name!r}")
