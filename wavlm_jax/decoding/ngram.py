"""n-gram language models in ARPA format, estimated from transcripts: interpolated Kneser-Ney with one
discount per order (D = n1 / (n1 + 2 n2) of that order's counts), written in backoff form as KenLM's
`lmplz` writes it (each n-gram's interpolated probability; each context's backoff = its interpolation
weight), so KenLM (flashlight-text's decoder) reads it.

    python -m wavlm_jax.decoding.ngram --dataset espeak_speech/small --split train --order 4 --output lm.arpa
    python -m wavlm_jax.decoding.ngram --text corpus.txt --order 4 --output lm.arpa

Why here: no maintained Python package estimates ARPA correctly (`arpabo` 0.3.0 writes every backoff
weight as 0; the `kenlm` wheels hold the query library without `lmplz`), so this is the estimator; it is
checked by the normalisation of every context's distribution (tests/test_ctc.py).

Words are the scorer's (wavlm_jax.data.vocab: upper case, punctuation dropped), so that the lexicon,
the language model and the references agree. Pure Python: fine up to a few million words (LibriSpeech's
960 h transcripts: minutes); use KenLM's lmplz for the 800M-word LibriSpeech LM corpus.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Iterable

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def _discount(counts: Iterable[int]) -> float:
  hist = collections.Counter(c for c in counts if c <= 2)
  n1, n2 = hist[1], hist[2]
  if n1 == 0 or n2 == 0:
    return 0.5
  return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)


class KneserNey:
  """An order-N interpolated Kneser-Ney model over sentences (lists of words)."""

  def __init__(self, sentences: Iterable[list[str]], order: int = 4):
    if order < 1:
      raise ValueError(f"order must be >= 1, got {order}")
    self.order = order
    raw = collections.Counter()  # every n-gram (n <= order) ending at a word or </s> (nothing predicts <s>)
    for words in sentences:
      s = [BOS] + list(words) + [EOS]
      for i in range(1, len(s)):
        for n in range(1, min(order, i + 1) + 1):
          raw[tuple(s[i - n + 1:i + 1])] += 1
    left = collections.Counter(gram[1:] for gram in raw if len(gram) > 1)  # distinct left extensions
    # Kneser-Ney's adjusted counts: raw for the highest order and for n-grams starting with <s> (which
    # have no left context); the number of distinct left extensions (continuation count) otherwise.
    self.counts: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
    for gram, c in raw.items():
      n = len(gram)
      self.counts[n][gram] = c if n == order or gram[0] == BOS else left[gram]
    self.vocab = sorted({g[0] for g in self.counts[1]})
    self._estimate()

  def _estimate(self):
    n_max = self.order
    self.discounts = [0.0] + [_discount(self.counts[n].values()) for n in range(1, n_max + 1)]
    # Context totals and types per order.
    totals = [collections.Counter() for _ in range(n_max + 1)]
    types = [collections.Counter() for _ in range(n_max + 1)]
    for n in range(1, n_max + 1):
      for gram, c in self.counts[n].items():
        totals[n][gram[:-1]] += c
        types[n][gram[:-1]] += 1
    words = set(self.vocab) | {UNK}
    self.prob: list[dict[tuple, float]] = [dict() for _ in range(n_max + 1)]
    self.backoff: list[dict[tuple, float]] = [dict() for _ in range(n_max + 1)]
    self.gamma: list[dict[tuple, float]] = [dict() for _ in range(n_max + 1)]
    for n in range(1, n_max + 1):
      d = self.discounts[n]
      for ctx, total in totals[n].items():
        self.gamma[n][ctx] = d * types[n][ctx] / total
    uniform = 1.0 / len(words)
    g0 = self.gamma[1].get((), 1.0)
    for w in words:
      c = self.counts[1].get((w,), 0)
      self.prob[1][(w,)] = max(c - self.discounts[1], 0) / max(totals[1][()], 1) + g0 * uniform
    for n in range(2, n_max + 1):
      d = self.discounts[n]
      for gram, c in self.counts[n].items():
        ctx = gram[:-1]
        self.prob[n][gram] = max(c - d, 0) / totals[n][ctx] + self.gamma[n][ctx] * self.p(gram[1:])
    for n in range(1, n_max):
      for ctx, g in self.gamma[n + 1].items():
        self.backoff[n][ctx] = g

  def p(self, gram: tuple) -> float:
    """P(gram[-1] | gram[:-1]) by backoff (what KenLM computes from the ARPA file)."""
    n = len(gram)
    if n == 1:
      return self.prob[1].get(gram, self.prob[1][(UNK,)])
    if gram in self.prob[n]:
      return self.prob[n][gram]
    return self.backoff[n - 1].get(gram[:-1], 1.0) * self.p(gram[1:])

  def write(self, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unigrams = sorted(set(self.prob[1]) | {(BOS,)})
    orders = [unigrams] + [sorted(self.prob[n]) for n in range(2, self.order + 1)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      f.write("\\data\\\n")
      for n, grams in enumerate(orders, 1):
        f.write(f"ngram {n}={len(grams)}\n")
      for n, grams in enumerate(orders, 1):
        f.write(f"\n\\{n}-grams:\n")
        for gram in grams:
          logp = -99.0 if gram == (BOS,) else math.log10(self.prob[n][gram])
          line = f"{logp:.6f}\t{' '.join(gram)}"
          if n < self.order and gram in self.backoff[n]:
            line += f"\t{math.log10(self.backoff[n][gram]):.6f}"
          f.write(line + "\n")
      f.write("\n\\end\\\n")
    tmp.replace(path)
    return path


def dataset_sentences(dataset: str, split: str, data_dir: str = "", key: str = "text"):
  """The word sequences of a prepared dataset's transcripts, normalised as the scorer's references (for
  the `phonemes` field: the phoneme sequences, a phone LM's sentences)."""
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders, paths
  from wavlm_jax.data.vocab import Vocabulary

  root = paths.data_dir(data_dir)
  if dataset.startswith("espeak_speech"):
    builders.prepare(dataset, root)
  source = tfds.data_source(dataset, split=split, data_dir=root)
  normal = Vocabulary("phonemes" if key == "phonemes" else "letters", ())
  for i in range(len(source)):
    ex = source[i]
    if key not in ex:
      raise KeyError(f"dataset {dataset!r} split {split!r} has no field {key!r} (fields: {sorted(ex)})")
    value = ex[key]
    yield normal.reference(value.decode("utf-8") if isinstance(value, bytes) else str(value)).split()


def main(argv=None) -> int:
  import argparse
  import sys

  p = argparse.ArgumentParser(prog="python -m wavlm_jax.decoding.ngram",
                              description="Estimate an interpolated Kneser-Ney n-gram LM and write it as ARPA.")
  p.add_argument("--dataset", default="", help="a prepared dataset whose transcripts to use")
  p.add_argument("--split", default="train")
  p.add_argument("--data-dir", default="")
  p.add_argument("--field", default="text", help="the transcript field")
  p.add_argument("--text", default="", help="or a text file, one sentence per line")
  p.add_argument("--order", type=int, default=4)
  p.add_argument("--output", required=True)
  args = p.parse_args(argv)
  if bool(args.dataset) == bool(args.text):
    p.error("give exactly one of --dataset and --text")
  if args.text:
    from wavlm_jax.data.vocab import Vocabulary
    letters = Vocabulary("letters", ())
    lines = Path(args.text).read_text(encoding="utf-8").splitlines()
    sentences = [letters.reference(line).split() for line in lines if line.strip()]
  else:
    sentences = list(dataset_sentences(args.dataset, args.split, args.data_dir, args.field))
  lm = KneserNey(sentences, order=args.order)
  path = lm.write(args.output)
  sizes = ", ".join(f"{len(lm.prob[n]) + (n == 1)} {n}-grams" for n in range(1, lm.order + 1))
  print(f"{path}: {len(sentences)} sentences, {sum(len(s) for s in sentences)} words; {sizes}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
