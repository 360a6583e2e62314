"""WavLM Base (docs/objectives.md#wavlm-pretraining): HuBERT Base's objective and hyper-parameters plus the
gated relative position bias and utterance mixing (masked speech denoising), on LibriSpeech 960 h, 400k
steps.

  python -m wavlm_jax.train --config configs/wavlm_base.py --workdir $W/wavlm_base \
      --config.data.labels=runs/tokenizer/ls960_hidden_km500/labels/train
  python -m wavlm_jax.train --config configs/wavlm_base.py:runlocal --workdir runs/wavlm_local

Targets: k-means (k=500) of an intermediate layer of a HuBERT/WavLM teacher (make them with
configs/tokenize_hidden.py). Mixing probability: the UniSpeech dataset default 0.2 (the values used for
the released models are not published); noise mixing is off for Base. Healthy run: as HuBERT Base; the
mixed fraction of inputs (TensorBoard audio every `audio_every` steps) should sound like two speakers.
We have not run this recipe at scale: no reference curve is claimed.
"""

from configs import common
from wavlm_jax.data.config import data_config
from wavlm_jax.models.config import model_card


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  model = model_card("wavlm_base", num_label_classes=500, dtype="bfloat16")
  data = data_config(dataset="librispeech_dir/ls960", crop_seconds=15.6, min_seconds=2.0, batch_size=176,
                     mix_prob=0.2, noise_prob=0.0, num_threads=16, prefetch=8)
  c = common.run_config(model, data, total_steps=400_000, seed=1337, audio_every=5000)
  c.optim.peak_lr, c.optim.warmup, c.optim.clip_norm = 5e-4, 32_000, 10.0
  return common.runlocal(c) if "runlocal" in words else c
