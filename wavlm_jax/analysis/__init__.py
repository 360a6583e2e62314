"""Analyses of frozen models built on the probing modules. Command line:
`python -m wavlm_jax.analysis.layerwise` (per-layer phone and speaker probes, phone PNMI)."""
