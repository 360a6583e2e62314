"""SUPERB-style probing of frozen models: cached hidden states of every layer (`features`), the learned
weighted sum of layers (`featurizer`), task heads (`heads`), the tasks with their data, losses, metrics
(DER for diarization) and training loop (`tasks`), and figures (`plots`). Command line:
`python -m wavlm_jax.probe`; layer-wise analysis: `python -m wavlm_jax.analysis.layerwise`."""
