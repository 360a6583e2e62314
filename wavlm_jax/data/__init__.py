"""Data: the embedded eSpeak corpus and folder builders (TFDS, ArrayRecord), the Grain pipeline with
length buckets and WavLM's utterance and noise mixing, and label stores.

`data_config` is cheap to import; the pipeline (Grain, TFDS) loads on first use of its names."""

from wavlm_jax.data.config import data_config

__all__ = ["HostIterator", "create_iterator", "data_config", "to_global"]

_PIPELINE = ("HostIterator", "create_iterator", "to_global", "pipeline")


def __getattr__(name):
  if name in _PIPELINE:
    import importlib

    pipeline = importlib.import_module("wavlm_jax.data.pipeline")
    return pipeline if name == "pipeline" else getattr(pipeline, name)
  raise AttributeError(f"module 'wavlm_jax.data' has no attribute {name!r}")
