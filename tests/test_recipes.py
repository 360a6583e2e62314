"""Every run recipe loads, validates and shrinks with `runlocal`; their architectures are the cards'."""

import pytest

from configs import hubert_base, ils_ssl_base, tiny, wavlm_base, wavlm_base_plus, wavlm_large
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm

RECIPES = {"hubert_base:it1": (hubert_base, "it1"), "hubert_base:it2": (hubert_base, "it2"),
           "wavlm_base": (wavlm_base, ""), "wavlm_base_plus": (wavlm_base_plus, ""),
           "wavlm_large": (wavlm_large, ""), "ils_ssl_base": (ils_ssl_base, ""), "tiny": (tiny, None)}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads(name):
  module, arg = RECIPES[name]
  c = module.get_config(arg) if arg is not None else module.get_config()
  config_lib.validate(c.model)
  assert c.total_steps > 0 and c.data.batch_size > 0
  if name != "tiny":
    local = module.get_config(f"{arg},runlocal" if arg else "runlocal")
    assert local.model.embed_dim == 64 and local.data.dataset == "espeak_speech/tiny" and local.tokenizer
    config_lib.validate(local.model)


def test_recipe_architectures():
  assert params.count(params.param_shapes(wavlm.abstract(wavlm_base.get_config().model).wavlm)) == 94_381_936
  assert params.count(params.param_shapes(wavlm.abstract(wavlm_large.get_config().model).wavlm)) == 315_453_120
  ils = ils_ssl_base.get_config().model
  assert ils.relative_position == "bucket" and ils.predict_layers == (4, 12)
  assert hubert_base.get_config("it1").model.num_label_classes == 100
  with pytest.raises(ValueError, match="unknown recipe argument"):
    hubert_base.get_config("it3")
