"""The model directory format: an Orbax checkpoint of the parameters plus the model config as JSON.

A model directory (what `python -m wavlm_jax.convert` writes and `load_encoder` reads):
    DIR/config.json   the model config (wavlm_jax.models.config fields)
    DIR/params/       Orbax StandardCheckpointer tree, nested by parameter path
DIR may be a URL (gs://...). The directory is assembled under a temporary name and moved into place
only when complete (`storage.staged_directory`: a rename on a local disk; on a bucket an upload with
config.json last, and a directory without config.json is not a model), so a crash never leaves a
half-written model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from wavlm_jax import storage
from wavlm_jax.models import config as model_config_lib
from wavlm_jax.models import params as params_lib
from wavlm_jax.models import wavlm

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def _local_checkpointer() -> ocp.StandardCheckpointer:
  """A checkpointer private to this process (no cross-host barriers): model directories hold plain
  host arrays and are written and read by one process at a time."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


def save_model(directory: str | os.PathLike, flat_params: Mapping[str, np.ndarray], config, *,
               overwrite: bool = False, extra: Callable[[Path], object] | None = None) -> os.PathLike:
  """Writes parameters (flat, either layer layout) and config as a model directory, atomically.
  `extra(dir)` writes more files into it before it is moved into place (a CTC vocabulary)."""
  directory = storage.path(directory)
  flat = params_lib.to_layout(flat_params, config)
  model = wavlm.abstract(config)
  params_lib.check_keys_and_shapes(params_lib.param_shapes(model), {k: np.shape(v) for k, v in flat.items()},
                                   "parameters to save")
  with storage.staged_directory(directory, marker=CONFIG_FILE, overwrite=overwrite) as tmp:
    with _local_checkpointer() as ckptr:
      ckptr.save(tmp / PARAMS_DIR, params_lib.nest({k: np.asarray(v, np.float32) for k, v in flat.items()}))
      ckptr.wait_until_finished()
    (tmp / CONFIG_FILE).write_text(model_config_lib.to_json(config))
    if extra is not None:
      extra(tmp)
  return directory


def load_config(directory: str | os.PathLike, **overrides):
  path = storage.path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no model config; is {directory} a wavlm_jax model directory?")
  try:
    values = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  values.update(overrides)
  return model_config_lib.from_mapping(values)


def load_flat_params(directory: str | os.PathLike, config=None) -> dict[str, np.ndarray]:
  """The stored parameters as a flat mapping in the layout of `config` (default: the stored one)."""
  directory = storage.path(directory)
  stored = load_config(directory)
  with _local_checkpointer() as ckptr:
    target = {k: jax.ShapeDtypeStruct(s, np.float32)
              for k, s in params_lib.param_shapes(wavlm.abstract(stored)).items()}
    tree = ckptr.restore(directory / PARAMS_DIR, params_lib.nest(target))
  flat = {k: np.asarray(v) for k, v in params_lib.flatten(tree).items()}
  return params_lib.to_layout(flat, config or stored)


def load_model(directory: str | os.PathLike, **config_overrides) -> wavlm.Model:
  """The model stored in `directory`; overrides (e.g. scan_layers=False, dtype) apply to its config."""
  config = load_config(directory, **config_overrides)
  flat = load_flat_params(directory, config)
  return params_lib.set_params(wavlm.abstract(config), flat, source=f"parameters in {directory}")
