"""Target quality against a frame-level reference (HuBERT paper §IV-E, SPEC.md §13): phone purity,
cluster purity, PNMI, entropies, mutual information, per-utterance length differences, and the cluster
histogram; plus a PNG of the histogram and the phone-cluster co-occurrence matrix."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

_EPS = 1e-8


@dataclasses.dataclass
class Quality:
  phone_purity: float
  cluster_purity: float
  pnmi: float
  h_ref: float  # bits
  h_hyp: float
  mutual_information: float
  frames: int
  utterances: int
  frame_diff_total: int  # sum over utterances of |len(ref) - len(hyp)|: a label-rate mistake detector
  frame_diff_max: int
  clusters_used: int
  largest_cluster_fraction: float
  histogram_entropy: float  # bits, of the cluster histogram

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class QualityAccumulator:
  """Accumulates the joint counts of (reference phone, cluster) utterance by utterance."""

  def __init__(self, num_phones: int, num_clusters: int):
    self.joint = np.zeros((num_phones, num_clusters), np.int64)
    self.utterances = 0
    self.diff_total = 0
    self.diff_max = 0

  def add(self, reference: np.ndarray, hypothesis: np.ndarray) -> None:
    """Both sequences at the same frame rate; truncated to the shorter one, the difference counted."""
    n = min(len(reference), len(hypothesis))
    diff = abs(len(reference) - len(hypothesis))
    self.diff_total += diff
    self.diff_max = max(self.diff_max, diff)
    self.utterances += 1
    np.add.at(self.joint, (np.asarray(reference[:n]), np.asarray(hypothesis[:n])), 1)

  def result(self) -> Quality:
    return quality_from_joint(self.joint, self.utterances, self.diff_total, self.diff_max)


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-np.sum(p * np.log2(p)))


def quality_from_joint(joint: np.ndarray, utterances: int = 0, diff_total: int = 0, diff_max: int = 0) -> Quality:
  total = joint.sum()
  if total == 0:
    raise ValueError("no frames to score")
  p = joint / total
  py, pz = p.sum(axis=1), p.sum(axis=0)
  h_y, h_z = _entropy(py), _entropy(pz)
  nz = p > 0
  mi = float(np.sum(p[nz] * np.log2(p[nz] / (py[:, None] * pz[None, :])[nz])))
  phone_purity = float(np.sum(p.max(axis=0)))  # sum_z p(z) max_y p(y|z)
  cluster_purity = float(np.sum(p.max(axis=1)))  # sum_y p(y) max_z p(z|y)
  counts = joint.sum(axis=0)
  return Quality(phone_purity=phone_purity, cluster_purity=cluster_purity, pnmi=mi / max(h_y, _EPS),
                 h_ref=h_y, h_hyp=h_z, mutual_information=mi, frames=int(total), utterances=utterances,
                 frame_diff_total=int(diff_total), frame_diff_max=int(diff_max),
                 clusters_used=int(np.sum(counts > 0)), largest_cluster_fraction=float(counts.max() / total),
                 histogram_entropy=h_z)


def degenerate_warnings(histogram: np.ndarray, k: int) -> list[str]:
  """Loud warnings for a dictionary that wastes its capacity (SPEC/issue 4 thresholds)."""
  total = histogram.sum()
  warnings = []
  if total == 0:
    return ["no frames were labelled"]
  used = int(np.sum(histogram > 0))
  if histogram.max() > 0.5 * total:
    warnings.append(f"cluster {int(histogram.argmax())} holds {histogram.max() / total:.0%} of all frames (> 50%)")
  if used < k / 2:
    warnings.append(f"only {used} of {k} clusters are used (< k/2)")
  return warnings


def format_table(q: Quality, title: str = "") -> str:
  rows = [("phone purity", f"{q.phone_purity:.4f}"), ("cluster purity", f"{q.cluster_purity:.4f}"),
          ("PNMI", f"{q.pnmi:.4f}"), ("H(ref) bits", f"{q.h_ref:.3f}"), ("H(hyp) bits", f"{q.h_hyp:.3f}"),
          ("MI bits", f"{q.mutual_information:.3f}"), ("frames", f"{q.frames:,}"),
          ("utterances", f"{q.utterances:,}"), ("frame diff total / max", f"{q.frame_diff_total} / {q.frame_diff_max}"),
          ("clusters used", f"{q.clusters_used}"), ("largest cluster", f"{q.largest_cluster_fraction:.1%}")]
  width = max(len(r[0]) for r in rows)
  lines = [title] if title else []
  lines += [f"  {name:<{width}}  {value}" for name, value in rows]
  return "\n".join(lines)


def save_report(path: str | Path, q: Quality, joint: np.ndarray, phone_names: list[str] | None = None,
                warnings: list[str] | None = None, extra: dict | None = None) -> tuple[Path, Path]:
  """Writes PATH.json (metrics, histogram, warnings) and PATH.png (histogram + co-occurrence)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  histogram = joint.sum(axis=0)
  json_path = path.with_suffix(".json")
  json_path.write_text(json.dumps({**q.as_dict(), "cluster_histogram": histogram.tolist(),
                                   "warnings": warnings or [], **(extra or {})}, indent=2))
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 1.4]})
  order = np.argsort(-histogram)
  ax1.bar(np.arange(len(histogram)), histogram[order] / max(histogram.sum(), 1), width=1.0)
  ax1.set(title=f"cluster histogram (sorted), entropy {q.histogram_entropy:.2f} bits", xlabel="cluster rank",
          ylabel="fraction of frames")
  # Co-occurrence p(cluster | phone), phones by frequency, clusters by their majority phone.
  phones = np.argsort(-joint.sum(axis=1))
  phones = phones[joint.sum(axis=1)[phones] > 0]
  majority = np.argmax(joint, axis=0)
  rank = {ph: r for r, ph in enumerate(phones)}
  clusters = sorted(np.flatnonzero(histogram), key=lambda c: (rank.get(majority[c], len(rank)), -histogram[c]))
  cond = joint[np.ix_(phones, clusters)] / np.maximum(joint[phones].sum(axis=1, keepdims=True), 1)
  ax2.imshow(cond, aspect="auto", cmap="magma", interpolation="nearest")
  ax2.set(title=f"p(cluster | phone), PNMI {q.pnmi:.3f}", xlabel="cluster (grouped by majority phone)",
          ylabel="phone")
  if phone_names is not None and len(phones) <= 80:
    ax2.set_yticks(range(len(phones)), [phone_names[p] for p in phones], fontsize=6)
  fig.tight_layout()
  png_path = path.with_suffix(".png")
  fig.savefig(png_path, dpi=110)
  plt.close(fig)
  return json_path, png_path
