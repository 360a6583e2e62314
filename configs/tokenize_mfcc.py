"""Iteration-1 targets: k-means of 39-d MFCC at 100 Hz (HuBERT: k = 100, fitted on 10 % of the data).

The arg names a preset: an embedded eSpeak corpus (tiny, small, base: `espeak_speech/<arg>`, built on
first use) or LibriSpeech (ls960: the folder dataset `librispeech_dir/ls960`, which configs/hubert_base.py
trains on; prepare it first with `python -m wavlm_jax.data.prepare librispeech_dir .../LibriSpeech
--name ls960`). Any other dataset: `--config.dataset=audio_dir/NAME` and so on.

  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py
  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py:small --config.k=100
  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_mfcc.py:ls960

Healthy on espeak_speech/tiny (k=100): PNMI ~0.6 on validation against the eSpeak phone alignment (the
formant-synthesised audio is much simpler than real speech, where MFCC km100 gives ~0.25), far above
random clusters (~0.1 on this little data), and no degenerate-dictionary warning. A dataset without a
phone alignment (LibriSpeech folders, any audio folder) gets the code-distribution part of the report
only (histogram entropy near log2(k), few unused clusters). A folder dataset has only a "train" split
unless prepared with a validation fraction: the missing validation split is skipped and the report falls
back to train.
"""

import ml_collections

from configs import common

ESPEAK = ("tiny", "small", "base")  # configs of the embedded corpus, espeak_speech/<name>
LIBRISPEECH = {"ls960": "librispeech_dir/ls960"}  # preset -> prepared LibriSpeech-layout folder dataset
PRESETS = (*ESPEAK, *LIBRISPEECH)


def dataset_of(arg: str) -> str:
  """The dataset of a preset name; an unknown one is an error naming the known ones."""
  if arg in ESPEAK:
    return f"espeak_speech/{arg}"
  if arg in LIBRISPEECH:
    return LIBRISPEECH[arg]
  raise ValueError(f"unknown tokenizer preset {arg!r}; known: {list(PRESETS)}")


def get_config(arg: str = "tiny"):
  """The MFCC tokenizer config of a preset (see the module docstring)."""
  c = ml_collections.ConfigDict()
  c.dataset = dataset_of(arg)
  # Or a mixture of corpora, as data.mixture (the trainer copies a recipe's): k-means is fitted on a sample
  # drawn from every component by its weight, and each component is labelled into labels/<component name>/.
  c.mixture = ()
  c.data_dir = ""  # "" = $WAVLM_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (data/paths.py)
  c.prepare = True  # build the embedded corpus if absent (folder datasets are prepared beforehand)
  c.audio_key = "audio"
  c.id_key = "id"
  c.workdir = f"runs/tokenizer/{arg}_mfcc_km100"
  c.feature = "mfcc"  # "mfcc" (100 Hz), "hidden" (50 Hz; tokenize_hidden/_ctc) or "pbert" (tokenize_pbert)
  c.checkpoint = ""  # model directory for hidden features
  c.layer = 6  # 1-based layer for hidden features (un-normalised output)
  c.k = 100
  c.fit_split = "train"  # must exist
  c.fit_fraction = 1.0 if arg == "tiny" else 0.1
  c.assign_splits = ("train", "validation")  # those the dataset lacks are skipped
  c.report_split = "validation"  # else the first assign split the dataset has
  c.seed = 0
  c.n_init = 3
  c.max_iter = 100
  c.streaming = False  # Lloyd over a re-read stream instead of an in-memory sample
  c.batch_size = 8
  c.distributed = common.distributed_config()  # multi-host: as the trainer (JAX_COORDINATOR_ADDRESS, SLURM)
  return c
