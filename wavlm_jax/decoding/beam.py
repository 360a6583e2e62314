"""CTC beam search through flashlight-text: a lexicon-constrained decoder with a word n-gram language
model (KenLM, ARPA or binary) for letter vocabularies, as fairseq's HuBERT recipe decodes (4-gram,
lm_weight 2, word_score -1); for phoneme vocabularies a lexicon-free beam with a phone n-gram LM (its
words are the phonemes: `python -m wavlm_jax.decoding.ngram --field phonemes`); or a lexicon-free beam
without a language model for any vocabulary.

    decoder = BeamDecoder(vocab, lexicon_words, lm_path="lm.arpa", lm_weight=2.0, word_score=-1.0)
    texts = decoder.decode(log_probs, lengths)
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from wavlm_jax.data.vocab import UNK, WORD_DELIMITER, Vocabulary


def lm_words(path: str) -> list[str]:
  """The unigrams of an ARPA file (the lexicon of a word LM), specials left out."""
  words, inside = [], False
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if line.startswith("\\"):
        inside = line == "\\1-grams:"
        continue
      if inside and line:
        word = line.split()[1]
        if word not in ("<s>", "</s>", "<unk>"):
          words.append(word)
  if not words:
    raise ValueError(f"{path}: no unigrams found; is it an ARPA language model?")
  return words


def check_phone_lm(path: str, vocab) -> None:
  """Refuses a word LM given to a phoneme model: an ARPA file most of whose unigrams are not phonemes.
  (A KenLM binary cannot be read here and is taken as it is.)"""
  with open(path, "rb") as f:
    if not f.read(64).lstrip().startswith(b"\\data\\"):
      return
  words = lm_words(path)
  foreign = [w for w in words if w not in vocab.tokens]
  if len(foreign) > len(words) // 2:
    raise ValueError(f"{path}: {len(foreign)} of its {len(words)} unigrams are not phonemes of the model's "
                     f"vocabulary (e.g. {foreign[:3]}): a phoneme model needs a phone LM "
                     "(python -m wavlm_jax.decoding.ngram --field phonemes)")


class BeamDecoder:

  def __init__(self, vocab: Vocabulary, words: Iterable[str] = (), *, lm_path: str | None = None,
               lm_weight: float = 2.0, word_score: float = -1.0, unk_score: float = -math.inf,
               beam_size: int = 50, beam_size_token: int | None = None, beam_threshold: float = 25.0):
    from flashlight.lib.text import decoder as fl
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary, create_word_dict

    self.vocab = vocab
    tokens = Dictionary()
    for t in vocab.tokens:
      tokens.add_entry(t)
    blank = vocab.blank
    beam_size_token = beam_size_token or len(vocab)
    if lm_path is not None and vocab.kind == "phonemes" and not words:
      # Token-level LM: KenLM maps our token ids to its vocabulary through the token dictionary.
      check_phone_lm(str(lm_path), vocab)
      options = fl.LexiconFreeDecoderOptions(beam_size=beam_size, beam_size_token=beam_size_token,
                                             beam_threshold=beam_threshold, lm_weight=lm_weight, sil_score=0.0,
                                             log_add=False, criterion_type=fl.CriterionType.CTC)
      self._decoder = fl.LexiconFreeDecoder(options, KenLM(str(lm_path), tokens), blank, blank, [])
      self._words, self.lexicon_size = None, 0
    elif lm_path is not None or words:
      if vocab.kind != "letters":
        raise ValueError("a lexicon and word language model need a letter vocabulary (with `|` between words); "
                         f"this one is {vocab.kind}")
      lexicon = {}
      for w in sorted({vocab.reference(w) for w in words} - {""}):  # the scorer's spelling (upper case)
        spelling = vocab.units(w)
        if spelling and all(u in vocab.tokens for u in spelling):
          lexicon[w] = [spelling + [WORD_DELIMITER]]
      if not lexicon:
        raise ValueError("the lexicon is empty: no word is spelled with this vocabulary's letters")
      word_dict = create_word_dict({w: [[w]] for w in [*lexicon, UNK]})  # flashlight wants <unk> in it
      lm = KenLM(str(lm_path), word_dict) if lm_path is not None else fl.ZeroLM()
      sil = vocab.word_delimiter
      trie = fl.Trie(len(vocab), sil)
      start = lm.start(False)
      for word, spellings in lexicon.items():
        index = word_dict.get_index(word)
        _, score = lm.score(start, index)
        for spelling in spellings:
          trie.insert([tokens.get_index(u) for u in spelling], index, score)
      trie.smear(fl.SmearingMode.MAX)
      options = fl.LexiconDecoderOptions(beam_size=beam_size, beam_size_token=beam_size_token,
                                         beam_threshold=beam_threshold, lm_weight=lm_weight, word_score=word_score,
                                         unk_score=unk_score, sil_score=0.0, log_add=False,
                                         criterion_type=fl.CriterionType.CTC)
      self._decoder = fl.LexiconDecoder(options, trie, lm, sil, blank, word_dict.get_index(UNK), [], False)
      self._words, self.lexicon_size = word_dict, len(lexicon)
    else:
      options = fl.LexiconFreeDecoderOptions(beam_size=beam_size, beam_size_token=beam_size_token,
                                             beam_threshold=beam_threshold, lm_weight=0.0, sil_score=0.0,
                                             log_add=False, criterion_type=fl.CriterionType.CTC)
      sil = vocab.word_delimiter if vocab.word_delimiter is not None else blank
      self._decoder = fl.LexiconFreeDecoder(options, fl.ZeroLM(), sil, blank, [])
      self._words, self.lexicon_size = None, 0

  def decode(self, log_probs: np.ndarray, lengths: Sequence[int]) -> list[str]:
    """log_probs (B, T, V) log-softmax emissions; lengths (B,) valid frames -> the best text of each."""
    from wavlm_jax.decoding.greedy import collapse

    out = []
    for emissions, n in zip(np.asarray(log_probs, np.float32), lengths):
      e = np.ascontiguousarray(emissions[:int(n)])
      if len(e) == 0:
        out.append("")
        continue
      best = self._decoder.decode(e.ctypes.data, e.shape[0], e.shape[1])[0]
      if self._words is not None:
        out.append(" ".join(self._words.get_entry(w) for w in best.words if w >= 0))
      else:
        out.append(self.vocab.decode(collapse(np.asarray(best.tokens), self.vocab.blank)))
    return out
