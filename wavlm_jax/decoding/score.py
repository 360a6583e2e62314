"""Error rates with jiwer: WER (words), CER (characters, spaces included, as jiwer counts them) and PER
(phones: space-separated symbols scored as words)."""

from __future__ import annotations

from typing import Sequence


def error_rates(references: Sequence[str], hypotheses: Sequence[str], kind: str) -> dict[str, float]:
  """{"wer", "cer"} for letters, {"per"} for phonemes, plus the counts behind them. Empty references are
  skipped (jiwer cannot score them), and counted."""
  import jiwer

  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
  pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
  out = {"utterances": len(pairs), "empty_references": len(references) - len(pairs)}
  if not pairs:
    return out
  refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
  words = jiwer.process_words(refs, hyps)
  errors = words.substitutions + words.deletions + words.insertions
  units = sum(len(r.split()) for r in refs)
  if kind == "phonemes":
    out |= {"per": errors / max(units, 1), "phones": units, "errors": errors}
  else:
    out |= {"wer": errors / max(units, 1), "words": units, "errors": errors,
            "cer": jiwer.cer(refs, hyps)}
  return out


def headline(kind: str) -> str:
  """The error rate a vocabulary kind is judged by."""
  return "per" if kind == "phonemes" else "wer"
