"""Model cards: the architectures of the released WavLM and HuBERT models, and `tiny` for CPU.

  python -c "from configs.model_cards import get_config; print(get_config('wavlm_base'))"

Each card is a locked `ml_collections.ConfigDict` (fields: wavlm_jax/models/config.py). Run recipes
take a card by name and override what they need, e.g. `model_card('wavlm_base', dtype='bfloat16')`.
"""

from wavlm_jax.models.config import model_card


def get_config(arg: str = "wavlm_base"):
  """`arg` names the card: wavlm_base, wavlm_base_plus, wavlm_large, hubert_base, hubert_large, tiny."""
  return model_card(arg)

