"""Lossless conversion between wavlm_jax model directories and PyTorch formats
(transformers, unilm WavLM, fairseq HuBERT). Command line: `python -m wavlm_jax.convert`."""

from wavlm_jax.convert.formats import ConversionError, read_fairseq, read_hf, read_unilm, write_hf, write_unilm
from wavlm_jax.convert.torch_io import UnsafeCheckpointError

__all__ = ["ConversionError", "UnsafeCheckpointError", "read_fairseq", "read_hf", "read_unilm", "write_hf",
           "write_unilm"]
