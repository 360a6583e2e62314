"""HuBERT Base fine-tuned with CTC on 10 h of letters: fairseq's `examples/hubert/config/finetune/base_10h.yaml`.

  python -m wavlm_jax.finetune --config configs/finetune/hubert_base_10h.py --workdir runs/hubert_base_10h \
      --config.init_from=models/hubert_base_ls960 --config.data.dataset=librispeech_dir/train10h

`init_from`: a model directory (`python -m wavlm_jax.convert --from fairseq hubert_base_ls960.pt --to jax`
or a pretraining run's model/). The dataset: LibriLight's 10 h split prepared with
`python -m wavlm_jax.data.prepare librispeech_dir FOLDER --name train10h --validation-fraction 0.05`
(or set data.split / eval.split to a dev-other you prepared).
Recipe: 25k updates, Adam (0.9, 0.98, eps 1e-8), lr 2e-5 tri-stage (warmup 8k, decay 72k, final 0.05),
encoder frozen 10k updates, CNN frozen throughout, masks 0.75/10 and channel 0.5/64, LayerDrop 0.1, CTC
sentence-averaged, 200 s of audio per step per GPU on 8 GPUs (fairseq's max_tokens 3.2M x 8 GPUs =
1,600 s per step: here batch_size x the longest bucket, 46 x 35 s = 1,610 s of padded audio per step).
Healthy run: validation WER flat (~100%) while only the head trains, falling fast after the unfreeze at
10k; the HuBERT paper reports 9.6/5.9 (dev-clean with a 4-gram LM) for Base on 10 h.

`:noisy` is the recipe of noisy-student rounds (python -m wavlm_jax.noisy_student; with
configs/pbert_base.py:ils pre-training it is the combination of Wang et al. 2022's best rows): labelled
and unlabelled audio must be slices of one prepared dataset, so the labelled subset is a 1 % slice (~10 h,
a hash-ordered, speaker-mixed sample; not LibriLight's 10 h list) of `librispeech_dir/ls960` and the other
99 % are the unlabelled audio. Prepare ls960 with `--validation-fraction 0.005` (validation), build a word
LM (`python -m wavlm_jax.decoding.ngram --text librispeech-lm-norm.txt --output lm4.arpa`; or a KenLM
binary with `--config.noisy_student.lexicon=WORDS.txt`) and run:

  python -m wavlm_jax.noisy_student --config configs/finetune/hubert_base_10h.py:noisy --workdir runs/ns_base \
      --rounds 2 --config.init_from=runs/pbert_base_ils/model --config.noisy_student.lm=lm4.arpa

The pseudo-labels' error-rate diagnostic (`noisy_student.score_pseudo_labels`) is off here: it would read
the 950 h a second time. Not run at this scale here: no reference numbers are claimed.
"""

from configs import common
from configs.finetune.common import finetune_config
from wavlm_jax.data.config import data_config


def get_config(arg=None):
  words = common.parse_arg(arg, ("noisy",))
  data = data_config(dataset="librispeech_dir/train10h", batching="padded", crop_seconds=35.0, min_seconds=0.0,
                     batch_size=46, num_buckets=8, num_threads=16, prefetch=8)
  c = finetune_config(kind="letters", data=data)
  c.eval.every_steps = 1000
  if "noisy" in words:
    c.data.dataset, c.data.split = "librispeech_dir/ls960", "train[:1%]"
    c.noisy_student.unlabelled_split, c.noisy_student.student_split = "train[1%:]", "train"
    c.noisy_student.score_pseudo_labels = False
  return c
