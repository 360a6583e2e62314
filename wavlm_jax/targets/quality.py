"""Target quality (HuBERT paper §IV-E, docs/targets.md#target-quality-metrics), the one home of these computations.

Without a reference, from the labels alone: the cluster histogram, its entropy and perplexity, unused
clusters, the largest cluster's share, and whether each utterance's label count matches its audio length
at the label rate. Against a frame-level phone reference, in addition: phone purity, cluster purity, PNMI,
entropies, mutual information and reference/label length differences. Plus a PNG of the histogram (and of
the phone-cluster co-occurrence matrix when there is a reference)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from wavlm_jax import storage
from wavlm_jax.audio import label_count

_EPS = 1e-8
NO_ALIGNMENT = "PNMI, phone purity and cluster purity need a phone alignment; this dataset has none"
# Quality fields that only a reference gives; the rest of the report comes from the labels alone.
ALIGNMENT_FIELDS = ("phone_purity", "cluster_purity", "pnmi", "h_ref", "h_hyp", "mutual_information",
                    "frame_diff_total", "frame_diff_max")


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
    """The fields as a JSON-ready dict."""
    return dataclasses.asdict(self)


@dataclasses.dataclass
class CodeDistribution:
  """How a set of label sequences uses the k clusters, and whether their lengths match the audio."""
  num_clusters: int
  frames: int
  utterances: int
  histogram_entropy: float  # bits; log2(k) when every cluster is used equally
  perplexity: float  # 2 ** entropy: the number of equally used clusters with the same entropy
  clusters_used: int
  num_unused_clusters: int
  unused_clusters: list[int]
  largest_cluster: int  # -1 when there are no frames
  largest_cluster_fraction: float
  audio_frame_diff_total: int  # sum over utterances of |labels - frames expected from the audio length|
  audio_frame_diff_max: int
  cluster_histogram: list[int]

  def as_dict(self) -> dict:
    """The fields as a JSON-ready dict."""
    return dataclasses.asdict(self)


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-np.sum(p * np.log2(p)))


def code_distribution(histogram: np.ndarray, utterances: int = 0, audio_diff_total: int = 0,
                      audio_diff_max: int = 0) -> CodeDistribution:
  """The code-distribution figures of a cluster histogram (counts per cluster, length k)."""
  histogram = np.asarray(histogram, np.int64)
  total = int(histogram.sum())
  entropy = _entropy(histogram / total) if total else 0.0
  unused = np.flatnonzero(histogram == 0)
  return CodeDistribution(
      num_clusters=len(histogram), frames=total, utterances=int(utterances), histogram_entropy=entropy,
      perplexity=float(2.0 ** entropy), clusters_used=int(len(histogram) - len(unused)),
      num_unused_clusters=int(len(unused)), unused_clusters=unused.tolist(),
      largest_cluster=int(histogram.argmax()) if total else -1,
      largest_cluster_fraction=float(histogram.max() / total) if total else 0.0,
      audio_frame_diff_total=int(audio_diff_total), audio_frame_diff_max=int(audio_diff_max),
      cluster_histogram=histogram.tolist())


class CodeAccumulator:
  """Accumulates the cluster histogram of label sequences and their length agreement with the audio."""

  def __init__(self, num_clusters: int, label_rate: float):
    self.histogram = np.zeros(num_clusters, np.int64)
    self.label_rate = label_rate
    self.utterances = 0
    self.diff_total = 0
    self.diff_max = 0

  def add(self, labels: np.ndarray, num_samples: int, uid: str = "?") -> None:
    """One utterance (`uid`, named in errors): its labels and the number of audio samples they label."""
    labels = np.asarray(labels)
    k = len(self.histogram)
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
      raise ValueError(f"utterance {uid!r}: labels outside [0, {k}): min {labels.min()}, max {labels.max()}")
    self.histogram += np.bincount(labels, minlength=k)
    diff = abs(len(labels) - label_count(num_samples, self.label_rate))  # the pipeline's rounding
    self.diff_total += diff
    self.diff_max = max(self.diff_max, diff)
    self.utterances += 1

  def result(self) -> CodeDistribution:
    """The figures over everything added so far."""
    return code_distribution(self.histogram, self.utterances, self.diff_total, self.diff_max)


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
    """The metrics over everything added so far."""
    return quality_from_joint(self.joint, self.utterances, self.diff_total, self.diff_max)


def quality_from_joint(joint: np.ndarray, utterances: int = 0, diff_total: int = 0, diff_max: int = 0) -> Quality:
  """The metrics of a (phone, cluster) joint count matrix."""
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
  codes = code_distribution(joint.sum(axis=0))
  return Quality(phone_purity=phone_purity, cluster_purity=cluster_purity, pnmi=mi / max(h_y, _EPS),
                 h_ref=h_y, h_hyp=h_z, mutual_information=mi, frames=int(total), utterances=utterances,
                 frame_diff_total=int(diff_total), frame_diff_max=int(diff_max),
                 clusters_used=codes.clusters_used, largest_cluster_fraction=codes.largest_cluster_fraction,
                 histogram_entropy=codes.histogram_entropy)


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


def report_dict(codes: CodeDistribution, q: Quality | None = None, note: str = NO_ALIGNMENT) -> dict:
  """The report's figures: the code distribution always; the alignment metrics when there is a reference
  (`aligned_frames`: the frames scored against it), else None for them and `note` saying why."""
  out = {**codes.as_dict(), "phone_alignment": q is not None}
  if q is None:
    return {**out, **{name: None for name in ALIGNMENT_FIELDS}, "note": note}
  return {**out, **{name: getattr(q, name) for name in ALIGNMENT_FIELDS}, "aligned_frames": q.frames}


def _unused_text(codes: CodeDistribution, limit: int = 20) -> str:
  listed = ", ".join(map(str, codes.unused_clusters[:limit]))
  more = f", ... (+{codes.num_unused_clusters - limit})" if codes.num_unused_clusters > limit else ""
  return f"{codes.num_unused_clusters}" + (f" [{listed}{more}]" if codes.unused_clusters else "")


def format_table(codes: CodeDistribution, q: Quality | None = None, title: str = "", note: str = NO_ALIGNMENT) -> str:
  """The report as a two-column text table; without a reference, `note` says what is missing."""
  k = codes.num_clusters
  rows = [("frames", f"{codes.frames:,}"), ("utterances", f"{codes.utterances:,}"),
          ("clusters used", f"{codes.clusters_used} / {k}"), ("unused clusters", _unused_text(codes)),
          ("largest cluster", f"{codes.largest_cluster_fraction:.1%} (cluster {codes.largest_cluster})"),
          ("code entropy bits", f"{codes.histogram_entropy:.3f} (max {np.log2(max(k, 1)):.3f})"),
          ("code perplexity", f"{codes.perplexity:.1f}"),
          ("labels vs audio frames total / max", f"{codes.audio_frame_diff_total} / {codes.audio_frame_diff_max}")]
  if q is not None:
    rows += [("phone purity", f"{q.phone_purity:.4f}"), ("cluster purity", f"{q.cluster_purity:.4f}"),
             ("PNMI", f"{q.pnmi:.4f}"), ("H(ref) bits", f"{q.h_ref:.3f}"), ("H(hyp) bits", f"{q.h_hyp:.3f}"),
             ("MI bits", f"{q.mutual_information:.3f}"), ("aligned frames", f"{q.frames:,}"),
             ("frame diff total / max", f"{q.frame_diff_total} / {q.frame_diff_max}")]
  width = max(len(r[0]) for r in rows)
  lines = [title] if title else []
  lines += [f"  {name:<{width}}  {value}" for name, value in rows]
  if q is None:
    lines.append(f"  {note}")
  return "\n".join(lines)


def save_report(path: str | os.PathLike, codes: CodeDistribution, q: Quality | None = None, joint: np.ndarray | None = None,
                phone_names: list[str] | None = None, warnings: list[str] | None = None, extra: dict | None = None,
                note: str = NO_ALIGNMENT) -> tuple[os.PathLike, os.PathLike]:
  """Writes PATH.json (`report_dict`, warnings, `extra`, and with `joint` the (phone, cluster) counts as
  `phone_cluster_counts` with `phone_names`) and PATH.png (the histogram, plus the co-occurrence matrix
  when `joint` is given). PATH may be a URL."""
  from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) is left alone

  path = storage.path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  json_path = path.with_suffix(".json")
  counts = {} if joint is None else {"phone_names": phone_names, "phone_cluster_counts": np.asarray(joint).tolist()}
  json_path.write_text(json.dumps({**report_dict(codes, q, note), "warnings": warnings or [], **(extra or {}),
                                   **counts}, indent=2))
  if joint is None:
    fig = Figure(figsize=(8, 5))
    ax1 = fig.subplots()
  else:
    fig = Figure(figsize=(14, 5))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
  histogram = np.asarray(codes.cluster_histogram)
  order = np.argsort(-histogram)
  ax1.bar(np.arange(len(histogram)), histogram[order] / max(histogram.sum(), 1), width=1.0)
  ax1.set(title=f"cluster histogram (sorted): entropy {codes.histogram_entropy:.2f} bits, perplexity "
          f"{codes.perplexity:.1f}, {codes.num_unused_clusters} unused", xlabel="cluster rank",
          ylabel="fraction of frames")
  if joint is not None:
    plot_cooccurrence(ax2, joint, phone_names, q.pnmi if q is not None else None)
  fig.tight_layout()
  png_path = path.with_suffix(".png")
  with png_path.open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  return json_path, png_path


def plot_cooccurrence(ax, joint: np.ndarray, phone_names: list[str] | None = None, pnmi: float | None = None,
                      title: str = "p(cluster | phone)") -> None:
  """Draws p(cluster | phone) from the (phone, cluster) counts on a matplotlib axis: phones by
  frequency, clusters grouped by their majority phone, so that a good codebook shows a diagonal band."""
  joint = np.asarray(joint)
  used = joint.sum(axis=0)
  phones = np.argsort(-joint.sum(axis=1))
  phones = phones[joint.sum(axis=1)[phones] > 0]
  majority = np.argmax(joint, axis=0)
  rank = {ph: r for r, ph in enumerate(phones)}
  clusters = sorted(np.flatnonzero(used), key=lambda c: (rank.get(majority[c], len(rank)), -used[c]))
  cond = joint[np.ix_(phones, clusters)] / np.maximum(joint[phones].sum(axis=1, keepdims=True), 1)
  ax.imshow(cond, aspect="auto", cmap="magma", interpolation="nearest")
  ax.set(title=title + (f", PNMI {pnmi:.3f}" if pnmi is not None else ""),
         xlabel="cluster (grouped by majority phone)", ylabel="phone")
  if phone_names is not None and len(phones) <= 80:
    ax.set_yticks(range(len(phones)), [phone_names[p] for p in phones], fontsize=6)
