"""Iteration-2 targets: k-means (k = 500) of a model's layer-l output at 50 Hz (HuBERT Base: layer 6 of
the iteration-1 model; Large: layer 9 of Base iteration 2).

  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_hidden.py \
      --config.checkpoint=runs/tiny/export --config.layer=1
"""

from configs import tokenize_mfcc


def get_config(arg: str = "tiny"):
  c = tokenize_mfcc.get_config(arg)
  c.feature = "hidden"
  c.k = 500 if arg != "tiny" else 50
  c.layer = 6
  c.workdir = f"runs/tokenizer/{arg}_hidden_km{c.k}"
  return c
