"""ILS-SSL Base (docs/objectives.md#ils-ssl): HuBERT Base with intermediate-layer supervision on layers 4 and
12 (separate projections and label tables) and the un-gated bucket relative position bias.

  python -m wavlm_jax.train --config configs/ils_ssl_base.py --workdir $W/ils_base \
      --config.data.labels=runs/tokenizer/ls960_hidden_km500/labels/train
  python -m wavlm_jax.train --config configs/ils_ssl_base.py:runlocal --workdir runs/ils_local

Healthy run: both heads' masked losses fall; layer 4's stays above layer 12's (logged as
loss_masked/layer4 and loss_masked/layer12). We have not run this recipe at scale.
"""

from configs import common, hubert_base


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  c = hubert_base.get_config("it2")
  with c.model.unlocked():
    c.model.relative_position = "bucket"
    c.model.predict_layers = (4, 12)
  c.total_steps = 400_000
  return common.runlocal(c) if "runlocal" in words else c
