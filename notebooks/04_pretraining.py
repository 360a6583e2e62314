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
# # Pretraining in a notebook
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/wavlm-jax/wavlm_jax/blob/main/notebooks/04_pretraining.ipynb)
#
# The main job (`configs/tiny.py`: the embedded eSpeak corpus, MFCC k-means targets, WavLM with utterance
# and noise mixing) trained for a few hundred steps on whatever backend the runtime has (CPU, a Colab
# TPU's 8 cores, a GPU), with a live loss and accuracy plot. Halfway it is interrupted as a preempted
# pod would be (SIGTERM: the trainer saves a checkpoint and stops), then the same command resumes it
# from that checkpoint. The trained model directory is what notebook 2 analyses (`WAVLM_MODEL`).
#
# The trainer runs as its own process, exactly as `python -m wavlm_jax.train` from a shell; this
# notebook only starts it, reads its `metrics.jsonl` and signals it. With `WAVLM_NOTEBOOK_SMOKE=1`
# (what CI sets) it trains 32 steps in a temporary directory: the curves then show only the first fall
# of the loss; the 400-step run reaches a masked accuracy near 0.1 (chance 0.01), and takes under three minutes
# on 2 CPU cores, corpus and labels included.

# %% tags=["skip-execution"]
# Colab only: install the project (set the repository you cloned from); on a TPU runtime use
# "wavlm_jax[tpu]".
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  repo = os.environ.get("WAVLM_JAX_REPO", "")  # e.g. https://github.com/<you>/wavlm_jax
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"wavlm_jax @ git+{repo}"], check=True)

# %%
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

import configs
from configs import tiny

SMOKE = os.environ.get("WAVLM_NOTEBOOK_SMOKE") == "1"
WORK = Path(tempfile.mkdtemp(prefix="pretraining-")) if SMOKE else Path("runs/notebook_pretraining").resolve()
RUN = WORK / "run"
STEPS, INTERRUPT_AT = (32, 12) if SMOKE else (400, 150)
env = dict(os.environ)
if SMOKE:  # never touch the user's data dir in a smoke run
  env["WAVLM_DATA_DIR"] = os.environ.get("WAVLM_NOTEBOOK_DATA_DIR") or str(WORK / "data")
COMMAND = [sys.executable, "-m", "wavlm_jax.train", "--config", str(Path(configs.__file__).parent / "tiny.py"),
           "--workdir", str(RUN), f"--config.total_steps={STEPS}", f"--config.tokenizer.workdir={WORK / 'tokenizer'}",
           "--config.log_every=1", f"--config.checkpoint.every_steps={STEPS // 4}"]
CHANCE = 1.0 / tiny.get_config().model.num_label_classes
print(" ".join(COMMAND))

# %% [markdown]
# The first run builds the corpus (`espeak_speech/tiny`, seconds) and the MFCC k-means labels, then
# trains; its console output goes to `WORK/train.log`. The plot is redrawn from `metrics.jsonl` while it
# runs.

# %%
def read_metrics():
  path = RUN / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def draw(rows, resumed_at=()):
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3))
  steps = [r["step"] for r in rows]
  ax_loss.plot(steps, [r["loss"] for r in rows])
  ax_loss.set_ylabel("loss")
  ax_acc.plot(steps, [r["acc_masked"] for r in rows], label="masked frames")
  ax_acc.plot(steps, [r["acc_unmasked"] for r in rows], label="unmasked frames")
  ax_acc.axhline(CHANCE, color="grey", ls=":", label="chance")
  ax_acc.set_ylabel("accuracy")
  ax_acc.legend(fontsize=8)
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel("step")
    ax.set_xlim(0, STEPS)
    for step in resumed_at:
      ax.axvline(step, color="red", ls="--", lw=1)
  plt.tight_layout()
  plt.close(fig)
  return fig


def train(interrupt_at=None, resumed_at=()):
  """Runs the trainer to the end, or sends it SIGTERM once it has logged `interrupt_at`."""
  with open(WORK / "train.log", "a") as log:
    proc = subprocess.Popen(COMMAND, env=env, stdout=log, stderr=subprocess.STDOUT)
  handle = display(draw([], resumed_at), display_id=True)
  drawn = 0
  try:
    while proc.poll() is None:
      time.sleep(0.25)
      rows = read_metrics()
      if interrupt_at is not None and rows and rows[-1]["step"] >= interrupt_at:
        proc.send_signal(signal.SIGTERM)
        interrupt_at = None
      if len(rows) >= drawn + 10:
        handle.update(draw(rows, resumed_at))
        drawn = len(rows)
  finally:  # the kernel interrupted: stop the trainer too (it saves a checkpoint on SIGTERM)
    if proc.poll() is None:
      proc.terminate()
      proc.wait()
  handle.update(draw(read_metrics(), resumed_at))
  if proc.returncode != 0:
    raise RuntimeError(f"the trainer failed ({proc.returncode}):\n" + (WORK / "train.log").read_text()[-3000:])
  return json.loads((RUN / "summary.json").read_text())


WORK.mkdir(parents=True, exist_ok=True)
shutil.rmtree(RUN, ignore_errors=True)  # a fresh run each time the notebook runs (the labels are kept)
first = train(interrupt_at=INTERRUPT_AT)
print({k: first[k] for k in ("status", "step")})
assert first["status"] == "preempted" and INTERRUPT_AT <= first["step"] < STEPS

# %% [markdown]
# Interrupted: the trainer caught SIGTERM, saved a checkpoint at the step it had reached (and kept the
# scheduled ones) and stopped with status `preempted`. The same command resumes from the latest
# checkpoint: parameters, optimizer state, step and the data iterator's position, so the run continues as
# if never stopped (the tests check the losses bit for bit). The red line marks the resume.

# %%
print(sorted(p.name for p in (RUN / "checkpoints").iterdir()))
second = train(resumed_at=(first["step"],))
print({k: second[k] for k in ("status", "step")})
assert second["status"] == "finished" and second["step"] == STEPS
print((WORK / "train.log").read_text().splitlines()[-1][:300])

# %% [markdown]
# ## Next
# The run's model directory feeds the other notebooks and every command that takes `--model`:
# notebook 2 with `WAVLM_MODEL` set to it, notebook 1 likewise, `python -m wavlm_jax.probe --model ...`.

# %%
MODEL = Path(second["model"])
print(f"WAVLM_MODEL={MODEL}")
assert (MODEL / "config.json").is_file()
