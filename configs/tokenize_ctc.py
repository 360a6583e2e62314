"""CTC-clustering targets (Wang et al., 2022): k-means of the hidden states of one layer of a model
fine-tuned with CTC on the labelled subset only (python -m wavlm_jax.finetune), in place of the
pre-trained model's layer that iteration-2 HuBERT targets cluster (configs/tokenize_hidden.py). The arg
is a preset of configs/tokenize_mfcc.py (tiny, small, base, ls960).

  .venv/bin/python -m wavlm_jax.targets.tokenize --config configs/tokenize_ctc.py \
      --config.checkpoint=runs/ft_tiny_phonemes/best --config.layer=2 --config.k=50

The paper's layer and cluster count are not in the text we can read here: choose the layer by
measurement, PNMI per layer of the CTC model against the corpus' phone alignment
(`python -m wavlm_jax.analysis.layerwise --model CTC_MODEL --pnmi`, docs/probing.md), and k as for hidden
units (500 on LibriSpeech, 50 on the tiny corpus).

Measured here (espeak_speech/small validation, k = 50, the tiny recipe's phoneme recognizer: 2 layers,
PER 0.39): PNMI 0.408 at layer 1 and 0.408 at layer 2, so the tiny default (2) is not a finding. For
comparison on the same split: the pre-trained model it was fine-tuned from, layers 1 / 2, 0.363 / 0.342;
MFCC k-means 0.441; PBERT labels from the same recognizer (configs/tokenize_pbert.py) 0.399. The Base
default (11, the last but one of 12) is unmeasured: a Base CTC model cannot be trained on this machine;
it follows the usual finding that a CTC-fine-tuned encoder is most phonetic near the top, below the
layers the CTC head reshapes. Measure before a long run.
"""

from configs import tokenize_hidden


def get_config(arg: str = "tiny"):
  """The CTC-cluster tokenizer config of a preset: config.checkpoint must name the CTC model."""
  c = tokenize_hidden.get_config(arg)
  c.checkpoint = ""  # a fine-tuned CTC model directory (finetune's best/ or model/)
  c.layer = 11 if arg != "tiny" else 2
  c.workdir = f"runs/tokenizer/{arg}_ctc_km{c.k}"
  return c
