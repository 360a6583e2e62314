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
# # Quickstart: inside a pretrained WavLM
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/wavlm-jax/wavlm_jax/blob/main/notebooks/01_quickstart.ipynb)
#
# Load a model directory (the main job's, or any transformers, unilm or fairseq checkpoint converted on
# the spot), run it on a recording, listen to the recording, and look inside: the hidden state of every
# layer, the attention maps of chosen heads, WavLM's gated relative position bias (the bucketed bias D
# and the gate each head computes per frame), and the masked-prediction logits over units.
#
# - `WAVLM_MODEL`: a wavlm_jax model directory (default: the main job's `runs/tiny/model`,
#   else notebook 4's `runs/notebook_pretraining/run/model`);
# - `WAVLM_CHECKPOINT` (and `WAVLM_CHECKPOINT_FORMAT`: `hf` (default), `unilm` or `fairseq`): a checkpoint
#   to convert first, e.g. a `microsoft/wavlm-base-plus` folder or `WavLM-Base+.pt` you uploaded;
# - `WAVLM_AUDIO`: a recording (WAV, FLAC, ...; any rate and channel count); default: a sentence spoken
#   by eSpeak NG, with its true phone timings.
#
# With `WAVLM_NOTEBOOK_SMOKE=1` (what CI sets) the model is a random tiny one: its maps are then
# patternless. A pretrained model's lower layers attend to neighbouring frames (a diagonal band) and its
# upper layers more widely.

# %% tags=["skip-execution"]
# Colab only: install the project (set the repository you cloned from).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  repo = os.environ.get("WAVLM_JAX_REPO", "")  # e.g. https://github.com/<you>/wavlm_jax
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"wavlm_jax @ git+{repo}"], check=True)

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

SMOKE = os.environ.get("WAVLM_NOTEBOOK_SMOKE") == "1"
WORK = Path(tempfile.mkdtemp(prefix="quickstart-")) if SMOKE else Path("runs/notebook_quickstart")
WORK.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A model directory
# A converted checkpoint, the main job's model, or (smoke mode) a random tiny model with a pre-training
# head. The same conversion runs from a shell:
# `python -m wavlm_jax.convert --from hf --src DIR --dst runs/converted`.

# %%
from wavlm_jax.convert.__main__ import main as convert
from wavlm_jax.models import config as config_lib, directory, params, wavlm

# default: the main job's model, else notebook 4's
DEFAULTS = [Path("runs/tiny/model"), Path("runs/notebook_pretraining/run/model")]
MODEL = Path(os.environ.get("WAVLM_MODEL") or next((p for p in DEFAULTS if p.is_dir()), DEFAULTS[0]))
CHECKPOINT = os.environ.get("WAVLM_CHECKPOINT")
if CHECKPOINT:
  MODEL = WORK / "converted"
  fmt = os.environ.get("WAVLM_CHECKPOINT_FORMAT", "hf")
  assert convert(["--from", fmt, "--src", CHECKPOINT, "--dst", str(MODEL), "--overwrite"]) == 0
elif SMOKE:
  cfg = config_lib.model_card("tiny")
  MODEL = directory.save_model(WORK / "model", params.get_params(wavlm.build(cfg, seed=0)), cfg)
if not (MODEL / "config.json").is_file():
  raise FileNotFoundError(f"{MODEL}: no model directory; run the main job first, or set WAVLM_MODEL or "
                          "WAVLM_CHECKPOINT")
model = directory.load_model(MODEL)
config = model.config
print(f"{MODEL}: {config.num_layers} layers x {config.num_heads} heads, width {config.embed_dim}, "
      f"relative position bias {config.relative_position!r}, units {config.num_label_classes}")

# %% [markdown]
# ## A recording
# Read at 16 kHz mono whatever its rate and channel count (`wavlm_jax.data.audio_io.read_audio`, as the
# folder datasets do), or spoken by eSpeak NG, which also tells when each phone starts.

# %%
from IPython.display import Audio, display

from wavlm_jax import audio
from wavlm_jax.data import audio_io, espeak

phones = None
if os.environ.get("WAVLM_AUDIO"):
  pcm = audio_io.read_audio(os.environ["WAVLM_AUDIO"])
else:
  utterance = espeak.Espeak().synthesize("The quick brown fox jumps over the lazy dog.", "en-us+m3")
  pcm, phones = utterance.audio, utterance.phones
wave = audio.to_float(pcm)
print(f"{len(wave) / audio.SAMPLE_RATE:.2f} s")
display(Audio(wave, rate=audio.SAMPLE_RATE))

# %% [markdown]
# ## Everything the model computes on it
# `look_inside` runs the model once (jitted, no dropout) and returns every hidden state, the attention
# probabilities of the chosen layers (per head), the gates and D, and the unit logits.

# %%
from wavlm_jax.analysis.inside import look_inside

L = config.num_layers
LAYERS = sorted({1, max(1, L // 2), L})
inside = look_inside(model, wave[None], layers=LAYERS)
frames = inside.hidden_states[0].shape[1]
fps = audio.frame_rate(config.conv_stride)
print(f"{frames} frames at {fps:g} Hz, {len(inside.hidden_states)} hidden states of width "
      f"{inside.hidden_states[0].shape[-1]}")

# %% [markdown]
# The hidden states are transformers' `output_hidden_states`: exported with `convert --to hf` and run by
# transformers (where it is installed), they agree to fp32 rounding.

# %%
try:
  import torch
  import transformers
except ImportError:
  transformers = None
if transformers is not None:
  HF = WORK / "hf"
  assert convert(["--to", "hf", "--src", str(MODEL), "--dst", str(HF), "--overwrite"]) == 0
  reference = transformers.AutoModel.from_pretrained(HF).eval()
  x = audio.normalize_waveform(wave[None]) if config.normalize_waveform else wave[None]
  with torch.no_grad():
    theirs = reference(torch.from_numpy(np.asarray(x, np.float32)), output_hidden_states=True).hidden_states
  # transformers >= 5 leaves the last entry un-normalised for pre-LN models: compare the others
  err = max(np.abs(ours - t.numpy()).max() / np.abs(t.numpy()).max()
            for ours, t in zip(inside.hidden_states[:-1], theirs[:-1]))
  print(f"largest relative difference from transformers over {len(theirs) - 1} hidden states: {err:.1e}")
  assert err < 1e-3

# %% [markdown]
# ## The recording and the size of each layer's features
# The waveform with the phones eSpeak spoke beneath it, and the mean L2 norm of each hidden state's frames
# (pre-LN models such as WavLM Large grow along the residual stream; post-LN ones stay near
# sqrt(width)).

# %%
fig, (ax_wave, ax_norm) = plt.subplots(1, 2, figsize=(12, 3), gridspec_kw={"width_ratios": [3, 1]})
t = np.arange(len(wave)) / audio.SAMPLE_RATE
ax_wave.plot(t, wave, lw=0.4)
for start, phone in phones or []:
  ax_wave.axvline(start, color="grey", lw=0.3)
  ax_wave.text(start, ax_wave.get_ylim()[0], phone, fontsize=7, va="bottom")
ax_wave.set_xlabel("seconds")
ax_norm.plot(range(L + 1), inside.feature_norms()[:, 0], marker="o")
ax_norm.set_xlabel("hidden state")
ax_norm.set_ylabel("mean frame L2 norm")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Attention maps
# Rows are query frames, columns the frames they attend to, for the first heads of the chosen layers.

# %%
HEADS = list(range(min(4, config.num_heads)))
fig, axes = plt.subplots(len(LAYERS), len(HEADS), figsize=(3 * len(HEADS), 3 * len(LAYERS)), squeeze=False)
for row, layer in zip(axes, LAYERS):
  for ax, head in zip(row, HEADS):
    ax.imshow(inside.attention[layer][0, head], origin="lower", cmap="viridis", aspect="auto")
    ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The gated relative position bias
# WavLM adds `gate[h, q] * D[h, q, k]` to head h's logits: D is a learned value per bucket of the
# offset k - q (exact buckets near zero, log-spaced further out), the same in every layer; the gate, between
# 1 and max(2, 1 + c_h) for the learned c_h (1 at initialisation), is computed by each layer from its query
# frame's input. Left: D of each head against the offset, for the middle query frame. Right: the gate of
# each head of the top layer over time: where it rises, that head leans on relative position more. HuBERT
# has neither.

# %%
if inside.position_bias is None:
  print("this model has no relative position bias (HuBERT)")
else:
  q = frames // 2
  offsets = np.arange(frames) - q
  fig, (ax_d, ax_g) = plt.subplots(1, 2, figsize=(12, 3))
  for head in HEADS:
    ax_d.plot(offsets, inside.position_bias[head, q], label=f"head {head}")
  ax_d.set_xlabel("key frame - query frame")
  ax_d.set_ylabel("D")
  ax_d.legend(fontsize=7)
  if inside.gates:
    top = LAYERS[-1]
    seconds = np.arange(frames) / fps
    for head in HEADS:
      ax_g.plot(seconds, inside.gates[top][0, head], label=f"head {head}")
    ax_g.set_xlabel("query frame (seconds)")
    ax_g.set_ylabel(f"gate, layer {top}")
    ax_g.legend(fontsize=7)
  plt.tight_layout()
  plt.show()

# %% [markdown]
# ## Masked prediction over units
# Pre-training replaces spans of frames by a learned mask embedding and asks the model for the unit of
# each masked frame. Here a span in the middle is masked (as the trainer does) and the model's posterior
# over units is shown for every frame; the dashed lines bound the masked span. A trained model keeps
# predicting plausible units inside it; the printed figure is how often the masked frames' top unit is
# the one the model predicts when it hears them.

# %%
if not inside.unit_logits:
  print("this model has no pre-training head (converted transformers/unilm checkpoints have none)")
else:
  span = slice(frames // 2 - 5, frames // 2 + 5)
  mask = np.zeros((1, frames), bool)
  mask[0, span] = True
  masked = look_inside(model, wave[None], layers=(), mask_time=mask)
  for head, logits in masked.unit_logits.items():
    posterior = np.exp(logits[0] - logits[0].max(-1, keepdims=True))
    posterior /= posterior.sum(-1, keepdims=True)
    heard = inside.unit_logits[head][0].argmax(-1)
    agree = float(np.mean(logits[0, span].argmax(-1) == heard[span]))
    print(f"head {head}: masked frames whose top unit matches the unmasked prediction: {agree:.0%}")
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.imshow(posterior.T, origin="lower", aspect="auto", cmap="magma")
    for edge in (span.start, span.stop):
      ax.axvline(edge - 0.5, color="white", ls="--")
    ax.set_xlabel("frame")
    ax.set_ylabel("unit")
    ax.set_title(f"unit posterior, head {head!r}")
    plt.show()
