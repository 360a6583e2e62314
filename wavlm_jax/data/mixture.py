"""Weighted mixtures of corpora (`data.mixture`): WavLM Base+/Large's 94k hours are three corpora read
as one stream (docs/data.md#mixtures).

    data.mixture = (("librilight_dir/large", "train", 0.64),
                    ("gigaspeech_dir/xl", "train", 0.11),
                    ("voxpopuli_dir/en", "train", 0.25, {"max_seconds": 20.0}))

Each component is (dataset, split, weight) or (dataset, split, weight, options), options being
`min_seconds`, `max_seconds` and `labels` (its own label store; else `data.labels`, which must then hold
every component's utterances). A weight of 0 everywhere means "by hours": each component's share is its
usable audio. Every component is planned on its own (`buckets.Plan`) over bucket lengths shared by all
of them (chosen from the components' length histograms, each sampled by its weight), so the mixture has
the same few batch shapes as one corpus, and no batch carries padding. Grain's `MapDataset.mix`
interleaves the components' batches by the weights with exact index arithmetic: batch i of the mixture
is batch j of component k for a (k, j) that the weights and i alone decide, so every host reads the
same global batches and a saved position resumes exactly. Each batch carries its component's index
(`component`), from which the trainer logs each component's share of the audio seen.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from wavlm_jax.audio import SAMPLE_RATE

OPTIONS = ("min_seconds", "max_seconds", "labels")


@dataclasses.dataclass(frozen=True)
class Component:
  dataset: str
  split: str
  weight: float  # 0: by hours
  min_seconds: float | None = None  # None: data.min_seconds
  max_seconds: float | None = None  # None: no limit (longer utterances are cropped, as always)
  labels: str = ""  # "": data.labels

  @property
  def name(self) -> str:
    """A short name for metrics: the dataset, and the split unless it is train."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_")
    return base if self.split == "train" else f"{base}_{self.split}"


def components(mixture) -> list[Component]:
  """`data.mixture` read and checked; every error names data.mixture and the entry."""
  out = []
  for i, entry in enumerate(mixture):
    where = f"data.mixture[{i}]"
    entry = tuple(entry)
    if len(entry) not in (3, 4) or not isinstance(entry[0], str) or not isinstance(entry[1], str):
      raise ValueError(f"{where}={entry!r}: expected (dataset, split, weight) or (dataset, split, weight, options)")
    options = dict(entry[3]) if len(entry) == 4 else {}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
      raise ValueError(f"{where}: unknown option(s) {unknown}; a component takes {list(OPTIONS)}")
    try:
      weight = float(entry[2])
    except (TypeError, ValueError):
      raise ValueError(f"{where}: weight {entry[2]!r} is not a number") from None
    if weight < 0 or not np.isfinite(weight):
      raise ValueError(f"{where}: weight {weight} must be finite and >= 0 (0 everywhere: by hours)")
    out.append(Component(entry[0], entry[1], weight, options.get("min_seconds"), options.get("max_seconds"),
                         str(options.get("labels", ""))))
  if not out:
    raise ValueError("data.mixture is empty")
  weights = [c.weight for c in out]
  if any(w > 0 for w in weights) and not all(w > 0 for w in weights):
    raise ValueError(f"data.mixture weights {weights}: give every component a weight > 0, or 0 to all (by hours)")
  names = [c.name for c in out]
  if len(set(names)) != len(names):
    raise ValueError(f"data.mixture names a dataset and split twice: {names}")
  return out


def usable(lengths: np.ndarray, component: Component, min_seconds: float) -> np.ndarray:
  """Which utterances of a component a plan may use: at least its min_seconds, at most its max_seconds."""
  low = component.min_seconds if component.min_seconds is not None else min_seconds
  keep = lengths >= int(round(low * SAMPLE_RATE))
  if component.max_seconds is not None:
    keep &= lengths <= int(round(component.max_seconds * SAMPLE_RATE))
  return keep


def resolve_weights(comps: list[Component], lengths: list[np.ndarray], keep: list[np.ndarray]) -> list[float]:
  """The components' weights normalised to sum 1; all 0: by hours of usable audio."""
  if all(c.weight > 0 for c in comps):
    raw = [c.weight for c in comps]
  else:
    raw = [float(np.sum(n[k])) / SAMPLE_RATE / 3600 for n, k in zip(lengths, keep)]
    empty = [c.name for c, w in zip(comps, raw) if w <= 0]
    if empty:
      raise ValueError(f"data.mixture: component(s) {empty} have no usable audio")
  total = sum(raw)
  return [w / total for w in raw]


def pooled_lengths(lengths: list[np.ndarray], keep: list[np.ndarray], weights: list[float], seed: int,
                   size: int = 100_000) -> np.ndarray:
  """A sample of utterance lengths in which each component appears by its weight (with replacement,
  seeded): the histogram the shared bucket lengths are chosen from."""
  rng = np.random.default_rng([seed, 0x4D1C])
  parts = [rng.choice(n[k], size=max(1, int(round(w * size)))) for n, k, w in zip(lengths, keep, weights) if k.any()]
  return np.concatenate(parts)


class MixturePlan:
  """The components' plans and the weights that interleave them; what the iterator's position means."""

  def __init__(self, comps: list[Component], plans: list, weights: list[float]):
    self.components, self.plans, self.weights = comps, plans, weights
    self.names = [c.name for c in comps]

  @property
  def batches_per_epoch(self) -> int:
    """Batches before the component that runs out first (by its weight) starts a new epoch."""
    return int(min(p.batches_per_epoch / w for p, w in zip(self.plans, self.weights)))

  def shapes(self) -> list[tuple[int, int]]:
    return sorted({s for p in self.plans for s in p.shapes()}, key=lambda s: s[1])

  def fingerprint(self) -> dict:
    return {"mixture": [[c.dataset, c.split, round(w, 9)] for c, w in zip(self.components, self.weights)],
            "components": [p.fingerprint() for p in self.plans]}

  def stats(self) -> dict:
    return {"weights": dict(zip(self.names, [round(w, 4) for w in self.weights])),
            "components": {n: p.stats() for n, p in zip(self.names, self.plans)}}


class Shares:
  """Each component's share of the audio this process has trained on (since the run or its resumption
  started): the trainer's `data/share/NAME` metrics."""

  def __init__(self, names: list[str]):
    self.names = names
    self.seconds = np.zeros(len(names))

  def add(self, component: int, audio_seconds: float) -> dict:
    self.seconds[component] += audio_seconds
    total = self.seconds.sum()
    return {f"data/share/{n}": float(s / total) for n, s in zip(self.names, self.seconds)} if total > 0 else {}
