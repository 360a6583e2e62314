"""HuBERT Base pre-trained on PBERT targets (Wang et al., 2022; docs/objectives.md#supervision-guided-codebooks):
the model, data and optimisation of configs/hubert_base.py:it2 (400k steps), with one phoneme per frame
from a phoneme recognizer fine-tuned on the labelled subset only as the masked-prediction targets. `:ils`
adds intermediate-layer supervision on the same targets (configs/ils_ssl_base.py: layers 4 and 12, the
un-gated bucket relative position bias), the combination the paper's best rows build on; they add
noisy-student rounds in fine-tuning: configs/finetune/hubert_base_10h.py:noisy (step 5 below).

  # 1. a phoneme recognizer on the labelled subset (LibriSpeech-layout datasets carry eSpeak NG phonemes)
  python -m wavlm_jax.finetune --config configs/finetune/hubert_base_10h.py --workdir $W/phones_10h \
      --config.init_from=$W/hubert_base_it1/model --config.vocab.kind=phonemes
  # 2. PBERT labels of the unlabelled audio (its transcripts are never read)
  python -m wavlm_jax.targets.tokenize --config configs/tokenize_pbert.py:ls960 \
      --config.checkpoint=$W/phones_10h/best
  # 3. pre-train on them (configs/pbert_base.py:ils for the ILS combination)
  python -m wavlm_jax.train --config configs/pbert_base.py --workdir $W/pbert_base \
      --config.data.labels=runs/tokenizer/ls960_pbert/labels/train
  # 4. fine-tune and evaluate like any pre-trained model
  python -m wavlm_jax.finetune --config configs/finetune/hubert_base_10h.py --workdir $W/pbert_base_10h \
      --config.init_from=$W/pbert_base/model
  # 5. the best rows' combination: ILS pre-training (step 3 with :ils and --workdir $W/pbert_base_ils),
  #    then noisy-student rounds
  python -m wavlm_jax.noisy_student --config configs/finetune/hubert_base_10h.py:noisy --workdir $W/pbert_ils_ns \
      --rounds 2 --config.init_from=$W/pbert_base_ils/model --config.noisy_student.lm=lm4.arpa

Steps 2 and 3 can be one command: without a label store the trainer runs the tokenizer of
`config.tokenizer` first (`--config.tokenizer.checkpoint=$W/phones_10h/best`). On a laptop, the whole
chain on the embedded corpus (about 12 minutes on 2 CPU cores, measured step by step: 2.5, 8.5, 0.25 and
0.5 minutes; the last step is 50 updates of the shrunk model, which checks the chain, not the method):

  python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny
  python -m wavlm_jax.finetune --config configs/finetune/tiny.py:phonemes --workdir runs/ft_tiny_phonemes
  python -m wavlm_jax.targets.tokenize --config configs/tokenize_pbert.py \
      --config.checkpoint=runs/ft_tiny_phonemes/best
  python -m wavlm_jax.train --config configs/pbert_base.py:runlocal --workdir runs/pbert_local \
      --config.data.labels=runs/tokenizer/tiny_pbert/labels/train

`model.num_label_classes` is 100, an upper bound on the recognizer's vocabulary (eSpeak's English phones
plus four specials; the trainer stops with a message if a store has more). Healthy run: as HuBERT's, the
loss falling and the masked accuracy climbing far above chance (one over the phones the store uses). We
have not run this recipe at scale: no reference curve is claimed.
"""

from configs import common, hubert_base, tokenize_pbert


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"ils", "runlocal"})
  c = hubert_base.get_config("it2")
  with c.model.unlocked():
    c.model.num_label_classes = 100
    if "ils" in words:
      c.model.relative_position = "bucket"
      c.model.predict_layers = (4, 12)
  return common.with_tokenizer(c, tokenize_pbert, "runlocal" in words)  # needs its checkpoint
