# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Planning a pod
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/wavlm-jax/wavlm_jax/blob/main/notebooks/05_planning_a_pod.ipynb)
#
# Before booking a TPU slice: does a recipe fit, with which sharding preset and remat policy, and how
# fast could it go? This notebook compiles the real training step ahead of time for a TPU topology on
# this (CPU) machine through libtpu (no TPU is used; the `[tpu]` extra installs libtpu), exactly as
# `python -m wavlm_jax.aot` does, for every sharding preset and remat policy, and shows the per-device
# memory against the chip's HBM, the parameters' PartitionSpecs and the roofline throughput.
#
# `WAVLM_NOTEBOOK_SMOKE=1` (CI) plans the tiny recipe on a v5e:2x2 slice for two presets; the full
# run plans WavLM Base on v5e:4x4 (minutes per compile on a 2-core host; README "Running on a pod" has
# the measured table for several topologies).

# %% tags=["skip-execution"]
# Colab only: install the project with libtpu (set the repository you cloned from).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  repo = os.environ.get("WAVLM_JAX_REPO", "")  # e.g. https://github.com/<you>/wavlm_jax
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"wavlm_jax[tpu] @ git+{repo}"], check=True)

# %%
import dataclasses
import os

import matplotlib.pyplot as plt

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
SMOKE = os.environ.get("WAVLM_NOTEBOOK_SMOKE") == "1"
RECIPE, TOPOLOGY = ("tiny", "v5e:2x2") if SMOKE else ("wavlm_base", "v5e:4x4")
PRESETS = ("dp", "fsdp_tp") if SMOKE else ("dp", "fsdp", "fsdp_tp")  # a TPU compile takes ~20 s even for tiny
REMATS = ("none",) if SMOKE else ("none", "dots", "full")

# %%
import importlib

from wavlm_jax import aot

recipe = importlib.import_module(f"configs.{RECIPE}")


def plan(preset: str, remat: str):
  cfg = recipe.get_config()
  with cfg.unlocked():
    cfg.sharding, cfg.model.remat = preset, remat
    chips = aot.chips_in(TOPOLOGY)
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = {"dp": (-1, 1, 1), "fsdp": (1, -1, 1),
                                                     "fsdp_tp": (1, -1, 2 if chips % 2 == 0 else 1)}[preset]
    if SMOKE:
      cfg.data.crop_seconds = 1.0
  devices, chip = aot.devices_for(TOPOLOGY, None)
  return aot.analyse(cfg, RECIPE, TOPOLOGY, devices, chip, label_rate=100.0 if RECIPE == "tiny" else 50.0)


reports = [plan(p, r) for p in PRESETS for r in REMATS]
for r in reports:
  print(r.table())

# %% [markdown]
# Per-device memory (arguments = parameters, optimizer state and the batch; temporaries = activations
# the step keeps for the backward pass) against the device's HBM. `fsdp` divides the train state over
# the devices; remat trades recomputation for activation memory.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
labels = [f"{r.preset}\n{r.remat}" for r in reports]
ax.bar(labels, [r.argument_gib for r in reports], label="arguments")
ax.bar(labels, [r.temp_gib for r in reports], bottom=[r.argument_gib for r in reports], label="temporaries")
if reports[0].hbm_gib:
  ax.axhline(reports[0].hbm_gib, color="red", ls="--", label="HBM per device")
ax.set_ylabel("GiB per device")
ax.set_title(f"{RECIPE} on {TOPOLOGY}: global batch {reports[0].batch} x {reports[0].crop_seconds} s")
ax.legend()
plt.show()

# %% [markdown]
# ## Where the parameters go
# Every parameter's logical axes, mapped by the preset's rules onto the mesh axes (`data`, `fsdp`,
# `tensor`): the PartitionSpecs the compiled step above uses.

# %%
from wavlm_jax import train
from wavlm_jax.data.labels import LabelSpec
from wavlm_jax.models import params as params_lib
from wavlm_jax.training import mesh as mesh_lib

cfg = recipe.get_config()
with cfg.unlocked():
  cfg.sharding, cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = "fsdp_tp", 1, -1, 2
devices, _ = aot.devices_for(TOPOLOGY, None)
mesh = mesh_lib.make_mesh(cfg.mesh, devices)
run = train.build(cfg, mesh, mesh_lib.rules_for(cfg.sharding), LabelSpec(50.0, cfg.model.num_label_classes))
specs = params_lib.flatten(run.state_sharding["params"])
for name, sharding in list(specs.items())[:25]:
  print(f"{name:70s} {str(run.binder.shapes[name]):>22s} {sharding.spec}")
print(f"... {len(specs)} parameters")

# %% [markdown]
# ## How fast at best
# The roofline: the step's model FLOPs (analytic: XLA's cost analysis undercounts convolutions) at the
# chip's peak; a real step reaches a fraction of it (MFU, which the trainer logs).

# %%
best = min((r for r in reports if r.fits is not False), key=lambda r: r.roofline_step_seconds, default=None)
print(dataclasses.asdict(best) if best else "nothing fits: more chips, fsdp, remat or shorter crops")
