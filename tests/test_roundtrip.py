"""Lossless conversion: HF -> ours -> HF and ours -> HF -> ours give identical tensors; exported
directories load in transformers with no missing or unexpected keys, in both weight-norm spellings."""

import numpy as np
import pytest
import torch
import transformers

from tests import torch_models
from wavlm_jax.models import directory
from wavlm_jax.convert import mapping, torch_io
from wavlm_jax.convert.__main__ import main as convert
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm


def _hf_state(model):
  return mapping.normalize_weight_norm_names({k: v.detach().numpy() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("variant", sorted(torch_models.VARIANTS))
@pytest.mark.parametrize("weight_norm", ["legacy", "parametrizations"])
def test_hf_to_ours_to_hf_is_identical(variant, weight_norm, tmp_path):
  model = torch_models.make(variant)
  model.save_pretrained(tmp_path / "hf")
  assert convert(["--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "ours")]) == 0
  assert convert(["--to", "hf", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "back"),
                  "--weight-norm-keys", weight_norm]) == 0
  keys = torch_io.load_state_dict(tmp_path / "back" / "model.safetensors")
  spelled = [k for k in keys if "pos_conv_embed" in k and "bias" not in k]
  assert all(("original" in k) == (weight_norm == "parametrizations") for k in spelled), spelled
  reloaded, info = type(model).from_pretrained(tmp_path / "back", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  before, after = _hf_state(model), _hf_state(reloaded)
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=k)


@pytest.mark.parametrize("card,extra", [("tiny", {}), ("tiny", dict(relative_position="none", vocab_size=9,
                                                                   layer_norm_first=True,
                                                                   extractor_mode="layer_norm"))])
def test_ours_to_hf_to_ours_is_identical(card, extra, tmp_path):
  config = config_lib.model_card(card, num_label_classes=0, **extra)
  model = wavlm.build(config, seed=3)
  flat = params.get_params(model)
  directory.save_model(tmp_path / "ours", flat, config)
  assert convert(["--to", "hf", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "hf")]) == 0
  arch = transformers.AutoConfig.from_pretrained(tmp_path / "hf").architectures[0]
  assert arch == ("HubertForCTC" if extra else "WavLMModel")
  assert convert(["--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "again")]) == 0
  again = directory.load_flat_params(tmp_path / "again")
  assert again.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], again[k], err_msg=k)
  back = directory.load_config(tmp_path / "again")
  for field in ("embed_dim", "num_layers", "relative_position", "layer_norm_first", "extractor_mode", "conv_dim",
                "conv_pos", "vocab_size", "conv_bias"):
    assert back[field] == config[field], field
  if config.relative_position != "none":
    assert (back.num_buckets, back.max_distance) == (config.num_buckets, config.max_distance)


def test_ours_to_unilm_to_ours_is_identical(tmp_path):
  config = config_lib.model_card("tiny", scan_layers=False)
  flat = params.get_params(wavlm.build(config, seed=4))
  directory.save_model(tmp_path / "ours", flat, config)
  assert convert(["--to", "unilm", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "w.pt")]) == 0
  ckpt = torch.load(tmp_path / "w.pt", weights_only=True)  # plain data: loads under weights_only
  assert ckpt["cfg"]["relative_position_embedding"] and ckpt["cfg"]["gru_rel_pos"]
  assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in ckpt["model"]
  assert ckpt["model"]["label_embs_concat"].shape == (54, 32)
  assert convert(["--from", "unilm", "--src", str(tmp_path / "w.pt"), "--dst", str(tmp_path / "again"),
                  "--scan-layers", "false"]) == 0
  again = directory.load_flat_params(tmp_path / "again")
  for k in flat:
    np.testing.assert_array_equal(flat[k], again[k], err_msg=k)


def test_ours_with_ils_heads_to_unilm_to_ours_is_identical(tmp_path):
  # ILS-SSL as UniSpeech trains it: un-gated bucket position bias, one head per predicted layer; pre-LN
  # so that each head's post_layer_norm travels too.
  config = config_lib.model_card("tiny", scan_layers=False, relative_position="bucket", layer_norm_first=True,
                                 predict_layers=(1, 2))
  flat = params.get_params(wavlm.build(config, seed=6))
  directory.save_model(tmp_path / "ours", flat, config)
  assert convert(["--to", "unilm", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "w.pt")]) == 0
  ckpt = torch.load(tmp_path / "w.pt", weights_only=True)
  assert ckpt["cfg"]["relative_position_embedding"] and not ckpt["cfg"]["gru_rel_pos"]
  assert ckpt["model"]["label_embs_concat"].shape == (2, 54, 32)
  assert {"final_proj.1.weight", "post_layer_norm.1.bias"} <= ckpt["model"].keys()
  assert convert(["--from", "unilm", "--src", str(tmp_path / "w.pt"), "--dst", str(tmp_path / "again"),
                  "--scan-layers", "false"]) == 0
  back = directory.load_config(tmp_path / "again")
  assert back.predict_layers == (1, 2) and back.relative_position == "bucket"
  again = directory.load_flat_params(tmp_path / "again")
  assert again.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], again[k], err_msg=k)
