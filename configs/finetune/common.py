"""The fine-tuning config skeleton shared by the recipes: fairseq's HuBERT base_10h semantics as
defaults (docs/downstream.md#ctc-fine-tuning)."""

import ml_collections

from configs import common
from wavlm_jax.data.config import data_config


def finetune_config(*, init_from: str = "", kind: str = "letters", data=None, **top):
  c = common.run_config(None, data or data_config(batching="padded", crop_seconds=30.0, min_seconds=0.0,
                                                  batch_size=8, num_buckets=8))
  del c.model, c.loss, c.tokenizer  # the model is the pretrained one (init_from) with these overrides
  c.init_from = init_from
  # fairseq hubert base_10h (SPEC 9.4): masks 0.75/10 in time and 0.5/64 in channels, LayerDrop 0.1,
  # activation dropout 0.1, CNN frozen (feature_grad_mult 0).
  c.model_overrides = ml_collections.ConfigDict({
      "mask_prob": 0.75, "mask_length": 10, "mask_min_masks": 2, "mask_channel_prob": 0.5,
      "mask_channel_length": 64, "layerdrop": 0.1, "dropout": 0.0, "attention_dropout": 0.0,
      "activation_dropout": 0.1, "dropout_input": 0.0, "final_dropout": 0.0, "feature_grad_mult": 0.0,
  })
  c.vocab = ml_collections.ConfigDict({"kind": kind})  # letters | phonemes, built from data.split's transcripts
  c.ctc = ml_collections.ConfigDict({"reduction": "sentence"})  # sentence (fairseq) | sum (transformers) | token
  c.optim = ml_collections.ConfigDict({
      "peak_lr": 2e-5, "warmup": 8000, "hold": 0, "decay": 72000, "phase_ratio": (),
      "init_lr_scale": 0.01, "final_lr_scale": 0.05, "b1": 0.9, "b2": 0.98, "eps": 1e-8,
      "weight_decay": 0.0, "clip_norm": 0.0, "freeze_steps": 10000,
  })
  c.eval = ml_collections.ConfigDict({
      "split": "validation", "every_steps": 1000, "max_utterances": 0,  # 0: the whole split
      "at_start": True,  # also score the untrained head before step 1 (the baseline)
      "metric": "",  # the error that picks best/: "" = per (phonemes) or wer (letters); "cer" for letters
  })
  # Noisy-student rounds (python -m wavlm_jax.noisy_student; docs/downstream.md#noisy-student).
  c.noisy_student = ml_collections.ConfigDict({
      "teacher": "",  # a fine-tuned model directory; "" = fine-tune one on data.split first (round 0)
      "unlabelled_split": "",  # the unlabelled audio, e.g. "train[80:]"; its transcripts are never read
      "student_split": "train",  # the split that holds both data.split and unlabelled_split
      "student_init": "pretrained",  # the student starts from init_from ("pretrained") or from the teacher
      "lm": "",  # "" = greedy; an n-gram LM: beam search (word LM for letters, phone LM for phonemes)
      "lexicon": "",  # letters: the words the beam may spell (one per line; "" = the ARPA LM's unigrams;
                      # needed with a KenLM binary word LM)
      "lm_weight": 2.0, "word_score": -1.0, "beam_size": 50,
      "length_tolerance": 0.5,  # drop if tokens/second differs from the labelled median by more (relative)
      "min_confidence": 0.0,  # drop below this mean top posterior per frame
      "keep_fraction": 0.9,  # then keep this fraction, most confident first
      "score_pseudo_labels": True,  # report their error rate when the unlabelled split has transcripts
  })
  c.total_steps = 25000
  c.log_every = 200
  for key, value in top.items():
    c[key] = value
  return c
