"""Deterministic sentences for the embedded corpus: English from a built-in word list, other languages
as pseudo-words built from that language's letters (eSpeak reads them with its own rules)."""

from __future__ import annotations

import numpy as np

_ENGLISH = """
a about above across after again against air all almost along also always among an and animal another
answer any around as ask at away back be because become been before began begin behind being below best
better between big bird black blue boat body book both boy bring brother brown build but by call came can
car carry cat change children city close cold come could country cover cross cut dark day deep did
different do does dog done door down draw dream during each early earth east eat end enough even evening
ever every eye face fall family far farm fast father feel feet few field find fire first fish five floor
fly follow food foot for form found four free friend from front full game garden gave get girl give glass
go gold good got great green ground group grow had half hand happy hard has have he head hear heard heart
help her here high hill him his hold home horse hot hour house how hundred idea if important in inside
into is island it its just keep kind king knew know land large last late laugh learn leave left less let
letter life light like line list listen little live long look love low made make man many map mark may me
mean men might mile milk mind minute miss money moon more morning most mother mountain move much music must
my name near need never new next night no north not nothing now number ocean of off often old on once one
only open or order other our out over own page paper part pass people perhaps picture piece place plain
plant play point poor present problem pull put question quick quiet rain ran reach read ready real red
remember rest ride right river road rock room round run said same saw say school sea second see seem self
sentence set several shall she ship short should show side silver simple since sing sister sit six sky
sleep slow small snow so some something song soon sound south speak special spring stand star start stay
step still stone stop story street strong study such summer sun sure table take talk tall teacher tell
ten than that the their them then there these they thing think third this those though thought three
through time to today together told too took top toward town tree true try turn two under until up upon
us use very voice walk wall want warm was watch water way we weather week well went were west what wheel
when where which while white who whole why wide wild will wind window winter with without woman wonder
wood word work world would write year yellow yes yet you young
""".split()

# Letters each language's eSpeak rules read naturally, as (onsets, vowels, codas).
_SYLLABLES = {
    "de": ("b d f g h k l m n p r s t w z sch st br tr kl".split(), "a e i o u au ei ie ä ö ü".split(),
           "n r s t l m ch ng".split()),
    "fr": ("b d f g l m n p r s t v ch j br tr pl".split(), "a e i o u ou an on in é è eau".split(),
           "r l s n".split()),
    "es": ("b c d f g l m n p r s t v ll ch br tr pl".split(), "a e i o u ia ue".split(), "n s r l".split()),
    "it": ("b c d f g l m n p r s t v ch gl br tr".split(), "a e i o u ia".split(), "n r l".split()),
    "nl": ("b d f g h k l m n p r s t v w z sch".split(), "a e i o u aa ee oo ij ui".split(), "n r s t l k".split()),
}


def sentence(rng: np.random.Generator, language: str, min_words: int = 6, max_words: int = 22) -> str:
  """A random sentence of `language` drawn with `rng`."""
  n = int(rng.integers(min_words, max_words + 1))
  if language.startswith("en"):
    words = [_ENGLISH[i] for i in rng.integers(0, len(_ENGLISH), n)]
  else:
    onsets, vowels, codas = _SYLLABLES[language]
    words = []
    for _ in range(n):
      syllables = int(rng.integers(1, 4))
      word = ""
      for _ in range(syllables):
        word += onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
        if rng.random() < 0.3:
          word += codas[rng.integers(len(codas))]
      words.append(word)
  # Occasional commas give natural pauses.
  text = ""
  for i, w in enumerate(words):
    text += w + ("," if 0 < i < n - 1 and rng.random() < 0.1 else "") + " "
  return text.strip() + "."


LANGUAGES = ("en-us", "en-gb", "de", "fr", "es", "it", "nl")


def voice_language(language: str) -> str:
  return "en" if language == "en-gb" else language


def text_language(language: str) -> str:
  return "en" if language.startswith("en") else language
