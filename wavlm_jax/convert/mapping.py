"""The one declarative table between our parameter paths and PyTorch state-dict names.

Each row: (our flat path in the per-layer layout, transformers name, original unilm/fairseq name,
transform). The same rows convert in both directions (STYLE.md habit 11); transforms are named:
  linear       Linear weight (out, in) <-> Dense kernel (in, out)
  conv         Conv1d weight (out, in/g, k) <-> kernel (k, in/g, out) (axis reversal)
  head_vector  gate constant (1, H, 1, 1) <-> (H,)
  identity     everything else (norm scale/bias, biases, embeddings, weight-norm g and v)
Rows with a `stack` index share one PyTorch tensor, stacked on a new leading axis in index order
(ILS-SSL's per-layer label tables, one `label_embs_concat` of shape (layers, C + 4, final_dim)).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Mapping

import numpy as np

from wavlm_jax.models import params as params_lib
from wavlm_jax.models import wavlm

HF = "hf"
ORIGINAL = "original"  # unilm WavLM and fairseq HuBERT share module names

_TO_OURS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "linear": lambda x: x.T,
    "conv": lambda x: x.transpose(2, 1, 0),
    "head_vector": lambda x: x.reshape(-1),
}
_TO_TORCH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "linear": lambda x: x.T,
    "conv": lambda x: x.transpose(2, 1, 0),
    "head_vector": lambda x: x.reshape(1, -1, 1, 1),
}


@dataclasses.dataclass(frozen=True)
class Row:
  ours: str
  hf: str | None  # None: transformers has no such tensor (pre-training head)
  original: str | None
  transform: str = "identity"
  backbone: bool = True  # False: a head, never under the backbone prefix
  stack: int | None = None  # index of this row's slice in a tensor shared by several rows

  def torch_name(self, fmt: str) -> str | None:
    return self.hf if fmt == HF else self.original


def table(config) -> list[Row]:
  """All rows for a model config (per-layer layout)."""
  rows: list[Row] = []
  add = lambda *a, **k: rows.append(Row(*a, **k))
  fe = "wavlm/feature_extractor/conv_layers"
  for c in range(len(config.conv_dim)):
    add(f"{fe}/{c}/conv/kernel", f"feature_extractor.conv_layers.{c}.conv.weight",
        f"feature_extractor.conv_layers.{c}.0.weight", "conv")
    if config.conv_bias:
      add(f"{fe}/{c}/conv/bias", f"feature_extractor.conv_layers.{c}.conv.bias",
          f"feature_extractor.conv_layers.{c}.0.bias")
    if config.extractor_mode == "layer_norm":
      norm_original = f"feature_extractor.conv_layers.{c}.2.1"
    elif c == 0:
      norm_original = "feature_extractor.conv_layers.0.2"
    else:
      continue
    for ours, theirs in (("scale", "weight"), ("bias", "bias")):
      add(f"{fe}/{c}/norm/{ours}", f"feature_extractor.conv_layers.{c}.layer_norm.{theirs}",
          f"{norm_original}.{theirs}")

  for ours, theirs in (("scale", "weight"), ("bias", "bias")):
    add(f"wavlm/feature_projection/layer_norm/{ours}", f"feature_projection.layer_norm.{theirs}",
        f"layer_norm.{theirs}")
    add(f"wavlm/encoder/layer_norm/{ours}", f"encoder.layer_norm.{theirs}", f"encoder.layer_norm.{theirs}")
  add("wavlm/feature_projection/projection/kernel", "feature_projection.projection.weight",
      "post_extract_proj.weight", "linear")
  add("wavlm/feature_projection/projection/bias", "feature_projection.projection.bias", "post_extract_proj.bias")
  add("wavlm/masked_spec_embed", "masked_spec_embed", "mask_emb")
  for name in ("weight_v", "weight_g", "bias"):
    add(f"wavlm/encoder/pos_conv_embed/{name}", f"encoder.pos_conv_embed.conv.{name}", f"encoder.pos_conv.0.{name}")
  if config.relative_position != "none":
    add("wavlm/encoder/rel_attn_embed", "encoder.layers.0.attention.rel_attn_embed.weight",
        "encoder.layers.0.self_attn.relative_attention_bias.weight")

  for i in range(config.num_layers):
    ours, hf, orig = f"wavlm/encoder/layers/{i}", f"encoder.layers.{i}", f"encoder.layers.{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      add(f"{ours}/attention/{proj}/kernel", f"{hf}.attention.{proj}.weight", f"{orig}.self_attn.{proj}.weight",
          "linear")
      add(f"{ours}/attention/{proj}/bias", f"{hf}.attention.{proj}.bias", f"{orig}.self_attn.{proj}.bias")
    if config.relative_position == "gated":
      add(f"{ours}/attention/gru_rel_pos_linear/kernel", f"{hf}.attention.gru_rel_pos_linear.weight",
          f"{orig}.self_attn.grep_linear.weight", "linear")
      add(f"{ours}/attention/gru_rel_pos_linear/bias", f"{hf}.attention.gru_rel_pos_linear.bias",
          f"{orig}.self_attn.grep_linear.bias")
      add(f"{ours}/attention/gru_rel_pos_const", f"{hf}.attention.gru_rel_pos_const", f"{orig}.self_attn.grep_a",
          "head_vector")
    for norm, orig_norm in (("layer_norm", "self_attn_layer_norm"), ("final_layer_norm", "final_layer_norm")):
      for o, t in (("scale", "weight"), ("bias", "bias")):
        add(f"{ours}/{norm}/{o}", f"{hf}.{norm}.{t}", f"{orig}.{orig_norm}.{t}")
    for dense, orig_dense in (("intermediate_dense", "fc1"), ("output_dense", "fc2")):
      add(f"{ours}/feed_forward/{dense}/kernel", f"{hf}.feed_forward.{dense}.weight", f"{orig}.{orig_dense}.weight",
          "linear")
      add(f"{ours}/feed_forward/{dense}/bias", f"{hf}.feed_forward.{dense}.bias", f"{orig}.{orig_dense}.bias")

  if config.num_label_classes > 0 and config.predict_layers:
    # ILS-SSL with separate label embeddings (docs/objectives.md#ils-ssl): final_proj and post_layer_norm are
    # nn.Sequential, one entry per predicted layer; the label tables are one stacked tensor.
    for k in range(len(config.predict_layers)):
      head = f"ils_heads/{k}"
      add(f"{head}/final_proj/kernel", None, f"final_proj.{k}.weight", "linear", backbone=False)
      add(f"{head}/final_proj/bias", None, f"final_proj.{k}.bias", backbone=False)
      add(f"{head}/label_embs_concat", None, "label_embs_concat", backbone=False, stack=k)
      if config.layer_norm_first:
        for o, t in (("scale", "weight"), ("bias", "bias")):
          add(f"{head}/post_layer_norm/{o}", None, f"post_layer_norm.{k}.{t}", backbone=False)
  elif config.num_label_classes > 0:
    add("pretrain_head/final_proj/kernel", None, "final_proj.weight", "linear", backbone=False)
    add("pretrain_head/final_proj/bias", None, "final_proj.bias", backbone=False)
    add("pretrain_head/label_embs_concat", None, "label_embs_concat", backbone=False)
  if config.vocab_size > 0:
    add("ctc_head/lm_head/kernel", "lm_head.weight", "w2v_encoder.proj.weight", "linear", backbone=False)
    add("ctc_head/lm_head/bias", "lm_head.bias", "w2v_encoder.proj.bias", backbone=False)
  return rows


def _full_name(row: Row, fmt: str, prefix: str) -> str | None:
  name = row.torch_name(fmt)
  if name is None:
    return None
  return prefix + name if row.backbone else name


def expected_torch_shapes(config, fmt: str, prefix: str = "") -> dict[str, tuple[int, ...]]:
  shapes = params_lib.param_shapes(wavlm.abstract(config))
  shapes = params_lib.to_layout(shapes_as_arrays(shapes), config, scanned=False)
  rows = table(config)
  stacked = collections.Counter(_full_name(r, fmt, prefix) for r in rows if r.stack is not None)
  out = {}
  for row in rows:
    name = _full_name(row, fmt, prefix)
    if name is not None:
      shape = _TO_TORCH[row.transform](shapes[row.ours]).shape
      out[name] = (stacked[name], *shape) if row.stack is not None else shape
  return out


def shapes_as_arrays(shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
  """Zero-stride stand-in arrays with the given shapes (for computing transformed shapes cheaply)."""
  return {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


def normalize_weight_norm_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`parametrizations.weight.original0/1` -> `weight_g/weight_v` (both spellings are in the wild)."""
  out = {}
  for key, value in state.items():
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    key = key.replace(".parametrizations.weight.original1", ".weight_v")
    out[key] = value
  return out


def to_ours(state: Mapping[str, np.ndarray], config, fmt: str, prefix: str = "", *,
            source: str = "checkpoint", optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """A PyTorch state dict -> our flat parameters in the layout of `config`.

  Raises ValueError listing missing/unexpected keys and wrong shapes. Names in `optional` may be
  absent (the caller fills them).
  """
  state = normalize_weight_norm_names(state)
  expected = expected_torch_shapes(config, fmt, prefix)
  given = {k: tuple(np.shape(v)) for k, v in state.items()}
  for name in optional:
    if name not in given and name in expected:
      del expected[name]
  params_lib.check_keys_and_shapes(expected, given, f"tensors of {source}")
  flat = {}
  for row in table(config):
    name = _full_name(row, fmt, prefix)
    if name in state:
      value = np.asarray(state[name], np.float32)
      flat[row.ours] = np.asarray(_TO_OURS[row.transform](value if row.stack is None else value[row.stack]))
  return params_lib.to_layout(flat, config)


def to_torch(flat: Mapping[str, np.ndarray], config, fmt: str, prefix: str = "", *,
             weight_norm: str = "legacy") -> dict[str, np.ndarray]:
  """Our flat parameters (either layout) -> a PyTorch-format state dict of NumPy arrays.

  weight_norm: "legacy" writes weight_g/weight_v, "parametrizations" writes
  parametrizations.weight.original0/original1.
  """
  flat = params_lib.to_layout(flat, config, scanned=False)
  out, stacks = {}, {}
  for row in table(config):
    name = _full_name(row, fmt, prefix)
    if name is None:
      continue
    if weight_norm == "parametrizations":
      name = name.replace(".weight_g", ".parametrizations.weight.original0")
      name = name.replace(".weight_v", ".parametrizations.weight.original1")
    value = np.ascontiguousarray(_TO_TORCH[row.transform](np.asarray(flat[row.ours], np.float32)))
    if row.stack is None:
      out[name] = value
    else:
      stacks.setdefault(name, {})[row.stack] = value
  for name, parts in stacks.items():
    out[name] = np.stack([parts[k] for k in sorted(parts)])
  return out
