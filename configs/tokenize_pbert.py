"""PBERT targets (Wang et al., "Supervision-Guided Codebooks for Masked Prediction in Speech
Pre-training", 2022): one phoneme per frame for every utterance, from a phoneme recognizer fine-tuned
with CTC on the labelled subset only. Each utterance is decoded greedily and the decoded phonemes are
aligned to the frames: for a greedy decode the forced alignment against the recognizer's own posteriors
is its frame-wise argmax path, whose blank frames are filled by the alignment
(wavlm_jax/decoding/align.py); the utterances' own transcripts are never read. The paper decodes with a
hybrid ASR system; here the recognizer is `python -m wavlm_jax.finetune` with a phoneme vocabulary
(the embedded corpus has phonemes; a LibriSpeech-layout dataset gets them from eSpeak NG's
text-to-phoneme rules when it is prepared). The
arg is a preset of configs/tokenize_mfcc.py (tiny, small, base, ls960).

  # 1. a phoneme recognizer on the labelled subset (here the tiny recipe's phonemes, from the main job's model)
  .venv/bin/python -m wavlm_jax.finetune --config configs/finetune/tiny.py:phonemes --workdir runs/ft_tiny_phonemes \
      --config.init_from=runs/tiny/model
  # 2. its labels for every utterance (no fit step), and the quality report against the true alignment
  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_pbert.py \
      --config.checkpoint=runs/ft_tiny_phonemes/best
  # 3. pre-train on them
  .venv/bin/python -m wavlm_jax.train --config configs/tiny.py --workdir runs/tiny_pbert \
      --config.data.labels=runs/tokenizer/tiny_pbert/labels/train --config.model.num_label_classes=NUM_CLASSES

NUM_CLASSES is the store's `num_classes` (labels/train/meta.json: the recognizer's vocabulary size,
specials included; their ids never occur but the blank's, on an utterance decoded as empty). A letter
recognizer works too, but its labels are then letters and the word delimiter `|`, not phones.
Measured (espeak_speech/small validation, the tiny recipe's phoneme recognizer, PER 0.39): PNMI 0.399,
phone purity 0.446, 47 of 63 labels used; the frame's own phoneme symbol equals the true phone on 44 %
of frames. Filling blank frames matters: the raw frame-wise argmax (blanks kept as a label) gives PNMI
0.165, filling blanks with the token before 0.362, the split at the middle 0.399; a silence label for
long blank runs added 0.005 and was left out. On this synthetic corpus MFCC k-means (k = 50) scores a
higher PNMI (0.441; more labels raise PNMI) but a lower phone purity (0.417); a stronger recognizer
gives better labels. `--config.lm=PHONE_LM` decodes with a phone n-gram (beam search) and force-aligns
the decoded phonemes by Viterbi; build it from the labelled subset's phonemes only
(`python -m wavlm_jax.decoding.ngram --dataset DATASET --split LABELLED --field phonemes --output F`).
Not built: position-dependent phones (B/I/E/S; they need word boundaries, which a phoneme recognizer's
output does not carry) and a word lexicon in that decoding.
"""

from configs import tokenize_mfcc


def get_config(arg: str = "tiny"):
  """The PBERT tokenizer config of a preset: config.checkpoint must name the phoneme recognizer."""
  c = tokenize_mfcc.get_config(arg)
  c.feature = "pbert"
  c.checkpoint = ""  # a fine-tuned CTC model directory with ctc_vocab.json (finetune's best/ or model/)
  c.label_rate = 50  # 50 (the recognizer's frames) or 100 (each frame repeated)
  c.lm = ""  # "" = greedy; a phone n-gram (ngram --field phonemes): beam search, then Viterbi alignment
  c.lm_weight = 0.5
  c.beam_size = 50
  c.workdir = f"runs/tokenizer/{arg}_pbert"
  return c
