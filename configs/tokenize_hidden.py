"""Iteration-2 targets: k-means (k = 500) of a model's layer-l output at 50 Hz (HuBERT Base: layer 6 of
the iteration-1 model; Large: layer 9 of Base iteration 2). The arg is a preset of configs/tokenize_mfcc.py
(tiny, small, base: the embedded eSpeak corpus; ls960: the prepared folder dataset librispeech_dir/ls960).

  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py \
      --config.checkpoint=runs/tiny/model --config.layer=1  # the model of configs/tiny.py
  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py:ls960 \
      --config.checkpoint=$W/hubert_base_it1/model --config.layer=6
"""

from configs import tokenize_mfcc


def get_config(arg: str = "tiny"):
  """The hidden-unit tokenizer config of a preset: k = 500 (50 on the tiny corpus), layer 6."""
  c = tokenize_mfcc.get_config(arg)
  c.feature = "hidden"
  c.k = 500 if arg != "tiny" else 50
  c.layer = 6
  c.workdir = f"runs/tokenizer/{arg}_hidden_km{c.k}"
  return c
