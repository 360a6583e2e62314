"""HuBERT Base pre-training (docs/objectives.md#hubert-pretraining): 32 GPUs x 87.5 s = 2,800 s of audio
per step, Adam 5e-4 with 32k warmup steps then linear decay, clip 10, masks p=0.8 l=10, layerdrop 0.05,
CNN gradient x0.1.

  # iteration 1: k-means (k=100) of MFCC at 100 Hz, 250k steps
  python -m wavlm_jax.train --config configs/hubert_base.py:it1 --workdir $W/hubert_base_it1
  # iteration 2: k-means (k=500) of layer 6 of iteration 1 at 50 Hz, 400k steps
  python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py:ls960 \
      --config.checkpoint=$W/hubert_base_it1/model --config.layer=6
  python -m wavlm_jax.train --config configs/hubert_base.py:it2 --workdir $W/hubert_base_it2 \
      --config.data.labels=runs/tokenizer/ls960_hidden_km500/labels/train
  # on a laptop: the same recipe shrunk to the embedded corpus
  python -m wavlm_jax.train --config configs/hubert_base.py:it1,runlocal --workdir runs/hubert_local

Data: a LibriSpeech-layout folder prepared as `librispeech_dir/ls960`
(`python -m wavlm_jax.data.prepare librispeech_dir .../LibriSpeech --name ls960`). Batches are formed by
duration from `data.num_buckets` crop lengths up to 15.6 s (no padding): 2,745 s of audio per step.
Healthy run: loss falls fast in the first 10k steps, masked accuracy climbs steadily while unmasked
accuracy (not trained, weight 0) stays lower; target entropy stays near log2(k) (a collapsing
histogram means bad labels). We have not run this recipe at scale: no reference curve is claimed.
"""

from configs import common, tokenize_mfcc
from wavlm_jax.data.config import data_config
from wavlm_jax.models.config import model_card


def get_config(arg: str = "it1"):
  words = common.parse_arg(arg, {"it1", "it2", "runlocal"})
  it2 = "it2" in words
  model = model_card("hubert_base", num_label_classes=500 if it2 else 100, dtype="bfloat16")
  data = data_config(dataset="librispeech_dir/ls960", crop_seconds=15.6, min_seconds=2.0, batch_size=176,
                     num_threads=16, prefetch=8)
  c = common.run_config(model, data, total_steps=400_000 if it2 else 250_000, seed=1337)
  c.optim.peak_lr, c.optim.warmup, c.optim.clip_norm = 5e-4, 32_000, 10.0
  if not it2:
    c.tokenizer = tokenize_mfcc.get_config("ls960")
  c.mesh.data, c.mesh.fsdp = -1, 1
  return common.runlocal(c) if "runlocal" in words else c
