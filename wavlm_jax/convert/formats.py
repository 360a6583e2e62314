"""Model configs of the PyTorch formats <-> our model config, and reading/writing each format.

Formats: transformers (`save_pretrained` directories of WavLMModel, HubertModel, WavLMForCTC,
HubertForCTC), the original unilm WavLM `{'cfg', 'model'}` checkpoints, and fairseq HuBERT checkpoints
(pre-training, with `final_proj` and `label_embs_concat`; ILS-SSL pre-training with one head per
predicted layer; or fine-tuned `w2v_encoder.*` CTC models, whose pre-training leftovers are listed and
dropped). The architecture always comes from the checkpoint's own config, never from class defaults.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from wavlm_jax import storage
from wavlm_jax.audio import SAMPLE_RATE
from wavlm_jax.convert import mapping, torch_io
from wavlm_jax.models import config as config_lib
from wavlm_jax.models.heads import LABEL_OFFSET


logger = logging.getLogger(__name__)


class ConversionError(ValueError):
  """The source cannot be converted; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------------------
# transformers
# ----------------------------------------------------------------------------------------------
HF_ARCHITECTURES = {"WavLMModel", "WavLMForCTC", "HubertModel", "HubertForCTC"}


def _hf_weights(directory: Path) -> dict[str, np.ndarray]:
  single = [directory / "model.safetensors", directory / "pytorch_model.bin"]
  for path in single:
    if path.is_file():
      return torch_io.load_state_dict(path)
  for index in (directory / "model.safetensors.index.json", directory / "pytorch_model.bin.index.json"):
    if index.is_file():
      files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
      state = {}
      for name in files:
        state.update(torch_io.load_state_dict(directory / name))
      return state
  raise ConversionError(f"{directory}: no model.safetensors, pytorch_model.bin or sharded index found")


def read_hf(directory: str | os.PathLike):
  """(model config, flat params) from a transformers `save_pretrained` directory."""
  directory = Path(directory)
  path = directory / "config.json"
  if not path.is_file():
    raise ConversionError(f"{path}: missing; expected a transformers save_pretrained directory")
  hf = json.loads(path.read_text())
  arch = (hf.get("architectures") or ["?"])[0]
  model_type = hf.get("model_type")
  if model_type not in ("wavlm", "hubert"):
    raise ConversionError(f"{path}: model_type {model_type!r} is not supported (wavlm, hubert)")
  if arch not in HF_ARCHITECTURES:
    raise ConversionError(f"{path}: architecture {arch!r} is not supported ({sorted(HF_ARCHITECTURES)})")
  for field, want in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu")):
    if hf.get(field, "gelu") != want:
      raise ConversionError(f"{path}: {field}={hf.get(field)!r} is not supported (only {want!r})")
  if model_type == "hubert" and (not hf.get("feat_proj_layer_norm", True) or hf.get("conv_pos_batch_norm", False)):
    raise ConversionError(f"{path}: HuBERT variants without feat_proj_layer_norm or with conv_pos_batch_norm "
                          "are not supported")
  if hf.get("add_adapter"):
    raise ConversionError(f"{path}: add_adapter=True is not supported")
  state = _hf_weights(directory)
  ctc = arch.endswith("ForCTC")
  normalize = False
  pre = directory / "preprocessor_config.json"
  if pre.is_file():
    normalize = bool(json.loads(pre.read_text()).get("do_normalize", False))
  try:
    config = config_lib.model_config(
        extractor_mode="default" if hf.get("feat_extract_norm", "group") == "group" else "layer_norm",
        conv_dim=tuple(hf["conv_dim"]), conv_kernel=tuple(hf["conv_kernel"]), conv_stride=tuple(hf["conv_stride"]),
        conv_bias=bool(hf.get("conv_bias", False)),
        embed_dim=hf["hidden_size"], ffn_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"], layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        conv_pos=hf["num_conv_pos_embeddings"], conv_pos_groups=hf["num_conv_pos_embedding_groups"],
        relative_position="gated" if model_type == "wavlm" else "none",
        num_buckets=hf.get("num_buckets", 320), max_distance=hf.get("max_bucket_distance", 800),
        dropout=hf.get("hidden_dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.0), dropout_input=hf.get("feat_proj_dropout", 0.0),
        layerdrop=hf.get("layerdrop", 0.1), final_dropout=hf.get("final_dropout", 0.0),
        mask_prob=hf.get("mask_time_prob", 0.05), mask_length=hf.get("mask_time_length", 10),
        mask_min_masks=hf.get("mask_time_min_masks", 2), mask_channel_prob=hf.get("mask_feature_prob", 0.0),
        mask_channel_length=hf.get("mask_feature_length", 10), normalize_waveform=normalize,
        feature_grad_mult=0.0 if ctc else 1.0,
        vocab_size=int(state["lm_head.weight"].shape[0]) if ctc and "lm_head.weight" in state else 0)
  except KeyError as e:
    raise ConversionError(f"{path}: required field {e} missing") from None
  prefix = f"{model_type}." if ctc else ""
  if prefix and not any(k.startswith(prefix) for k in state):
    prefix = ""
  state = dict(state)
  fill_mask_embedding(state, prefix + "masked_spec_embed", config.embed_dim)
  return config, mapping.to_ours(state, config, mapping.HF, prefix, source=str(directory))


def fill_mask_embedding(state: dict, name: str, dim: int) -> None:
  """transformers omits the mask embedding when its config disables masking; recreate one as the
  reference initialises it (U[0, 1), fixed seed) so that fine-tuning with masking can start."""
  if name not in state:
    state[name] = np.random.default_rng(0).uniform(size=(dim,)).astype(np.float32)


def hf_config_dict(config) -> dict[str, Any]:
  """The transformers config of a model config (WavLMConfig or HubertConfig keyword arguments)."""
  if config.relative_position == "bucket":
    raise ConversionError("un-gated bucket relative position (ILS-SSL) has no transformers architecture")
  kw = dict(
      feat_extract_norm="group" if config.extractor_mode == "default" else "layer",
      feat_extract_activation="gelu", hidden_act="gelu",
      conv_dim=list(config.conv_dim), conv_kernel=list(config.conv_kernel), conv_stride=list(config.conv_stride),
      conv_bias=config.conv_bias, hidden_size=config.embed_dim, intermediate_size=config.ffn_dim,
      num_attention_heads=config.num_heads, num_hidden_layers=config.num_layers,
      do_stable_layer_norm=config.layer_norm_first, layer_norm_eps=config.layer_norm_eps,
      num_conv_pos_embeddings=config.conv_pos, num_conv_pos_embedding_groups=config.conv_pos_groups,
      hidden_dropout=config.dropout, attention_dropout=config.attention_dropout,
      activation_dropout=config.activation_dropout, feat_proj_dropout=config.dropout_input,
      layerdrop=config.layerdrop, final_dropout=config.final_dropout,
      mask_time_prob=config.mask_prob, mask_time_length=config.mask_length,
      mask_time_min_masks=config.mask_min_masks, mask_feature_prob=config.mask_channel_prob,
      mask_feature_length=config.mask_channel_length, apply_spec_augment=True,
  )
  if config.relative_position == "gated":
    kw.update(model_type="wavlm", num_buckets=config.num_buckets, max_bucket_distance=config.max_distance)
  else:
    kw.update(model_type="hubert", feat_proj_layer_norm=True)
  if config.vocab_size > 0:
    kw["vocab_size"] = config.vocab_size
  return kw


def hf_architecture(config) -> str:
  base = "WavLM" if config.relative_position == "gated" else "Hubert"
  return f"{base}ForCTC" if config.vocab_size > 0 else f"{base}Model"


def write_hf(flat: Mapping[str, np.ndarray], config, directory: str | os.PathLike, *,
             weight_norm: str = "legacy") -> None:
  """A transformers `save_pretrained`-style directory: config.json, model.safetensors and
  preprocessor_config.json (loads with `AutoModel`/`<Arch>.from_pretrained`)."""
  import transformers
  from safetensors.numpy import save_file

  kw = hf_config_dict(config)
  cls = transformers.WavLMConfig if kw.pop("model_type") == "wavlm" else transformers.HubertConfig
  hf_config = cls(**kw)
  arch = hf_architecture(config)
  hf_config.architectures = [arch]
  prefix = ("wavlm." if config.relative_position == "gated" else "hubert.") if config.vocab_size > 0 else ""
  state = mapping.to_torch(flat, config, mapping.HF, prefix, weight_norm=weight_norm)
  if config.mask_prob <= 0 and config.mask_channel_prob <= 0:
    state.pop(prefix + "masked_spec_embed")  # transformers does not create it then
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  hf_config.to_json_file(str(directory / "config.json"))
  save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
  (directory / "preprocessor_config.json").write_text(json.dumps({
      "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": SAMPLE_RATE,
      "padding_value": 0.0, "padding_side": "right", "do_normalize": bool(config.normalize_waveform),
      "return_attention_mask": config.extractor_mode == "layer_norm"}, indent=2))


CTC_VOCAB_FILE = "ctc_vocab.json"  # what fine-tuning saves in a model directory (wavlm_jax.data.vocab)


def write_hf_tokenizer(ctc_vocab: str | os.PathLike, config, directory: str | os.PathLike) -> None:
  """transformers' tokenizer files for a fine-tuned model's CTC vocabulary, so that
  `pipeline("automatic-speech-recognition", model=DIR)` transcribes: vocab.json plus the config of
  Wav2Vec2CTCTokenizer (letters: `|` between words) or Wav2Vec2PhonemeCTCTokenizer (phonemes, space-
  separated, no phonemizer needed). The blank is `<pad>` = 0 = `pad_token_id`."""
  try:
    data = json.loads(storage.path(ctc_vocab).read_text())
    tokens, kind = list(data["tokens"]), data["kind"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise ConversionError(f"{ctc_vocab}: not a CTC vocabulary ({e!r})") from None
  if len(tokens) != config.vocab_size or tokens[0] != "<pad>":
    raise ConversionError(f"{ctc_vocab}: {len(tokens)} tokens starting {tokens[:1]}, but the CTC head has "
                          f"{config.vocab_size} outputs and the blank must be <pad> at index 0")
  directory = Path(directory)
  (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False, indent=1))
  common = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "do_lower_case": False}
  if kind == "letters":
    tok = {"tokenizer_class": "Wav2Vec2CTCTokenizer", "word_delimiter_token": "|", **common}
  else:
    tok = {"tokenizer_class": "Wav2Vec2PhonemeCTCTokenizer", "do_phonemize": False, "phone_delimiter_token": " ",
           "word_delimiter_token": None, **common}
  (directory / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
  (directory / "special_tokens_map.json").write_text(json.dumps(
      {k: v for k, v in common.items() if k.endswith("_token")}, indent=2))


# ----------------------------------------------------------------------------------------------
# unilm WavLM and fairseq HuBERT
# ----------------------------------------------------------------------------------------------
def parse_conv_layers(spec: str, source: str) -> list[tuple[int, int, int]]:
  """Safely evaluates fairseq's `conv_feature_layers` string, e.g. "[(512,10,5)] + [(512,3,2)] * 4"."""

  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
      return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
      return [ev(e) for e in node.elts] if isinstance(node, ast.List) else tuple(ev(e) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
      left, right = ev(node.left), ev(node.right)
      return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported syntax {ast.dump(node)}")

  try:
    layers = ev(ast.parse(spec, mode="eval"))
    return [(int(d), int(k), int(s)) for d, k, s in layers]
  except (SyntaxError, ValueError, TypeError) as e:
    raise ConversionError(f"{source}: cannot parse conv_feature_layers {spec!r}: {e}") from None


def config_from_original(cfg: Mapping[str, Any], source: str, **extra):
  """Our config from a unilm/fairseq model config (fields of WavLMConfig / HubertConfig)."""
  required = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")
  missing = [k for k in required if k not in cfg]
  if missing:
    raise ConversionError(f"{source}: model config lacks {missing}; cannot tell the architecture")
  if cfg.get("activation_fn", "gelu") != "gelu":
    raise ConversionError(f"{source}: activation_fn={cfg['activation_fn']!r} is not supported (only 'gelu')")
  conv = parse_conv_layers(cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"), source)
  rel = bool(cfg.get("relative_position_embedding", False))
  relative_position = ("gated" if cfg.get("gru_rel_pos", False) else "bucket") if rel else "none"
  return config_lib.model_config(
      extractor_mode=cfg.get("extractor_mode", "default"),
      conv_dim=tuple(d for d, _, _ in conv), conv_kernel=tuple(k for _, k, _ in conv),
      conv_stride=tuple(s for _, _, s in conv), conv_bias=bool(cfg.get("conv_bias", False)),
      embed_dim=int(cfg["encoder_embed_dim"]), ffn_dim=int(cfg["encoder_ffn_embed_dim"]),
      num_heads=int(cfg["encoder_attention_heads"]), num_layers=int(cfg["encoder_layers"]),
      layer_norm_first=bool(cfg.get("layer_norm_first", False)),
      conv_pos=int(cfg.get("conv_pos", 128)), conv_pos_groups=int(cfg.get("conv_pos_groups", 16)),
      relative_position=relative_position, num_buckets=int(cfg.get("num_buckets", 320)),
      max_distance=int(cfg.get("max_distance", 800)), normalize_waveform=bool(cfg.get("normalize", False)),
      dropout=float(cfg.get("dropout", 0.1)), attention_dropout=float(cfg.get("attention_dropout", 0.1)),
      activation_dropout=float(cfg.get("activation_dropout", 0.0)),
      dropout_input=float(cfg.get("dropout_input", 0.0)), layerdrop=float(cfg.get("encoder_layerdrop", 0.0)),
      feature_grad_mult=float(cfg.get("feature_grad_mult", 1.0)),
      mask_prob=float(cfg.get("mask_prob", 0.65)), mask_length=int(cfg.get("mask_length", 10)),
      mask_channel_prob=float(cfg.get("mask_channel_prob", 0.0)),
      mask_channel_length=int(cfg.get("mask_channel_length", 10)),
      **extra)


def original_config_dict(config) -> dict[str, Any]:
  """A unilm `WavLMConfig`-style dict describing `config` (the inverse of config_from_original)."""
  conv = " + ".join(f"[({d},{k},{s})]" for d, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride))
  d = dict(
      extractor_mode=config.extractor_mode, encoder_layers=config.num_layers, encoder_embed_dim=config.embed_dim,
      encoder_ffn_embed_dim=config.ffn_dim, encoder_attention_heads=config.num_heads, activation_fn="gelu",
      layer_norm_first=config.layer_norm_first, conv_feature_layers=conv, conv_bias=config.conv_bias,
      conv_pos=config.conv_pos, conv_pos_groups=config.conv_pos_groups,
      relative_position_embedding=config.relative_position != "none",
      gru_rel_pos=config.relative_position == "gated", num_buckets=config.num_buckets,
      max_distance=config.max_distance, normalize=config.normalize_waveform, dropout=config.dropout,
      attention_dropout=config.attention_dropout, activation_dropout=config.activation_dropout,
      dropout_input=config.dropout_input, encoder_layerdrop=config.layerdrop,
      feature_grad_mult=config.feature_grad_mult, mask_prob=config.mask_prob, mask_length=config.mask_length,
      mask_selection="static", mask_other=0.0, no_mask_overlap=False, mask_min_space=1,
      mask_channel_prob=config.mask_channel_prob, mask_channel_length=config.mask_channel_length,
      final_dim=config.final_dim)
  if config.predict_layers:
    # ILS-SSL (UniSpeech ils_hubert) fields: its config stores the layer list as a string.
    d.update(predict_layers=str(list(config.predict_layers)), separate_label_embeds=True,
             separate_layer_targets=False, weighted_sum=False)
  return d


def _load_checkpoint(path: Path) -> Mapping[str, Any]:
  if not path.is_file():
    raise ConversionError(f"{path}: no such file")
  ckpt = torch_io.load_torch_file(path)
  if not isinstance(ckpt, Mapping) or "model" not in ckpt:
    raise ConversionError(f"{path}: not a unilm/fairseq checkpoint (expected a dict with a 'model' entry)")
  return ckpt


def read_unilm(path: str | os.PathLike):
  """(config, flat params) from an original WavLM checkpoint {'cfg': dict, 'model': state_dict}."""
  path = Path(path)
  ckpt = _load_checkpoint(path)
  if "cfg" not in ckpt:
    raise ConversionError(f"{path}: no 'cfg' entry; unilm checkpoints carry their WavLMConfig fields there")
  cfg = torch_io.to_plain(ckpt["cfg"])
  state = torch_io.state_dict_to_numpy(ckpt["model"])
  extra = _head_fields(state, cfg, path)
  config = config_from_original(cfg, str(path), **extra)
  return config, mapping.to_ours(state, config, mapping.ORIGINAL, source=str(path))


def _head_fields(state: dict[str, np.ndarray], cfg: Mapping[str, Any], source) -> dict[str, Any]:
  """Pre-training head sizes from its (unprefixed) tensors: final_dim and label classes, plus
  predict_layers for ILS-SSL heads; the CTC vocabulary size. Renames early HuBERT's `label_embs`."""
  extra: dict[str, Any] = {}
  if "label_embs" in state and "label_embs_concat" not in state:
    state["label_embs_concat"] = state.pop("label_embs")  # the name in early HuBERT checkpoints
  ils = "predict_layers" in cfg or any(k.startswith(("final_proj.0.", "post_layer_norm.")) for k in state)
  if "label_embs_concat" in state and (ils or state["label_embs_concat"].ndim != 2):
    extra.update(_ils_head_fields(state, cfg, source))
  elif "label_embs_concat" in state:
    rows, dim = state["label_embs_concat"].shape
    if "final_proj.weight" not in state or state["final_proj.weight"].shape[0] != dim:
      raise ConversionError(f"{source}: final_proj does not match label_embs_concat {rows}x{dim} "
                            "(several label sets or a tied projection are not supported)")
    extra.update(num_label_classes=rows - LABEL_OFFSET, final_dim=dim)
  if "w2v_encoder.proj.weight" in state:
    extra["vocab_size"] = int(state["w2v_encoder.proj.weight"].shape[0])
  return extra


def _ils_head_fields(state: Mapping[str, np.ndarray], cfg: Mapping[str, Any], source) -> dict[str, Any]:
  """ILS-SSL (UniSpeech `ils_hubert`) heads -> predict_layers, num_label_classes, final_dim.

  Our model has one head per predicted layer (final_proj, label table, and post_layer_norm when
  pre-LN), which is `--separate-label-embeds` with one label set, as the released recipe trains.
  Other variants are refused by name rather than converted into a different model.
  """
  def refuse(what):
    raise ConversionError(f"{source}: ILS-SSL checkpoint with {what} is not supported (only separate_label_embeds "
                          "with one label set and the same targets for every predicted layer)")

  spec = cfg.get("predict_layers")
  if spec is None:
    raise ConversionError(f"{source}: ILS-SSL heads (final_proj.N / stacked label_embs_concat) but the model "
                          "config has no predict_layers; cannot tell which layers they belong to")
  try:
    layers = ast.literal_eval(spec) if isinstance(spec, str) else spec
    layers = tuple(int(x) for x in layers)
  except (ValueError, SyntaxError, TypeError):
    raise ConversionError(f"{source}: cannot parse predict_layers {spec!r}") from None
  if cfg.get("separate_layer_targets"):
    refuse("separate_layer_targets=True (different targets per layer)")
  if cfg.get("weighted_sum") or "weights" in state:
    refuse("weighted_sum=True (learned per-layer loss weights)")
  if "final_proj.weight" in state or cfg.get("separate_label_embeds") is False:
    refuse("one final_proj and label table shared by all predicted layers (separate_label_embeds=False)")
  table = state["label_embs_concat"]
  if table.ndim != 3 or table.shape[0] != len(layers):
    refuse(f"label_embs_concat of shape {tuple(table.shape)} for predict_layers {list(layers)} "
           f"(expected ({len(layers)}, C + {LABEL_OFFSET}, final_dim))")
  _, rows, dim = table.shape
  for k in range(len(layers)):
    proj = state.get(f"final_proj.{k}.weight")
    if proj is not None and proj.shape[0] != dim:
      refuse(f"final_proj.{k} of {proj.shape[0]} outputs for label tables of width {dim} (several label sets)")
  return dict(predict_layers=layers, num_label_classes=rows - LABEL_OFFSET, final_dim=dim)


# Pre-training modules a fine-tuned fairseq model still carries under w2v_encoder.w2v_model.: fairseq's
# remove_pretraining_modules drops final_proj and target_glu (HuBERT keeps label_embs_concat); ILS-SSL
# also keeps post_layer_norm.N and weighted_sum's weights. The CTC model uses none of them.
_PRETRAINING_LEFTOVER = re.compile(r"label_embs_concat|label_embs|final_proj(\.\d+)?\.(weight|bias)"
                                   r"|target_glu\.\d+\.(weight|bias)|post_layer_norm\.\d+\.(weight|bias)|weights")


def drop_pretraining_leftovers(state: dict[str, np.ndarray], prefix: str) -> list[tuple[str, tuple]]:
  """Removes from `state` the pre-training head tensors under `prefix` (a fine-tuned model's backbone)
  and returns their (name, shape), for the caller to report."""
  return [(name, tuple(state.pop(name).shape)) for name in sorted(state)
          if name.startswith(prefix) and _PRETRAINING_LEFTOVER.fullmatch(name[len(prefix):])]


def read_fairseq(path: str | os.PathLike, *, dropped: list | None = None):
  """(config, flat params) from a fairseq HuBERT checkpoint: pre-training (plain or ILS-SSL) or
  fine-tuned CTC. A fine-tuned model's leftover pre-training tensors are dropped, never silently: their
  (name, shape) are appended to `dropped` when it is a list (the caller reports them), else logged as a
  warning."""
  path = Path(path)
  ckpt = _load_checkpoint(path)
  if ckpt.get("cfg") is not None:
    cfg = torch_io.to_plain(ckpt["cfg"])
    model_cfg = dict(cfg.get("model") or {})
  elif ckpt.get("args") is not None:
    model_cfg = torch_io.to_plain(ckpt["args"])
  else:
    raise ConversionError(f"{path}: neither 'cfg' nor 'args' present; cannot tell the architecture")
  state = {k: v for k, v in torch_io.state_dict_to_numpy(ckpt["model"]).items()}
  prefix = ""
  if any(k.startswith("w2v_encoder.w2v_model.") for k in state):  # fine-tuned CTC model
    prefix = "w2v_encoder.w2v_model."
    finetune_cfg = model_cfg
    w2v_args = model_cfg.get("w2v_args") or {}
    arch = dict(w2v_args.get("model") or w2v_args)
    # Regularisation of the fine-tuning run overrides the pre-training values.
    overrides = {"dropout": "dropout", "attention_dropout": "attention_dropout",
                 "activation_dropout": "activation_dropout", "layerdrop": "encoder_layerdrop",
                 "feature_grad_mult": "feature_grad_mult", "mask_prob": "mask_prob",
                 "mask_length": "mask_length", "mask_channel_prob": "mask_channel_prob",
                 "mask_channel_length": "mask_channel_length", "dropout_input": "dropout_input"}
    for theirs, ours in overrides.items():
      if theirs in model_cfg:
        arch[ours] = model_cfg[theirs]
    if "normalize" not in arch and "normalize" in (w2v_args.get("task") or {}):
      arch["normalize"] = w2v_args["task"]["normalize"]
    model_cfg = arch
  elif "normalize" not in model_cfg and ckpt.get("cfg") is not None:
    task = (torch_io.to_plain(ckpt["cfg"]).get("task") or {})
    if "normalize" in task:
      model_cfg["normalize"] = task["normalize"]
  if prefix:
    leftovers = drop_pretraining_leftovers(state, prefix)
    if dropped is not None:
      dropped.extend(leftovers)
    elif leftovers:
      logger.warning("%s: dropped pre-training tensors the fine-tuned model does not use: %s", path,
                     ", ".join(f"{name} {shape}" for name, shape in leftovers))
  extra = _head_fields(state, model_cfg, path)
  if prefix:
    extra["final_dropout"] = float(finetune_cfg.get("final_dropout", 0.0))
  config = config_from_original(model_cfg, str(path), **extra)
  return config, mapping.to_ours(state, config, mapping.ORIGINAL, prefix, source=str(path))


def write_unilm(flat: Mapping[str, np.ndarray], config, path: str | os.PathLike) -> None:
  """The original checkpoint format: {'cfg': WavLMConfig fields, 'model': state dict}."""
  if config.vocab_size > 0:
    raise ConversionError("the unilm format has no CTC head; export to hf instead")
  state = mapping.to_torch(flat, config, mapping.ORIGINAL)
  torch_io.save_torch_file({"cfg": original_config_dict(config), "model": state}, path)
