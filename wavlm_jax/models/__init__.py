"""WavLM / HuBERT in Flax NNX: one idea per file."""

from wavlm_jax.models.config import model_card, model_config
from wavlm_jax.models.wavlm import Model, Output, WavLM, abstract, build
