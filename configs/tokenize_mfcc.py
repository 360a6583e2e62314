"""Iteration-1 targets: k-means of 39-d MFCC at 100 Hz (HuBERT: k = 100, fitted on 10 % of the data).

  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py
  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py:small --config.k=100

Healthy on espeak_speech/tiny (k=100): PNMI ~0.6 on validation against the eSpeak phone alignment (the
formant-synthesised audio is much simpler than real speech, where MFCC km100 gives ~0.25), far above
random clusters (~0.1 on this little data), and no degenerate-dictionary warning.
"""

import ml_collections

from configs import common


def get_config(arg: str = "tiny"):
  c = ml_collections.ConfigDict()
  c.dataset = f"espeak_speech/{arg}"
  c.data_dir = ""
  c.prepare = True
  c.audio_key = "audio"
  c.id_key = "id"
  c.workdir = f"runs/tokenizer/{arg}_mfcc_km100"
  c.feature = "mfcc"  # "mfcc" (100 Hz) or "hidden" (50 Hz)
  c.checkpoint = ""  # model directory for hidden features
  c.layer = 6  # 1-based layer for hidden features (un-normalised output)
  c.k = 100
  c.fit_split = "train"
  c.fit_fraction = 1.0 if arg == "tiny" else 0.1
  c.assign_splits = ("train", "validation")
  c.report_split = "validation"
  c.seed = 0
  c.n_init = 3
  c.max_iter = 100
  c.streaming = False  # Lloyd over a re-read stream instead of an in-memory sample
  c.batch_size = 8
  c.distributed = common.distributed_config()  # multi-host: as the trainer (JAX_COORDINATOR_ADDRESS, SLURM)
  return c
