"""Model configuration: one locked ConfigDict with every architectural switch, and the model cards.

Field names follow the fairseq/unilm vocabulary where one exists (docs/model.md#model-cards); the converters translate
to and from transformers' names. A config is locked, so a typo in an override is an error.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import ml_collections

# The 7-block waveform frontend shared by every released model (docs/model.md#layer-spec).
CONV_DIM = (512,) * 7
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)

EXTRACTOR_MODES = ("default", "layer_norm")
RELATIVE_POSITION = ("none", "bucket", "gated")
REMAT_POLICIES = ("none", "dots", "full")
ATTENTION_IMPLS = ("auto", "xla", "chunked", "pallas")


def model_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Returns a locked model config: WavLM Base defaults with `overrides` applied."""
  c = ml_collections.ConfigDict()
  # Waveform frontend.
  c.extractor_mode = "default"  # "default": GroupNorm on block 0 only; "layer_norm": LN in every block.
  c.conv_dim = CONV_DIM
  c.conv_kernel = CONV_KERNEL
  c.conv_stride = CONV_STRIDE
  c.conv_bias = False
  c.feature_grad_mult = 0.1  # Backward scale into the CNN; 0 freezes it (fine-tuning).
  c.normalize_waveform = False  # Per-utterance zero-mean unit-variance input (Large models).
  # Transformer.
  c.embed_dim = 768
  c.ffn_dim = 3072
  c.num_heads = 12
  c.num_layers = 12
  c.layer_norm_first = False  # False: post-LN (Base); True: pre-LN (Large).
  c.layer_norm_eps = 1e-5
  c.conv_pos = 128
  c.conv_pos_groups = 16
  c.conv_pos_impl = "auto"  # "conv" (XLA grouped conv), "matmul" (per-group matmul over taps; ~6x faster
  # on CPU), "auto" (matmul for CPU devices, conv for TPU/GPU: `for_platform` resolves it for the devices a
  # step is built for, also ahead of time; unresolved, for this host's backend)
  c.attention_impl = "auto"  # "xla" (logits and probabilities in memory), "chunked" (query blocks under
  # lax.map, recomputed backward), "pallas" (fused flash-attention kernels with the gated bias; interpreted
  # on CPU), "auto" (pallas on GPU/TPU, xla on CPU; resolved like conv_pos_impl)
  c.attention_block = 0  # query/key tile (frames) of the chunked and pallas paths; 0: per platform (128 on
  # TPU, whose lanes are 128 wide; 64 on GPU, where 128-frame tiles spill registers: bench/triton_kernels.py).
  # Model directories written before this default existed store 128: set 0 to get the platform's.
  c.relative_position = "gated"  # "none" (HuBERT), "bucket" (ILS-SSL), "gated" (WavLM).
  c.num_buckets = 320
  c.max_distance = 800
  # Regularisation (pre-training values of the Base models, docs/objectives.md#hyper-parameters).
  c.dropout = 0.1
  c.attention_dropout = 0.1
  c.activation_dropout = 0.0
  c.dropout_input = 0.1
  c.layerdrop = 0.05
  # Span masking (docs/model.md#masking).
  c.mask_prob = 0.8
  c.mask_length = 10
  c.mask_min_masks = 2
  c.mask_channel_prob = 0.0
  c.mask_channel_length = 10
  # Heads. num_label_classes = 0: no pre-training head; vocab_size = 0: no CTC head.
  c.num_label_classes = 0  # k-means clusters C; the label table has C + 4 rows (fairseq specials).
  c.final_dim = 256
  c.logit_temp = 0.1
  c.predict_layers = ()  # ILS-SSL: 1-based layers with their own heads; () = one head on the top.
  c.vocab_size = 0
  c.final_dropout = 0.0
  # Execution.
  c.scan_layers = True  # Stacked layer parameters under jax.lax.scan (False: a Python loop).
  c.remat = "none"  # "none" | "dots" | "full" rematerialisation of each layer ("full": and of the conv frontend).
  c.dtype = "float32"  # Compute dtype of matmuls and convolutions; parameters stay fp32.
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"unknown model config field {key!r}")
    c[key] = tuple(value) if isinstance(value, list) else value
  validate(c)
  c.lock()
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when a config cannot describe a model."""
  def bad(field, why):
    raise ValueError(f"model config field {field!r}: {why} (got {c[field]!r})")
  if c.extractor_mode not in EXTRACTOR_MODES:
    bad("extractor_mode", f"must be one of {EXTRACTOR_MODES}")
  if c.relative_position not in RELATIVE_POSITION:
    bad("relative_position", f"must be one of {RELATIVE_POSITION}")
  if c.conv_pos_impl not in ("auto", "conv", "matmul"):
    bad("conv_pos_impl", "must be auto, conv or matmul")
  if c.attention_impl not in ATTENTION_IMPLS:
    bad("attention_impl", f"must be one of {ATTENTION_IMPLS}")
  if c.attention_block and (c.attention_block < 8 or c.attention_block & (c.attention_block - 1)):
    bad("attention_block", "must be 0 (per platform) or a power of two, at least 8")
  if c.remat not in REMAT_POLICIES:
    bad("remat", f"must be one of {REMAT_POLICIES}")
  if not len(c.conv_dim) == len(c.conv_kernel) == len(c.conv_stride):
    bad("conv_dim", "conv_dim, conv_kernel and conv_stride must have the same length")
  if c.embed_dim % c.num_heads:
    bad("num_heads", f"must divide embed_dim={c.embed_dim}")
  if c.embed_dim % c.conv_pos_groups:
    bad("conv_pos_groups", f"must divide embed_dim={c.embed_dim}")
  for layer in c.predict_layers:
    if not 1 <= layer <= c.num_layers:
      bad("predict_layers", f"layers are 1-based and at most num_layers={c.num_layers}")
  if c.predict_layers and c.num_label_classes <= 0:
    bad("predict_layers", "ILS heads need num_label_classes > 0")
  if c.dtype not in ("float32", "bfloat16", "float16"):
    bad("dtype", "must be float32, bfloat16 or float16")


def conv_pos_impl_for(platform: str) -> str:
  """The positional convolution's form for a platform: XLA:CPU runs grouped convolutions far below its
  matmul speed, TPUs and GPUs run them natively."""
  return "matmul" if platform == "cpu" else "conv"


def attention_impl_for(platform: str) -> str:
  """Attention's form for a platform: the fused Pallas kernels on GPU and TPU; on CPU the XLA path
  (bench/attention.py: the chunked path is no faster there, and interpreted kernels are for tests)."""
  return "xla" if platform == "cpu" else "pallas"


def attention_block_for(platform: str) -> int:
  """The attention tile for a platform: TPU kernels put key blocks on the 128-wide lane axis; on GPU (sm_90)
  ptxas spills registers in every kernel at 128 frames with 4 warps (and in three of four with 8), and in
  none at 64 with the warps the kernels use (bench/triton_kernels.py)."""
  return 64 if platform == "gpu" else 128


def for_platform(c: ml_collections.ConfigDict, platform: str) -> ml_collections.ConfigDict:
  """The config with its platform-dependent choices ("auto", attention_block 0) resolved for `platform`:
  that of the devices a step is built for, which for an ahead-of-time TPU compile on a CPU host is "tpu",
  not the host's."""
  if c.conv_pos_impl != "auto" and c.attention_impl != "auto" and c.attention_block:
    return c
  out = c.copy_and_resolve_references()
  with out.unlocked():
    if out.conv_pos_impl == "auto":
      out.conv_pos_impl = conv_pos_impl_for(platform)
    if out.attention_impl == "auto":
      out.attention_impl = attention_impl_for(platform)
    if not out.attention_block:
      out.attention_block = attention_block_for(platform)
  return out


def head_dim(c) -> int:
  return c.embed_dim // c.num_heads


def conv_output_length(num_samples, c):
  """Frames produced from `num_samples` samples (ints or integer arrays), per the conv stack."""
  length = num_samples
  for kernel, stride in zip(c.conv_kernel, c.conv_stride):
    length = (length - kernel) // stride + 1
  return length


# ----------------------------------------------------------------------------------------------
# Model cards (docs/model.md#model-cards). Encoder-only parameter counts are asserted in tests/test_config.py.
# ----------------------------------------------------------------------------------------------
_LARGE = dict(embed_dim=1024, ffn_dim=4096, num_heads=16, num_layers=24, extractor_mode="layer_norm",
              layer_norm_first=True, normalize_waveform=True, final_dim=768, feature_grad_mult=1.0,
              dropout=0.0, attention_dropout=0.0, dropout_input=0.0, layerdrop=0.0)

CARDS: dict[str, dict[str, Any]] = {
    "wavlm_base": dict(num_label_classes=500),
    "wavlm_base_plus": dict(num_label_classes=500),
    "wavlm_large": dict(_LARGE, num_label_classes=500),
    "hubert_base": dict(relative_position="none", num_label_classes=500),
    "hubert_large": dict(_LARGE, relative_position="none", num_label_classes=500),
    # Small enough for CPU tests and the embedded-corpus job; same structure as Base.
    "tiny": dict(conv_dim=(64,) * 7, embed_dim=64, ffn_dim=128, num_heads=4, num_layers=2, conv_pos=16,
                 conv_pos_groups=4, num_buckets=32, max_distance=64, num_label_classes=50, final_dim=32),
}


def model_card(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """The model config of a named card (`wavlm_base`, `wavlm_large`, `hubert_base`, `tiny`, ...)."""
  if name not in CARDS:
    raise KeyError(f"unknown model card {name!r}; known: {sorted(CARDS)}")
  return model_config(**{**CARDS[name], **overrides})


def to_json(c: ml_collections.ConfigDict) -> str:
  return json.dumps(c.to_dict(), indent=2, sort_keys=True)


def from_mapping(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config from a plain mapping (e.g. a checkpoint's config.json); unknown keys are an error."""
  return model_config(**dict(d))
