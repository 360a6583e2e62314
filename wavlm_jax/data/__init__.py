"""Data: the embedded eSpeak corpus and folder builders (TFDS, ArrayRecord), the Grain pipeline with
WavLM's utterance and noise mixing, and label stores."""

from wavlm_jax.data.pipeline import HostIterator, create_iterator, data_config, to_global
