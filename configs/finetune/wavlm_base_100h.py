"""WavLM Base fine-tuned with CTC on LibriSpeech train-clean-100: UniSpeech's `WavLM/finetune.sh`.

  python -m wavlm_jax.finetune --config configs/finetune/wavlm_base_100h.py --workdir runs/wavlm_base_100h \
      --config.init_from=models/wavlm_base --config.data.dataset=librispeech_dir/train100

`init_from`: `python -m wavlm_jax.convert --from unilm WavLM-Base.pt --to jax models/wavlm_base`.
Recipe: 80k updates, lr 3e-5 tri-stage 8k/32k/40k (warmup/hold/decay), final 0.05, no encoder freeze,
CNN frozen, masks 0.65/10 and channel 0.5/64, LayerDrop 0.1, dropouts 0.1 (final_dropout too), 3.2M
samples (200 s) per GPU on 8 GPUs: here 46 x 35 s = 1,610 s of padded audio per step.
Healthy run: validation WER below 10% within the first 20k updates; WavLM reports 3.4/7.7 (test-clean/
other, no LM) for Base+ on 100 h in its fine-tuning table.
"""

from configs.finetune.common import finetune_config
from wavlm_jax.data.config import data_config


def get_config(arg=None):
  del arg
  data = data_config(dataset="librispeech_dir/train100", batching="padded", crop_seconds=35.0, min_seconds=0.0,
                     batch_size=46, num_buckets=8, num_threads=16, prefetch=8)
  c = finetune_config(kind="letters", data=data)
  c.model_overrides.update({"mask_prob": 0.65, "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1,
                            "dropout_input": 0.1, "final_dropout": 0.1})
  c.optim.update({"peak_lr": 3e-5, "warmup": 8000, "hold": 32000, "decay": 40000, "freeze_steps": 0})
  c.total_steps = 80000
  c.eval.every_steps = 2000
  return c
