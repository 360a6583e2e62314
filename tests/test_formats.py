"""Original-format checkpoints (unilm WavLM, fairseq HuBERT pre-training, ILS-SSL pre-training and CTC)
import to the same outputs as transformers; unsafe pickles are refused; bad input is reported and nothing
is written.

The original-format files are built here by renaming a transformers state dict per docs/formats.md#key-mapping,
independently of the converter's own table.
"""

import argparse
import json
import logging
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import wavlm_jax
from tests import torch_models
from wavlm_jax.models import directory
from wavlm_jax.convert import formats
from wavlm_jax.convert.__main__ import main as convert

_RENAMES = [
    (r"\.parametrizations\.weight\.original0$", ".weight_g"),
    (r"\.parametrizations\.weight\.original1$", ".weight_v"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^masked_spec_embed$", "mask_emb"),
    (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"\.attention\.rel_attn_embed\.", ".self_attn.relative_attention_bias."),
    (r"\.attention\.gru_rel_pos_linear\.", ".self_attn.grep_linear."),
    (r"\.attention\.gru_rel_pos_const$", ".self_attn.grep_a"),
    (r"\.attention\.(q|k|v|out)_proj\.", r".self_attn.\1_proj."),
    (r"^(encoder\.layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
    (r"\.feed_forward\.intermediate_dense\.", ".fc1."),
    (r"\.feed_forward\.output_dense\.", ".fc2."),
]


def to_original(hf_state, layer_norm_mode: bool):
  out = {}
  for name, tensor in hf_state.items():
    m = re.match(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)$", name)
    if m:
      name = (f"feature_extractor.conv_layers.{m[1]}.2.1.{m[2]}" if layer_norm_mode
              else f"feature_extractor.conv_layers.{m[1]}.2.{m[2]}")
    for pattern, repl in _RENAMES:
      name = re.sub(pattern, repl, name)
    out[name] = tensor.detach().clone()
  return out


def original_cfg(hf_config, **extra):
  conv = "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2"
  cfg = dict(extractor_mode="layer_norm" if hf_config.feat_extract_norm == "layer" else "default",
             encoder_layers=hf_config.num_hidden_layers, encoder_embed_dim=hf_config.hidden_size,
             encoder_ffn_embed_dim=hf_config.intermediate_size,
             encoder_attention_heads=hf_config.num_attention_heads, activation_fn="gelu",
             layer_norm_first=hf_config.do_stable_layer_norm, conv_feature_layers=conv,
             conv_bias=hf_config.conv_bias, conv_pos=16, conv_pos_groups=4, dropout=0.1, encoder_layerdrop=0.05,
             feature_grad_mult=0.1, mask_prob=0.8, normalize=False)
  cfg.update(extra)
  return cfg


def _compare_hidden(dst, model):
  x, _ = torch_models.waveforms()
  ours = wavlm_jax.load_encoder(dst).hidden_states(x)
  theirs, _, _ = torch_models.reference(model, x)
  for i in range(len(theirs)):
    assert torch_models.rel_err(ours[i], theirs[i]) < 1e-4, i


@pytest.mark.parametrize("variant", ["wavlm_post_ln_group_norm", "wavlm_pre_ln_layer_norm_conv_bias"])
def test_unilm_checkpoint_imports_to_the_same_outputs(variant, tmp_path):
  model = torch_models.make(variant)
  state = to_original(model.state_dict(), model.config.feat_extract_norm == "layer")
  cfg = original_cfg(model.config, relative_position_embedding=True, gru_rel_pos=True, num_buckets=32,
                     max_distance=64)
  torch.save({"cfg": cfg, "model": state}, tmp_path / "WavLM.pt")
  assert convert(["--from", "unilm", "--src", str(tmp_path / "WavLM.pt"), "--dst", str(tmp_path / "ours")]) == 0
  config = directory.load_config(tmp_path / "ours")
  assert config.relative_position == "gated" and config.layerdrop == 0.05 and config.feature_grad_mult == 0.1
  if model.config.do_stable_layer_norm:
    x, _ = torch_models.waveforms()
    ours = wavlm_jax.load_encoder(tmp_path / "ours").hidden_states(x)
    theirs, last, _ = torch_models.reference(model, x)
    assert torch_models.rel_err(ours[1], theirs[1]) < 1e-4 and torch_models.rel_err(ours[-1], last) < 1e-4
  else:
    _compare_hidden(tmp_path / "ours", model)


@pytest.mark.parametrize("cfg_style", ["omegaconf", "argparse"])
def test_fairseq_pretraining_checkpoint_with_heads(cfg_style, tmp_path):
  model = torch_models.make("hubert_post_ln")
  state = to_original(model.state_dict(), False)
  state["final_proj.weight"] = torch.randn(8, 32)
  state["final_proj.bias"] = torch.randn(8)
  state["label_embs" if cfg_style == "argparse" else "label_embs_concat"] = torch.rand(14, 8)
  arch = original_cfg(model.config, _name="hubert", final_dim=8, untie_final_proj=True)
  if cfg_style == "omegaconf":
    ckpt = {"cfg": OmegaConf.create({"common": {"seed": 1337}, "model": arch,
                                     "task": {"_name": "hubert_pretraining", "normalize": False, "label_rate": 50}}),
            "model": state, "optimizer_history": [{"num_updates": 400000}]}
  else:
    ckpt = {"args": argparse.Namespace(**arch), "model": state}
  torch.save(ckpt, tmp_path / "hubert.pt")
  assert convert(["--from", "fairseq", "--src", str(tmp_path / "hubert.pt"), "--dst", str(tmp_path / "ours"),
                  "--scan-layers", "false"]) == 0
  config = directory.load_config(tmp_path / "ours")
  assert config.relative_position == "none" and config.num_label_classes == 10 and config.final_dim == 8
  flat = directory.load_flat_params(tmp_path / "ours")
  np.testing.assert_array_equal(flat["pretrain_head/final_proj/kernel"], state["final_proj.weight"].numpy().T)
  table = state.get("label_embs_concat", state.get("label_embs")).numpy()
  np.testing.assert_array_equal(flat["pretrain_head/label_embs_concat"], table)
  _compare_hidden(tmp_path / "ours", model)


def test_fairseq_finetuned_ctc_checkpoint(tmp_path, capsys, caplog):
  model = torch_models.make("hubert_post_ln", ctc=True)
  state = {}
  for name, tensor in model.state_dict().items():
    if name.startswith("lm_head."):
      state[name.replace("lm_head.", "w2v_encoder.proj.")] = tensor
  backbone = {k[len("hubert."):]: v for k, v in model.state_dict().items() if k.startswith("hubert.")}
  state.update({f"w2v_encoder.w2v_model.{k}": v for k, v in to_original(backbone, False).items()})
  # fairseq's remove_pretraining_modules drops final_proj and target_glu but keeps the label table.
  state["w2v_encoder.w2v_model.label_embs_concat"] = torch.rand(14, 8)
  cfg = OmegaConf.create({"model": {"_name": "hubert_ctc", "final_dropout": 0.0, "layerdrop": 0.1,
                                    "feature_grad_mult": 0.0,
                                    "w2v_args": {"model": original_cfg(model.config, _name="hubert", final_dim=8,
                                                                       untie_final_proj=True),
                                                 "task": {"normalize": False, "labels": ["km"]}}}})
  torch.save({"cfg": cfg, "model": state}, tmp_path / "ctc.pt")
  assert convert(["--from", "fairseq", "--src", str(tmp_path / "ctc.pt"), "--dst", str(tmp_path / "ours")]) == 0
  assert "dropped w2v_encoder.w2v_model.label_embs_concat (14, 8)" in capsys.readouterr().err
  dropped = []
  config, _ = formats.read_fairseq(tmp_path / "ctc.pt", dropped=dropped)
  assert dropped == [("w2v_encoder.w2v_model.label_embs_concat", (14, 8))] and config.num_label_classes == 0
  with caplog.at_level(logging.WARNING, logger="wavlm_jax.convert.formats"):
    formats.read_fairseq(tmp_path / "ctc.pt")  # no list to receive them: logged instead
  assert "w2v_encoder.w2v_model.label_embs_concat (14, 8)" in caplog.text
  ours = directory.load_model(tmp_path / "ours")
  assert ours.config.vocab_size == 12 and ours.config.layerdrop == 0.1 and ours.config.feature_grad_mult == 0.0
  x, _ = torch_models.waveforms()
  logits = ours.ctc_logits(ours(jnp.asarray(x)))
  _, _, out = torch_models.reference(model, x)
  assert torch_models.rel_err(logits, out.logits.numpy()) < 1e-4


def _ils_heads(model, predict_layers, pre_ln: bool, classes: int = 10, final_dim: int = 8, seed: int = 1):
  """The ILS-SSL pre-training tensors (UniSpeech ils_hubert with separate label embeddings,
  docs/objectives.md#ils-ssl): final_proj.K per predicted layer, one (layers, C + 4, final_dim) label
  table, and post_layer_norm.K when the model is pre-LN."""
  g = torch.Generator().manual_seed(seed)
  e = model.config.hidden_size
  heads = {"label_embs_concat": torch.rand(len(predict_layers), classes + 4, final_dim, generator=g)}
  for k in range(len(predict_layers)):
    heads[f"final_proj.{k}.weight"] = torch.randn(final_dim, e, generator=g)
    heads[f"final_proj.{k}.bias"] = torch.randn(final_dim, generator=g)
    if pre_ln:
      heads[f"post_layer_norm.{k}.weight"] = 1 + 0.1 * torch.randn(e, generator=g)
      heads[f"post_layer_norm.{k}.bias"] = 0.1 * torch.randn(e, generator=g)
  return heads


@pytest.mark.parametrize("pre_ln", [False, True], ids=["post_ln", "pre_ln"])
def test_ils_ssl_checkpoint_converts_both_ways(pre_ln, tmp_path):
  model = torch_models.make("hubert_post_ln", do_stable_layer_norm=pre_ln)
  predict_layers = [1, 2]
  heads = _ils_heads(model, predict_layers, pre_ln)
  state = {**to_original(model.state_dict(), False), **heads}
  arch = original_cfg(model.config, _name="ils_hubert", final_dim=8, untie_final_proj=True,
                      predict_layers=str(predict_layers), separate_label_embeds=True, separate_layer_targets=False,
                      weighted_sum=False)
  cfg = OmegaConf.create({"model": arch, "task": {"_name": "hubert_pretraining", "normalize": False}})
  torch.save({"cfg": cfg, "model": state}, tmp_path / "ils.pt")
  assert convert(["--from", "fairseq", "--src", str(tmp_path / "ils.pt"), "--dst", str(tmp_path / "ours")]) == 0
  ours = directory.load_model(tmp_path / "ours")
  assert ours.config.predict_layers == (1, 2) and ours.config.num_label_classes == 10 and ours.config.final_dim == 8

  # Each head sits on its own layer: cosine logits from the reference's layer outputs and the fixture tensors.
  x, _ = torch_models.waveforms()
  theirs, _, _ = torch_models.reference(model, x)
  logits = ours.label_logits(ours(jnp.asarray(x)))
  for k, layer in enumerate(predict_layers):
    h = torch.from_numpy(theirs[layer])  # un-normalised output of `layer` (not the last layer here)
    if pre_ln:
      h = torch.nn.functional.layer_norm(h, (h.shape[-1],), heads[f"post_layer_norm.{k}.weight"],
                                         heads[f"post_layer_norm.{k}.bias"])
    proj = torch.nn.functional.linear(h, heads[f"final_proj.{k}.weight"], heads[f"final_proj.{k}.bias"])
    table = heads["label_embs_concat"][k]
    want = torch.cosine_similarity(proj.unsqueeze(-2), table, dim=-1) / 0.1
    assert torch_models.rel_err(logits[f"layer{layer}"], want.numpy()) < 1e-4, k

  # Back to the original layout: the same tensors under the same names, and the same model again.
  assert convert(["--to", "unilm", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "back.pt")]) == 0
  back = torch.load(tmp_path / "back.pt", weights_only=True)
  assert back["cfg"]["predict_layers"] == "[1, 2]" and back["cfg"]["separate_label_embeds"]
  for name, tensor in heads.items():
    torch.testing.assert_close(back["model"][name], tensor, rtol=0, atol=0, msg=name)
  assert convert(["--from", "unilm", "--src", str(tmp_path / "back.pt"), "--dst", str(tmp_path / "again")]) == 0
  flat, again = directory.load_flat_params(tmp_path / "ours"), directory.load_flat_params(tmp_path / "again")
  assert flat.keys() == again.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], again[k], err_msg=k)


def test_ils_ssl_variants_without_one_head_per_layer_are_refused(tmp_path, capsys):
  model = torch_models.make("hubert_post_ln")
  state = to_original(model.state_dict(), False)
  state["final_proj.weight"] = torch.randn(8, 32)  # separate_label_embeds=False: one head for all layers
  state["final_proj.bias"] = torch.randn(8)
  state["label_embs_concat"] = torch.rand(1, 14, 8)
  arch = original_cfg(model.config, _name="ils_hubert", final_dim=8, predict_layers="[1, 3]",
                      separate_label_embeds=False)
  torch.save({"cfg": OmegaConf.create({"model": arch}), "model": state}, tmp_path / "ils.pt")
  assert convert(["--from", "fairseq", "--src", str(tmp_path / "ils.pt"), "--dst", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "ILS-SSL checkpoint with one final_proj and label table shared by all predicted layers" in err
  assert "separate_label_embeds=False" in err and "ils.pt" in err
  assert not (tmp_path / "out").exists()


def test_finetuned_ils_ssl_leftovers_are_listed_and_dropped(tmp_path, capsys):
  model = torch_models.make("hubert_post_ln", ctc=True, do_stable_layer_norm=True)
  state = {k.replace("lm_head.", "w2v_encoder.proj."): v for k, v in model.state_dict().items()
           if k.startswith("lm_head.")}
  backbone = {k[len("hubert."):]: v for k, v in model.state_dict().items() if k.startswith("hubert.")}
  leftovers = {k: v for k, v in _ils_heads(model, [1, 3], pre_ln=True).items() if k.startswith("post_layer_norm.")}
  state.update({f"w2v_encoder.w2v_model.{k}": v for k, v in {**to_original(backbone, False), **leftovers}.items()})
  arch = original_cfg(model.config, _name="ils_hubert", final_dim=8, predict_layers="[1, 3]",
                      separate_label_embeds=True)
  cfg = OmegaConf.create({"model": {"_name": "hubert_ctc", "w2v_args": {"model": arch, "task": {"normalize": False}}}})
  torch.save({"cfg": cfg, "model": state}, tmp_path / "ctc.pt")
  assert convert(["--from", "fairseq", "--src", str(tmp_path / "ctc.pt"), "--dst", str(tmp_path / "ours")]) == 0
  err = capsys.readouterr().err
  for name in leftovers:
    assert f"dropped w2v_encoder.w2v_model.{name} (32,)" in err, name
  config = directory.load_config(tmp_path / "ours")
  assert config.vocab_size == 12 and config.predict_layers == () and config.num_label_classes == 0


class _Payload:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_pickle_that_carries_code_is_refused(tmp_path, capsys):
  marker = tmp_path / "pwned"
  torch.save({"cfg": {"x": _Payload(marker)}, "model": {}}, tmp_path / "evil.pt")
  assert convert(["--from", "unilm", "--src", str(tmp_path / "evil.pt"), "--dst", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "refusing to load" in err and "system" in err and "evil.pt" in err
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_wrong_tensors_are_listed_and_nothing_written(tmp_path, capsys):
  model = torch_models.make("wavlm_post_ln_group_norm")
  state = to_original(model.state_dict(), False)
  del state["encoder.layers.1.fc1.weight"]
  state["encoder.layers.1.fc2.weight"] = torch.zeros(5, 5)
  state["decoder.embed_tokens.weight"] = torch.zeros(3, 4)
  cfg = original_cfg(model.config, relative_position_embedding=True, gru_rel_pos=True, num_buckets=32,
                     max_distance=64)
  torch.save({"cfg": cfg, "model": state}, tmp_path / "bad.pt")
  assert convert(["--from", "unilm", "--src", str(tmp_path / "bad.pt"), "--dst", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "missing:    encoder.layers.1.fc1.weight (64, 32)" in err
  assert "unexpected: decoder.embed_tokens.weight (3, 4)" in err
  assert "encoder.layers.1.fc2.weight expected (32, 64), got (5, 5)" in err
  assert not (tmp_path / "out").exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unknown_architecture_and_missing_config(tmp_path, capsys):
  model = torch_models.make("hubert_post_ln")
  model.save_pretrained(tmp_path / "hf")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  config["model_type"] = "wav2vec2"
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
  assert convert(["--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "out")]) == 1
  assert "model_type 'wav2vec2' is not supported" in capsys.readouterr().err
  torch.save({"cfg": {"encoder_layers": 3}, "model": {}}, tmp_path / "partial.pt")
  assert convert(["--from", "unilm", "--src", str(tmp_path / "partial.pt"), "--dst", str(tmp_path / "out")]) == 1
  assert "lacks ['encoder_embed_dim'" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_existing_destination_is_not_overwritten(tmp_path, capsys):
  model = torch_models.make("hubert_post_ln")
  model.save_pretrained(tmp_path / "hf")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  assert convert(["--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "out")]) == 1
  assert "--overwrite" in capsys.readouterr().err
  assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
