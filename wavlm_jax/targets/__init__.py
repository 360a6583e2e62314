"""Offline targets: acoustic and hidden-unit features, sharded k-means, label stores and target-quality
reports. Command line: `python -m wavlm_jax.targets.tokenize`."""
