"""CTC vocabularies: letters (LibriSpeech style, `|` between words) or phonemes (the embedded corpus'
inventory), built from a split's transcripts and saved with the model.

Index 0 is the CTC blank, spelled `<pad>` as in transformers (whose `pad_token_id` is the blank); then
`<s>`, `</s>`, `<unk>` (fairseq's dictionary specials, in transformers' order), then the symbols, most
frequent first (fairseq's `ltr` dictionaries are ordered so).

    vocab = Vocabulary.build(transcripts, kind="letters")
    vocab.encode("HELLO WORLD")  -> int32 ids of H E L L O | W O R L D
    vocab.decode(ids)            -> "HELLO WORLD"
    vocab.save(DIR); Vocabulary.load(DIR)   # DIR/ctc_vocab.json (+ transformers' vocab.json on export)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

from wavlm_jax import storage

BLANK, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (BLANK, BOS, EOS, UNK)
WORD_DELIMITER = "|"
FILE = "ctc_vocab.json"
KINDS = {"letters": "text", "phonemes": "phonemes"}  # kind -> the dataset field its transcripts come from


def _letters(text: str) -> list[str]:
  """Upper-case letters and apostrophes, words joined by `|` (LibriSpeech's `ltr` targets). Accents are
  kept (other languages' letters are symbols too); other punctuation is dropped."""
  text = unicodedata.normalize("NFC", text).upper()
  words = [re.sub(r"[^\w']", "", w).replace("_", "") for w in text.split()]
  words = [w for w in words if w]
  return list(WORD_DELIMITER.join(words))


def _phonemes(text: str) -> list[str]:
  return text.split()


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  kind: str  # "letters" | "phonemes"
  symbols: tuple[str, ...]  # everything after the specials

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"vocabulary kind {self.kind!r}: one of {sorted(KINDS)}")

  # ---- building and storing ----------------------------------------------------------------------
  @classmethod
  def build(cls, transcripts: Iterable[str], kind: str) -> "Vocabulary":
    counts = collections.Counter()
    split = _letters if kind == "letters" else _phonemes
    for t in transcripts:
      counts.update(split(t))
    if not counts:
      raise ValueError(f"no {kind} in the transcripts: cannot build a vocabulary")
    symbols = sorted(counts, key=lambda s: (-counts[s], s))
    if kind == "letters" and WORD_DELIMITER not in symbols:
      symbols.append(WORD_DELIMITER)  # single-word transcripts: decoding still needs it
    return cls(kind, tuple(symbols))

  def save(self, directory: str | os.PathLike) -> os.PathLike:
    path = storage.path(directory) / FILE
    path.write_text(json.dumps({"kind": self.kind, "tokens": list(self.tokens)}, ensure_ascii=False, indent=1))
    return path

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "Vocabulary":
    path = storage.path(directory) / FILE
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no CTC vocabulary; is {directory} a fine-tuned model directory?")
    try:
      data = json.loads(path.read_text())
      tokens = tuple(data["tokens"])
      kind = data["kind"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: not a CTC vocabulary ({e!r})") from None
    if tokens[:len(SPECIALS)] != SPECIALS:
      raise ValueError(f"{path}: the first tokens must be {SPECIALS}, got {tokens[:len(SPECIALS)]}")
    return cls(kind, tokens[len(SPECIALS):])

  def hf_vocab(self) -> dict[str, int]:
    """transformers' `vocab.json` (Wav2Vec2CTCTokenizer): token -> id."""
    return {t: i for i, t in enumerate(self.tokens)}

  # ---- ids -------------------------------------------------------------------------------------
  @property
  def tokens(self) -> tuple[str, ...]:
    return SPECIALS + self.symbols

  def __len__(self) -> int:
    return len(self.tokens)

  @property
  def blank(self) -> int:
    return 0

  @property
  def unk(self) -> int:
    return 3

  @property
  def word_delimiter(self) -> int | None:
    return self.tokens.index(WORD_DELIMITER) if WORD_DELIMITER in self.tokens else None

  @property
  def field(self) -> str:
    """The dataset field holding this kind of transcript."""
    return KINDS[self.kind]

  def units(self, transcript: str) -> list[str]:
    """The transcript as vocabulary symbols (before lookup)."""
    return _letters(transcript) if self.kind == "letters" else _phonemes(transcript)

  def encode(self, transcript: str) -> np.ndarray:
    index = self._index()
    return np.array([index.get(u, self.unk) for u in self.units(transcript)], np.int32)

  def _index(self) -> dict[str, int]:
    cached = self.__dict__.get("_cached_index")
    if cached is None:
      cached = {t: i for i, t in enumerate(self.tokens)}
      object.__setattr__(self, "_cached_index", cached)
    return cached

  def decode(self, ids: Sequence[int]) -> str:
    """Ids (already collapsed, blanks removed) -> text: words for letters, space-separated phones."""
    toks = [self.tokens[i] for i in ids if len(SPECIALS) <= i < len(self.tokens)]  # specials dropped, as
    # transformers' tokenizers decode with skip_special_tokens
    if self.kind == "letters":
      return " ".join(w for w in "".join(toks).split(WORD_DELIMITER) if w)
    return " ".join(toks)

  def reference(self, transcript: str) -> str:
    """The transcript as the scorer compares it (the normalisation decode() produces)."""
    units = self.units(transcript)
    if self.kind == "letters":
      return " ".join(w for w in "".join(units).split(WORD_DELIMITER) if w)
    return " ".join(units)
