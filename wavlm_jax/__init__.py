"""wavlm_jax: WavLM / HuBERT self-supervised speech pretraining in JAX."""

from wavlm_jax.api import Encoder, load_encoder
from wavlm_jax.models.config import model_card, model_config

__version__ = "0.1.0"
