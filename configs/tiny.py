"""The main job: a small WavLM pretrained on the embedded eSpeak corpus, on CPU, in a few minutes.

  .venv/bin/python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny
  .venv/bin/python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny --config.total_steps=1500

The first command builds `espeak_speech/tiny` (seconds), makes MFCC k-means labels (k=100, 100 Hz) with
the tokenizer, then trains WavLM (gated relative position bias, utterance and noise mixing on) with
masked prediction for 1,000 steps (~3 minutes on 2 CPU cores). The second continues the run from its
last checkpoint to step 1,500.
Healthy run: the summary's masked accuracy (mean of the last 100 steps) well above chance (1/100), loss
falling from ~7 to below 4 (README, "What you should see", has a measured run).
"""

from configs import common, tokenize_mfcc
from wavlm_jax.data.config import data_config
from wavlm_jax.models.config import model_card


def get_config(arg=None):
  del arg
  model = model_card("tiny", num_layers=2, num_label_classes=100, final_dim=32, dropout=0.0, attention_dropout=0.0,
                     dropout_input=0.0, layerdrop=0.0, feature_grad_mult=1.0)
  data = data_config(dataset="espeak_speech/tiny", crop_seconds=2.0, min_seconds=1.0, batch_size=8,
                     mix_prob=0.3, noise_prob=0.5, noise="synthetic", num_threads=2, seed=0)
  c = common.run_config(model, data, total_steps=1000, seed=0, log_every=25, audio_every=100)
  c.tokenizer = tokenize_mfcc.get_config("tiny")
  c.tokenizer.workdir = "runs/tokenizer/tiny_mfcc_km100"
  c.tokenizer.n_init = 1
  c.optim.peak_lr = 2e-3
  c.optim.warmup = 0.1
  c.checkpoint.every_steps = 250
  return c
