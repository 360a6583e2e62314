"""PNG figures of probing results: the learned layer weights per task, and per-layer probe curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _figure(figsize):
  """A figure and its axis drawn off-screen: matplotlib's Figure without pyplot, so that writing a PNG
  never changes the caller's backend (a notebook keeps showing its own plots) and needs no display."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=figsize)
  return fig, fig.subplots()


def layer_weights(weights: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
  """Grouped bars: for each task, the softmax weight of every hidden state (0 = the Transformer's input)."""
  tasks = list(weights)
  states = max((len(w) for w in weights.values()), default=0)
  fig, ax = _figure((max(6.0, 0.45 * states * max(len(tasks), 1) + 3), 3.5))
  width = 0.8 / max(len(tasks), 1)
  for k, task in enumerate(tasks):
    w = list(weights[task])
    ax.bar([i - 0.4 + width * (k + 0.5) for i in range(len(w))], w, width=width, label=task)
  if states:
    ax.axhline(1.0 / states, color="grey", lw=0.8, ls="--", label="uniform")
  ax.set_xticks(range(states))
  ax.set_xlabel("hidden state (0 = input of layer 1)")
  ax.set_ylabel("softmax weight")
  ax.set_title(title or "learned layer weights")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return Path(path)


def layer_curves(curves: Mapping[str, Sequence[float | None]], path: str | Path, title: str = "",
                 chance: Mapping[str, float] | None = None) -> Path:
  """One line per measure (accuracy, PNMI, ...) over the hidden states; dashed lines at chance levels."""
  fig, ax = _figure((7.5, 3.8))
  states = max((len(v) for v in curves.values()), default=0)
  for name, values in curves.items():
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    line, = ax.plot([i for i, _ in pts], [v for _, v in pts], marker="o", label=name)
    if chance and name in chance:
      ax.axhline(chance[name], color=line.get_color(), lw=0.8, ls="--", label=f"{name}: chance")
  ax.set_xticks(range(states))
  ax.set_xlabel("hidden state (0 = input of layer 1)")
  ax.set_ylabel("score")
  ax.set_ylim(0, 1)
  ax.set_title(title or "layer-wise probes")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return Path(path)
