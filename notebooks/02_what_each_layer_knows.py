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
# # What each layer knows
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/wavlm-jax/wavlm_jax/blob/main/notebooks/02_what_each_layer_knows.ipynb)
#
# WavLM and HuBERT papers report that lower layers carry more speaker information and upper layers more
# content. This notebook measures that on a model you trained: a linear phone probe (frame level) and a
# linear speaker probe (utterance mean) on every hidden state, the phone PNMI of per-layer k-means, and
# the layer weights SUPERB's featurizer learns for phoneme recognition and speaker identification. It
# calls the same code as `python -m wavlm_jax.analysis.layerwise` and `python -m wavlm_jax.probe`.
#
# Set `WAVLM_MODEL` to a model directory (default: the main job's `runs/tiny/model`,
# else notebook 4's `runs/notebook_pretraining/run/model`). With
# `WAVLM_NOTEBOOK_SMOKE=1` (what CI sets) it uses a random tiny model, the tiny corpus and a few steps:
# its figures are then noise, and the full-size run's are in the README ("Probing and layer-wise
# analysis").

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
WORK = Path(tempfile.mkdtemp(prefix="layers-")) if SMOKE else Path("runs/notebook_layers")
if SMOKE:  # never touch the user's data dir in a smoke run
  os.environ["WAVLM_DATA_DIR"] = os.environ.get("WAVLM_NOTEBOOK_DATA_DIR") or str(WORK / "data")
DATASET = "espeak_speech/tiny" if SMOKE else "espeak_speech/small"
STEPS = 30 if SMOKE else 1000

# %% [markdown]
# The model: the main job's (`python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny`),
# any model directory (`WAVLM_MODEL`), or, in smoke mode, a random tiny one.

# %%
from wavlm_jax.models import config as config_lib, directory, params, wavlm

# default: the main job's model, else notebook 4's
DEFAULTS = [Path("runs/tiny/model"), Path("runs/notebook_pretraining/run/model")]
MODEL = Path(os.environ.get("WAVLM_MODEL") or next((p for p in DEFAULTS if p.is_dir()), DEFAULTS[0]))
if SMOKE:
  cfg = config_lib.model_card("tiny", num_layers=2)
  MODEL = directory.save_model(WORK / "model", params.get_params(wavlm.build(cfg, seed=0)), cfg)
if not (MODEL / "config.json").is_file():
  raise FileNotFoundError(f"{MODEL}: no model directory; run the main job first or set WAVLM_MODEL")
print(MODEL, directory.load_config(MODEL).num_layers, "layers")

# %% [markdown]
# ## Probes per layer
# Hidden states of every layer are extracted once into `WORK/features` and reused by every probe below.

# %%
from wavlm_jax.analysis import layerwise

args = ["--model", str(MODEL), "--dataset", DATASET, "--workdir", str(WORK), "--steps", str(STEPS), "--pnmi",
        "--clusters", "20" if SMOKE else "50"]
assert layerwise.main(args) == 0
result = json.loads((WORK / "layerwise.json").read_text())

# %% [markdown]
# Phone accuracy rising with depth and speaker accuracy falling is the papers' finding; a model
# pretrained for only a few minutes may show neither.

# %%
states = [e["hidden_state"] for e in result["hidden_states"]]
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in ("phone_accuracy", "speaker_accuracy", "phone_PNMI"):
  if name in result["hidden_states"][0]:
    ax.plot(states, [e[name] for e in result["hidden_states"]], marker="o", label=name.replace("_", " "))
for name, value in result["chance"].items():
  ax.axhline(value, ls=":", lw=1, color="grey")
ax.set_xlabel("hidden state (0 = input of layer 1)")
ax.set_xticks(states)
ax.set_ylim(0, 1)
ax.legend()
ax.set_title(f"{MODEL.parent.name}/{MODEL.name} on {DATASET}")
plt.show()

# %% [markdown]
# ## Which layers SUPERB's featurizer picks
# The softmax layer weights learned by the phoneme-recognition (PR) and speaker-identification (SID)
# probes: a task that needs content should lean on upper layers, speaker identity on lower ones.

# %%
from wavlm_jax import probe

assert probe.main(["--task", "pr,sid", "--model", str(MODEL), "--dataset", DATASET, "--workdir", str(WORK),
                   "--steps", str(STEPS), "--lr", "1e-3"]) == 0
probes = json.loads((WORK / "results.json").read_text())

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
width = 0.8 / len(probes)
for i, (task, r) in enumerate(probes.items()):
  w = np.asarray(r["layer_weights"])
  ax.bar(np.arange(len(w)) + i * width, w, width, label=f"{task} ({r['metric']} {r['test'][r['metric']]:.2f})")
ax.set_xlabel("hidden state")
ax.set_ylabel("softmax weight")
ax.legend()
plt.show()
