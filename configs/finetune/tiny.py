"""The CPU fine-tuning recipe: the main job's pretrained tiny WavLM to a phoneme or a letter recognizer
on the embedded eSpeak corpus, in minutes on 2 CPU cores.

  python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny          # the main job, first
  python -m wavlm_jax.finetune --config configs/finetune/tiny.py:phonemes --workdir runs/ft_tiny_phonemes
  python -m wavlm_jax.finetune --config configs/finetune/tiny.py:letters --workdir runs/ft_tiny_letters
  python -m wavlm_jax.evaluate --model runs/ft_tiny_phonemes/best --dataset espeak_speech/small --split test

Fine-tunes on `espeak_speech/small` (640 utterances, ~1 h, built on first use), validates on its
validation split every 100 steps. fairseq's semantics at a small scale: CNN frozen, encoder frozen for
the first 100 updates (head only), tri-stage schedule (phase ratio 0.1/0.4/0.5), masks 0.3/5 and
channel 0.1/8 (a 64-wide, 2-layer model cannot take base_10h's 0.75); letters keep the best model by CER.
Healthy run (measured on 2 CPU cores from the 1,000-step main job, README "Fine-tuning"): phonemes,
validation PER 228 % (the untrained head, mostly insertions) -> 89 % at step 200 -> 39 % at step 1,000
(test 41 %, unseen voices 56 %), 8.5 min; letters, CER 135 % -> 57 % with WER still ~100 % (a 64-wide,
2-layer model spells words only partly right), ~20 min.

`:phonemes,noisy` sets up noisy-student rounds (python -m wavlm_jax.noisy_student): the first 80 train
utterances (~6 min, a hash-ordered sample) are the labelled subset, the other 560 the unlabelled audio.
Round 0 fine-tunes the teacher on the 80, each round labels the 560 and fine-tunes a student on all:

  python -m wavlm_jax.decoding.ngram --dataset espeak_speech/small --split "train[:80]" --field phonemes \
      --order 4 --output runs/phones4_labelled.arpa        # optional: a phone LM from the labelled subset only
  python -m wavlm_jax.noisy_student --config configs/finetune/tiny.py:phonemes,noisy --workdir runs/ns_tiny \
      --rounds 2 [--config.noisy_student.lm=runs/phones4_labelled.arpa --config.noisy_student.lm_weight=0.5]

What a run looks like (measured, README "Supervision-guided codebooks in miniature"): a teacher fine-tuned
500 steps on the 80 from a 600-step pre-training has validation PER 0.63; its pseudo-labels have PER 0.65
(0.62 for the 316 of 560 the filter keeps: 209 dropped by the length rule, the least confident 10 % of
the rest by keep_fraction), and the student gets worse (0.63 -> 0.70): pseudo-labels this bad teach their
errors. A teacher trained on all of `small` (PER 0.39) gives kept labels of PER 0.375 (501 of 560 kept);
whether a student then improves on such a teacher was not measured here. The 80-sentence phone LM does not help the decoding
(test_unseen PER 55.6 % greedy, 55.7 % at weight 0.5).
"""

from configs import common
from configs.finetune.common import finetune_config
from wavlm_jax.data.config import data_config

LABELLED = 80  # `noisy`: the labelled subset, the first utterances of the train split


def get_config(arg=None):
  words = common.parse_arg(arg or "phonemes", ("phonemes", "letters", "noisy"))
  kinds = words & {"phonemes", "letters"}
  if len(kinds) > 1:
    raise ValueError(f"configs/finetune/tiny.py: {arg!r} names both phonemes and letters")
  kind = next(iter(kinds), "phonemes")
  data = data_config(dataset="espeak_speech/small", batching="padded", crop_seconds=12.0, min_seconds=0.0,
                     batch_size=8, num_buckets=4, num_threads=2, seed=0)
  c = finetune_config(init_from="runs/tiny/model", kind=kind, data=data, total_steps=1000, log_every=50, seed=0)
  c.model_overrides.update({"mask_prob": 0.3, "mask_length": 5, "mask_channel_prob": 0.1, "mask_channel_length": 8,
                            "layerdrop": 0.0, "activation_dropout": 0.0})
  c.optim.update({"peak_lr": 1e-3, "phase_ratio": (0.1, 0.4, 0.5), "freeze_steps": 100})
  c.eval.every_steps = 100
  c.eval.max_utterances = 60
  if kind == "letters":
    c.eval.metric = "cer"  # a 64-wide, 2-layer model spells words only partly right: WER stays near 100 %
  c.checkpoint.every_steps = 250
  if "noisy" in words:  # the first 80 utterances (~6 min) labelled, the other 560 (~42 min) unlabelled
    c.data.split = f"train[:{LABELLED}]"
    c.noisy_student.unlabelled_split = f"train[{LABELLED}:]"
    c.noisy_student.student_split = "train"
  return c
