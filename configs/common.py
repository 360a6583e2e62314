"""The run-config skeleton shared by the recipes: every block with its defaults (SPEC.md §9 values)."""

import ml_collections

from wavlm_jax.data import data_config


def run_config(model, data=None, **top):
  c = ml_collections.ConfigDict()
  c.model = model
  c.data = data or data_config()
  c.tokenizer = None  # a tokenizer config: labels are made first if config.data.labels is absent

  c.loss = ml_collections.ConfigDict()
  c.loss.masked_weight = 1.0
  c.loss.unmasked_weight = 0.0
  c.loss.feature_pen_weight = 10.0

  c.optim = ml_collections.ConfigDict()
  c.optim.peak_lr = 5e-4
  c.optim.end_lr = 0.0
  c.optim.warmup = 0.08  # steps (>= 1) or a fraction of total_steps: 32k of 400k
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-6
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 10.0

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.sharding = "dp"  # dp | fsdp | fsdp_tp

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3
  c.checkpoint.keep_period = 0  # also keep every N-th step (0: none)
  c.checkpoint.asynchronous = True

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False  # also on when JAX_COORDINATOR_ADDRESS or a multi-task SLURM job is seen
  c.distributed.coordinator = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.cpu_collectives = "gloo"

  c.total_steps = 400_000
  c.seed = 1337
  c.log_every = 100
  c.audio_every = 0  # write mixed input examples to TensorBoard every N steps (0: never)
  c.nan_patience = 5  # stop after this many non-finite steps in a row
  c.init_from = ""  # warm start from a model directory (e.g. a converted released checkpoint)
  c.peak_flops_per_device = 0.0  # 0: known chip table, or measured on CPU
  for key, value in top.items():
    c[key] = value
  return c
