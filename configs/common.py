"""The run-config skeleton shared by the recipes: every block with its defaults (values:
docs/objectives.md#hyper-parameters)."""

import ml_collections

from wavlm_jax.data.config import data_config


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
  # Multi-host: how often the hosts agree whether any of them was told to stop (SIGTERM); a host-level
  # collective, so not every step. One host alone checks every step.
  c.checkpoint.preemption_check_every = 10

  c.distributed = distributed_config()

  c.total_steps = 400_000
  c.seed = 1337
  # PRNG behind masking, LayerDrop, mixing and the dropout seeds: "threefry2x32" (JAX's default; the same
  # bits however the step is sharded) or "rbg" / "unsafe_rbg" (XLA's RngBitGenerator, as MaxText and t5x use;
  # cheaper per bit, but a sharded step draws the global array on every device unless XLA is told otherwise
  # (--xla_tpu_spmd_rng_bit_generator_unsafe=1, after which the bits depend on the mesh)). Dropout masks, the
  # bulk of a step's randomness, are a hash of (seed, element index) whatever the PRNG (layers.dropout), so
  # threefry costs little here. Every choice resumes exactly: keys come from (seed, step).
  c.prng_impl = "threefry2x32"
  c.log_every = 100
  c.audio_every = 0  # write mixed input examples to TensorBoard every N steps (0: never)
  c.nan_patience = 5  # stop after this many non-finite steps in a row
  c.init_from = ""  # warm start from a model directory (e.g. a converted released checkpoint)
  c.peak_flops_per_device = 0.0  # 0: known chip table, or measured on CPU
  for key, value in top.items():
    c[key] = value
  return c


def parse_arg(arg, known):
  """'it1,runlocal' -> {'it1', 'runlocal'}; unknown words are an error naming them."""
  words = {w.strip() for w in (arg or "").split(",") if w.strip()}
  unknown = words - set(known)
  if unknown:
    raise ValueError(f"unknown recipe argument(s) {sorted(unknown)}; known: {sorted(known)}")
  return words


# A recipe's mixture shrunk for a laptop: three small embedded corpora (en-us, en-gb and fr voices), by hours.
LOCAL_MIXTURE = (("espeak_speech/tiny", "train", 0.0), ("espeak_speech/tiny_gb", "train", 0.0),
                 ("espeak_speech/tiny_fr", "train", 0.0))


def runlocal(c):
  """Shrinks a recipe to run on a laptop CPU: the tiny card's sizes on the embedded corpus (a mixture
  recipe: on LOCAL_MIXTURE, with a tokenizer over it)."""
  from configs import tokenize_mfcc
  from wavlm_jax.models.config import CARDS

  with c.unlocked():
    for key in ("conv_dim", "embed_dim", "ffn_dim", "num_heads", "conv_pos", "conv_pos_groups", "num_buckets",
                "max_distance", "final_dim"):
      c.model[key] = CARDS["tiny"][key]
    c.model.num_layers = min(c.model.num_layers, 2)
    if c.model.predict_layers:
      c.model.predict_layers = (1, 2)
    c.model.num_label_classes = 100
    c.data.dataset, c.data.data_dir, c.data.labels = "espeak_speech/tiny", "", ""
    c.data.crop_seconds, c.data.min_seconds, c.data.batch_size = 2.0, 1.0, 8
    c.data.noise = "synthetic"
    c.tokenizer = tokenize_mfcc.get_config("tiny")
    c.tokenizer.n_init = 1
    if c.data.mixture:
      c.data.mixture = c.tokenizer.mixture = LOCAL_MIXTURE
      c.tokenizer.workdir = "runs/tokenizer/mix_tiny_mfcc_km100"
    c.total_steps, c.log_every = 50, 10
    c.checkpoint.every_steps = 25
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    c.sharding = "dp"
  return c


def with_tokenizer(c, tokenizer, run_local: bool):
  """Gives a recipe the tokenizer config module `tokenizer` (its ls960 preset: run when data.labels is
  absent), and with `run_local` shrinks the recipe (`runlocal`) and takes the tokenizer's tiny preset."""
  c.tokenizer = tokenizer.get_config("ls960")
  if run_local:
    c = runlocal(c)
    with c.unlocked():
      c.tokenizer = tokenizer.get_config("tiny")
  return c


def mixture_tokenizer(c, mixture, workdir: str, fit_fraction: float):
  """Sets a recipe's data.mixture and a hidden-unit tokenizer over it (k = model.num_label_classes; the
  teacher named on the command line: --config.tokenizer.checkpoint=DIR --config.tokenizer.layer=L)."""
  from configs import tokenize_hidden

  c.data.mixture = mixture
  c.tokenizer = tokenize_hidden.get_config("ls960")
  c.tokenizer.mixture, c.tokenizer.workdir = mixture, workdir
  c.tokenizer.k, c.tokenizer.fit_fraction = c.model.num_label_classes, fit_fraction
  return c


def distributed_config():
  """Multi-host settings (jax.distributed), shared by the trainer and the tokenizer."""
  d = ml_collections.ConfigDict()
  d.enabled = False  # also on when JAX_COORDINATOR_ADDRESS or a multi-task SLURM job is seen
  d.coordinator = ""
  d.num_processes = 0
  d.process_id = -1
  d.cpu_collectives = "gloo"
  return d
