"""HuBERT Base pre-trained on CTC-clustering targets (Wang et al., 2022;
docs/objectives.md#supervision-guided-codebooks): the model, data and optimisation of
configs/hubert_base.py:it2 (400k steps, k = 500), with k-means of one layer of a CTC model fine-tuned on
the labelled subset only as the targets.

  # 1. a CTC model on the labelled subset (letters or phonemes)
  python -m wavlm_jax.finetune --config configs/finetune/hubert_base_10h.py --workdir $W/ctc_10h \
      --config.init_from=$W/hubert_base_it1/model
  # 2. k-means of its layer (choose the layer by PNMI: configs/tokenize_ctc.py says how)
  python -m wavlm_jax.targets.tokenize --config configs/tokenize_ctc.py:ls960 \
      --config.checkpoint=$W/ctc_10h/best --config.layer=11
  # 3. pre-train on the clusters
  python -m wavlm_jax.train --config configs/ctc_cluster_base.py --workdir $W/ctc_cluster_base \
      --config.data.labels=runs/tokenizer/ls960_ctc_km500/labels/train

On a laptop, the same chain on the embedded corpus:

  python -m wavlm_jax.targets.tokenize --config configs/tokenize_ctc.py \
      --config.checkpoint=runs/ft_tiny_phonemes/best
  python -m wavlm_jax.train --config configs/ctc_cluster_base.py:runlocal --workdir runs/ctc_cluster_local \
      --config.data.labels=runs/tokenizer/tiny_ctc_km50/labels/train

(runs/ft_tiny_phonemes from configs/pbert_base.py's laptop chain.) Healthy run: as HuBERT iteration 2's.
We have not run this recipe at scale: no reference curve is claimed.
"""

from configs import common, hubert_base, tokenize_ctc


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  c = hubert_base.get_config("it2")
  return common.with_tokenizer(c, tokenize_ctc, "runlocal" in words)  # needs its checkpoint
