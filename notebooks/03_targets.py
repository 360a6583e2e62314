# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Targets: what the units of each codebook are
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/wavlm-jax/wavlm_jax/blob/main/notebooks/03_targets.ipynb)
#
# Masked prediction learns whatever its targets encode. This notebook makes four codebooks for the same
# corpus with the tokenizer (`python -m wavlm_jax.targets.tokenize`): k-means of MFCC (HuBERT's first
# iteration), k-means of a pretrained model's hidden layer (its second iteration), and the two
# supervision-guided codebooks of Wang et al. 2022, k-means of a CTC phoneme recognizer's hidden layer
# (CTC clustering) and the recognizer's own aligned phonemes (PBERT). It shows their units on one
# recording above the true phones, PNMI and purities against the corpus' phone alignment side by side,
# and the phone × unit co-occurrence of each.
#
# - `WAVLM_MODEL`: the pretrained model for hidden units (default: the main job's `runs/tiny/model`);
# - `WAVLM_PHONE_MODEL`: a phoneme recognizer fine-tuned with CTC (default `runs/ft_tiny_phonemes/best`:
#   `python -m wavlm_jax.finetune --config configs/finetune/tiny.py:phonemes --workdir runs/ft_tiny_phonemes --config.init_from=runs/tiny/model`);
# - `WAVLM_TOKENIZER_PRESET`: the corpus preset of `configs/tokenize_mfcc.py` (default `tiny`).
#
# With `WAVLM_NOTEBOOK_SMOKE=1` (what CI sets) both models are random tiny ones in a temporary
# directory: their hidden units and phonemes are then noise and only the MFCC codebook means anything.
# The full run (the main job's model after 1,000 steps; the phoneme recognizer of
# `configs/tokenize_pbert.py`, fine-tuned from it on `espeak_speech/small` train, which shares no sentence
# with the split scored here; `espeak_speech/tiny` validation, 10 utterances; k = 50) measured:
#
# | codebook | PNMI | phone purity | cluster purity |
# |---|---|---|---|
# | MFCC k-means | 0.518 | 0.472 | 0.433 |
# | hidden units (layer 1) | 0.429 | 0.322 | 0.267 |
# | CTC clustering (layer 2) | 0.465 | 0.381 | 0.335 |
# | PBERT phonemes (43 used) | 0.482 | 0.459 | 0.513 |
#
# On this formant-synthesised corpus MFCC k-means is unusually good (real speech: PNMI ~0.25) and a
# 2-layer model pretrained for minutes is weak, so the papers' ordering (supervised > hidden > MFCC)
# is only partly reproduced: PBERT's units are the most phone-like (cluster purity, the diagonal below),
# CTC clustering beats the hidden units, MFCC keeps the highest PNMI.

# %% tags=["skip-execution"]
# Colab only: install the project (set the repository you cloned from).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  repo = os.environ.get("WAVLM_JAX_REPO", "")  # e.g. https://github.com/<you>/wavlm_jax
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"wavlm_jax @ git+{repo}"], check=True)

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

SMOKE = os.environ.get("WAVLM_NOTEBOOK_SMOKE") == "1"
WORK = Path(tempfile.mkdtemp(prefix="targets-")) if SMOKE else Path("runs/notebook_targets")
if SMOKE:  # never touch the user's data dir in a smoke run
  os.environ["WAVLM_DATA_DIR"] = os.environ.get("WAVLM_NOTEBOOK_DATA_DIR") or str(WORK / "data")
PRESET = os.environ.get("WAVLM_TOKENIZER_PRESET", "tiny")
K = 50  # one size for every k-means codebook (PBERT's size is the recognizer's phoneme inventory)

# %% [markdown]
# ## The models
# The pretrained model gives hidden units; the phoneme recognizer gives both supervised codebooks. In
# smoke mode both are random, the recognizer with the corpus' phoneme vocabulary.

# %%
import tensorflow_datasets as tfds

from configs import tokenize_mfcc
from wavlm_jax.data import builders, paths
from wavlm_jax.data.vocab import Vocabulary
from wavlm_jax.models import config as config_lib, directory, params, wavlm

DATASET = tokenize_mfcc.dataset_of(PRESET)
if DATASET.startswith("espeak_speech/"):
  builders.prepare(DATASET, paths.data_dir())
MODEL = Path(os.environ.get("WAVLM_MODEL", "runs/tiny/model"))
PHONE_MODEL = Path(os.environ.get("WAVLM_PHONE_MODEL", "runs/ft_tiny_phonemes/best"))
if SMOKE:
  cfg = config_lib.model_card("tiny")
  MODEL = directory.save_model(WORK / "model", params.get_params(wavlm.build(cfg, seed=0)), cfg)
  train = tfds.data_source(DATASET, split="train", data_dir=paths.data_dir())
  vocab = Vocabulary.build((train[i]["phonemes"].decode() for i in range(len(train))), kind="phonemes")
  cfg = config_lib.model_card("tiny", num_label_classes=0, vocab_size=len(vocab))
  PHONE_MODEL = directory.save_model(WORK / "phone_model", params.get_params(wavlm.build(cfg, seed=1)), cfg)
  vocab.save(PHONE_MODEL)
for path in (MODEL, PHONE_MODEL):
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"{path}: no model directory; see the list at the top (WAVLM_MODEL, WAVLM_PHONE_MODEL)")
layers = directory.load_config(MODEL).num_layers
phone_layers = directory.load_config(PHONE_MODEL).num_layers
print(f"{MODEL}: {layers} layers; {PHONE_MODEL}: {phone_layers} layers, "
      f"{len(Vocabulary.load(PHONE_MODEL))} CTC tokens")

# %% [markdown]
# ## Four tokenizers
# Each writes label stores for the train and validation splits and a quality report
# (`report_validation.json/.png`). The hidden units come from the middle layer (layer 6 of 12 in HuBERT's
# second iteration); CTC clustering from the recognizer's top layer, the best of its layers by PNMI on
# the embedded corpus (`configs/tokenize_ctc.py`).

# %%
from configs import tokenize_ctc, tokenize_hidden, tokenize_pbert
from wavlm_jax.targets import tokenize


def tokenizer(module, name, **fields):
  c = module.get_config(PRESET)
  c.workdir, c.n_init = str(WORK / name), 1
  if SMOKE:  # only the validation labels are looked at below (a full run also labels train, for pretraining)
    c.assign_splits = ("validation",)
  for key, value in fields.items():
    setattr(c, key, value)
  return c


CODEBOOKS = {
    "MFCC k-means": tokenizer(tokenize_mfcc, "mfcc", k=K),
    "hidden units": tokenizer(tokenize_hidden, "hidden", k=K, checkpoint=str(MODEL), layer=(layers + 1) // 2),
    "CTC clustering": tokenizer(tokenize_ctc, "ctc", k=K, checkpoint=str(PHONE_MODEL), layer=phone_layers),
    "PBERT phonemes": tokenizer(tokenize_pbert, "pbert", checkpoint=str(PHONE_MODEL)),
}
for name, cfg in CODEBOOKS.items():
  print(f"---- {name}")
  tokenize.run(cfg)
reports = {name: json.loads((Path(cfg.workdir) / "report_validation.json").read_text())
           for name, cfg in CODEBOOKS.items()}

# %% [markdown]
# ## Quality against the true phones
# PNMI: the share of the phone's entropy the units explain; phone purity: how often a unit's majority
# phone is right; cluster purity: how often a phone's majority unit is. HuBERT reports PNMI 0.25 for
# MFCC, about 0.68 for hidden units and 0.81 for supervised codebooks on LibriSpeech; this
# formant-synthesised corpus is far easier for MFCC.

# %%
rows = [(name, r["pnmi"], r["phone_purity"], r["cluster_purity"], r["clusters_used"]) for name, r in reports.items()]
print(f"{'codebook':16s} {'PNMI':>6s} {'phone pur.':>10s} {'cluster pur.':>12s} {'units used':>10s}")
for row in rows:
  print(f"{row[0]:16s} {row[1]:6.3f} {row[2]:10.3f} {row[3]:12.3f} {row[4]:10d}")

fig, ax = plt.subplots(figsize=(8, 3))
width = 0.25
for i, (metric, column) in enumerate((("PNMI", 1), ("phone purity", 2), ("cluster purity", 3))):
  ax.bar(np.arange(len(rows)) + (i - 1) * width, [r[column] for r in rows], width, label=metric)
ax.set_xticks(range(len(rows)), [r[0] for r in rows])
ax.set_ylim(0, 1)
ax.legend(fontsize=8)
ax.set_title(f"{DATASET} validation")
plt.show()

# %% [markdown]
# ## Units on one recording
# The spectrogram of a validation utterance, the true phones beneath it, and each codebook's unit
# sequence (a colour per unit, repeating every 20 units; the name of every segment of 50 ms or more). Good units change where the phones
# change and repeat for the same phone.

# %%
from wavlm_jax import audio
from wavlm_jax.data import labels as labels_lib

validation = tfds.data_source(DATASET, split="validation", data_dir=paths.data_dir())
example = validation[0]
uid = labels_lib.utterance_id(example["id"])
wave = audio.to_float(example["audio"])
seconds = len(wave) / audio.SAMPLE_RATE
inventory = reports["MFCC k-means"]["phone_names"]


def strip(ax, ids, rate, names=None):
  """One row of labels over time: a colour per label and its name at every change."""
  ids = np.asarray(ids)
  ax.imshow(ids[None] % 20, aspect="auto", cmap="tab20", interpolation="nearest", vmin=0, vmax=19,
            extent=(0, len(ids) / rate, 0, 1))
  starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
  for s, end in zip(starts, np.r_[starts[1:], len(ids)]):
    if (end - s) / rate >= 0.05:  # name the segments wide enough to read
      ax.text(s / rate, 0.5, names[ids[s]] if names else str(ids[s]), fontsize=6, va="center")
  ax.set_yticks([])
  ax.set_xlim(0, seconds)


fig, axes = plt.subplots(2 + len(CODEBOOKS), 1, figsize=(12, 1.2 * (2 + len(CODEBOOKS)) + 1.5), sharex=True,
                         gridspec_kw={"height_ratios": [4, 1] + [1] * len(CODEBOOKS)})
axes[0].specgram(wave, NFFT=400, Fs=audio.SAMPLE_RATE, noverlap=240, cmap="Greys")
axes[0].set_ylabel("Hz")
strip(axes[1], example["phone_alignment"], 100, inventory)
axes[1].set_ylabel("phones", rotation=0, ha="right")
for ax, (name, cfg) in zip(axes[2:], CODEBOOKS.items()):
  store = labels_lib.LabelStore(Path(cfg.workdir) / "labels" / "validation")
  tokens = store.provenance.get("tokens")  # PBERT labels are the recognizer's phonemes
  strip(ax, store[uid], store.label_rate, tokens)
  ax.set_ylabel(name, rotation=0, ha="right")
axes[-1].set_xlabel("seconds")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Phone × unit co-occurrence
# p(unit | phone) over the validation split (phones by frequency, units grouped by their majority
# phone): a codebook that follows the phones draws a diagonal band; many units per phone spread it.

# %%
from wavlm_jax.targets import quality

fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 5))
for ax, (name, r) in zip(axes, reports.items()):
  quality.plot_cooccurrence(ax, np.asarray(r["phone_cluster_counts"]), r["phone_names"], r["pnmi"], title=name)
plt.tight_layout()
plt.show()
