"""WavLM Large (docs/model.md#model-cards): pre-LN, LayerNorm extractor, normalised waveforms, 24 layers x 1024,
HuBERT Large optimisation (Adam 1.5e-3, clip 1.0, no dropout), 7,200 s of audio per step, utterance and
noise mixing, ~700k steps [UNVERIFIED].

  python -m wavlm_jax.train --config configs/wavlm_large.py --workdir $W/wavlm_large \
      --config.tokenizer.checkpoint=$W/wavlm_base_plus/model --config.tokenizer.layer=9 --config.mesh.fsdp=16
  python -m wavlm_jax.train --config configs/wavlm_large.py:runlocal --workdir runs/wavlm_large_local

Data: the 94k-hour mixture of configs/wavlm_base_plus.py (MIX94K: Libri-Light, GigaSpeech, VoxPopuli
English, by hours; its docstring has the chain from downloaded corpora to a pod). Targets: k-means
(k=500) of layer 9 of a Base teacher (docs/targets.md#k-means-targets), labelled per component into
runs/tokenizer/mix94k_large_hidden_km500/. We have not run it at scale.
"""

from configs import common, wavlm_base_plus
from wavlm_jax.data.config import data_config
from wavlm_jax.models.config import model_card


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  model = model_card("wavlm_large", num_label_classes=500, dtype="bfloat16")
  data = data_config(crop_seconds=15.6, min_seconds=2.0, batch_size=464,
                     normalize=True, mix_prob=0.2, noise_prob=0.5, noise="noise_dir/dns", num_threads=16, prefetch=8)
  c = common.run_config(model, data, total_steps=700_000, seed=1337, audio_every=5000)
  c.optim.peak_lr, c.optim.warmup, c.optim.clip_norm = 1.5e-3, 32_000, 1.0
  c.mesh.data, c.mesh.fsdp = -1, 8
  c.sharding = "fsdp"
  c = common.mixture_tokenizer(c, wavlm_base_plus.MIX94K, "runs/tokenizer/mix94k_large_hidden_km500",
                               fit_fraction=0.001)
  return common.runlocal(c) if "runlocal" in words else c
