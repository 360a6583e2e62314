"""WavLM / HuBERT in Flax NNX: one idea per file. `model_card`/`model_config` are cheap to import (no JAX);
the model classes load on first use."""

from wavlm_jax.models.config import model_card, model_config

__all__ = ["Model", "Output", "WavLM", "abstract", "build", "model_card", "model_config"]

_MODEL = ("Model", "Output", "WavLM", "abstract", "build")


def __getattr__(name):
  if name in _MODEL:
    from wavlm_jax.models import wavlm

    return getattr(wavlm, name)
  raise AttributeError(f"module 'wavlm_jax.models' has no attribute {name!r}")
