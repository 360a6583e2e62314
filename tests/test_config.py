"""Model cards: parameter counts of docs/model.md#model-cards, locked configs, field validation."""

import pytest

from configs import model_cards
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm

ENCODER_PARAMS = {
    "wavlm_base": 94_381_936,
    "wavlm_base_plus": 94_381_936,
    "wavlm_large": 315_453_120,
    "hubert_base": 94_371_712,
    "hubert_large": 315_435_136,
}
# Including final_proj and the 504-row label table (500 clusters + 4 specials): the papers' 94.70M / 316.62M.
WITH_HEAD_PARAMS = {"wavlm_base": 94_707_824, "wavlm_large": 316_627_392, "hubert_base": 94_697_600,
                    "hubert_large": 316_609_408}


@pytest.mark.parametrize("name", sorted(ENCODER_PARAMS))
def test_parameter_counts(name):
  model = wavlm.abstract(model_cards.get_config(name))
  assert params.count(params.param_shapes(model.wavlm)) == ENCODER_PARAMS[name]
  if name in WITH_HEAD_PARAMS:
    assert params.count(params.param_shapes(model)) == WITH_HEAD_PARAMS[name]


def test_scanned_and_looped_have_the_same_parameters():
  scanned = params.param_shapes(wavlm.abstract(config_lib.model_card("wavlm_base")))
  looped = params.param_shapes(wavlm.abstract(config_lib.model_card("wavlm_base", scan_layers=False)))
  assert params.count(scanned) == params.count(looped)
  assert scanned["wavlm/encoder/layers/attention/q_proj/kernel"] == (12, 768, 768)
  assert looped["wavlm/encoder/layers/11/attention/q_proj/kernel"] == (768, 768)


def test_every_parameter_has_logical_axes():
  model = wavlm.abstract(config_lib.model_card("wavlm_large"))
  for path, var in params.param_variables(model).items():
    axes = var.get_metadata()["logical_axes"]
    assert len(axes) == len(var.shape), path
    if path.startswith(params.STACK_PREFIX):
      assert axes[0] == "layers", path
  q = params.param_variables(model)["wavlm/encoder/layers/attention/q_proj/kernel"]
  assert q.get_metadata()["logical_axes"] == ("layers", "embed", "heads")


def test_configs_are_locked_and_validated():
  c = config_lib.model_card("tiny")
  with pytest.raises(AttributeError):
    c.embed_dimm = 3
  with pytest.raises(KeyError, match="unknown model config field 'embed_dimm'"):
    config_lib.model_config(embed_dimm=3)
  with pytest.raises(ValueError, match="'relative_position'"):
    config_lib.model_config(relative_position="rotary")
  with pytest.raises(ValueError, match="'num_heads'"):
    config_lib.model_config(num_heads=7)
  with pytest.raises(KeyError, match="unknown model card"):
    config_lib.model_card("wavlm_huge")


def test_conv_output_length_formula():
  c = config_lib.model_card("wavlm_base")
  for n, t in [(16000, 49), (160000, 499), (250000, 781), (32000, 99), (400, 1)]:
    assert config_lib.conv_output_length(n, c) == t
  for n in range(400, 20000, 37):
    assert config_lib.conv_output_length(n, c) == (n - 400) // 320 + 1
