"""Training observability: TensorBoard through clu plus `metrics.jsonl` in the workdir (host 0 only),
and a console line with ETA."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from wavlm_jax import audio


class Writer:
  """Scalars to TensorBoard (clu) and metrics.jsonl; audio examples to TensorBoard."""

  def __init__(self, workdir: str | Path, enabled: bool):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      from clu import metric_writers

      workdir = Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._tb = metric_writers.create_default_writer(str(workdir / "tensorboard"), asynchronous=True)
      self._jsonl = open(workdir / "metrics.jsonl", "a", buffering=1)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    self._tb.write_scalars(step, clean)
    self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")

  def audio(self, step: int, clips: Mapping[str, np.ndarray], sample_rate: int = audio.SAMPLE_RATE) -> None:
    if self.enabled and clips:
      self._tb.write_audios(step, {k: np.asarray(v)[None, :, None] for k, v in clips.items()}, sample_rate=sample_rate)

  def close(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()


class Progress:
  """A console line per log period: step, the `fields` ((label, metric key, format) triples),
  throughput and ETA."""

  FIELDS = (("loss", "loss", ".4f"), ("acc_m", "acc_masked", ".3f"), ("acc_u", "acc_unmasked", ".3f"),
            ("lr", "learning_rate", ".2e"))

  def __init__(self, total_steps: int, first_step: int, fields=FIELDS):
    self.total, self.first, self.start, self.fields = total_steps, first_step, time.time(), fields

  def line(self, step: int, m: Mapping[str, float]) -> str:
    done = step - self.first
    elapsed = time.time() - self.start
    eta = elapsed / max(done, 1) * (self.total - step)
    values = "  ".join(f"{label} {m.get(key, float('nan')):{fmt}}" for label, key, fmt in self.fields)
    return (f"step {step:>7}/{self.total}  {values}  {m.get('audio_seconds_per_second', 0):,.0f} audio-s/s  "
            f"mfu {m.get('mfu', 0):.1%}  eta {time.strftime('%H:%M:%S', time.gmtime(eta))}")
