"""Notebooks run under pytest (nbmake) in smoke mode: the tiny model, a few utterances, a few steps, in
their own temporary directories, on CPU with 8 fake devices like the tests. The embedded corpus is built
once into a temporary data dir that every notebook of the session shares (WAVLM_NOTEBOOK_DATA_DIR)."""

import os
import tempfile

os.environ.setdefault("WAVLM_NOTEBOOK_SMOKE", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WAVLM_NOTEBOOK_DATA_DIR", tempfile.mkdtemp(prefix="notebook-data-"))
