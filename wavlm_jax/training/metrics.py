"""Training observability: TensorBoard through clu plus `metrics.jsonl` in the workdir (host 0 only),
and a console line with ETA. A workdir on a bucket gets both through a local mirror (`storage.Mirror`),
uploaded every minute and when the writer closes."""

from __future__ import annotations

import json
import time
import os
from typing import Mapping

import numpy as np

from wavlm_jax import audio, storage


class Writer:
  """Scalars to TensorBoard (clu) and metrics.jsonl; audio examples to TensorBoard."""

  def __init__(self, workdir: str | os.PathLike, enabled: bool, *, sync_seconds: float = 60.0):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    self._mirror = None
    if enabled:
      from clu import metric_writers

      if storage.is_url(workdir):
        self._mirror = storage.Mirror(workdir, resume=("metrics.jsonl",), every_seconds=sync_seconds)
        root = self._mirror.local
      else:
        root = storage.path(workdir)
        root.mkdir(parents=True, exist_ok=True)
      self._tb = metric_writers.create_default_writer(os.fspath(root / "tensorboard"), asynchronous=True)
      self._jsonl = open(root / "metrics.jsonl", "a", buffering=1)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    self._tb.write_scalars(step, clean)
    self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
    if self._mirror is not None and self._mirror.due():
      self._tb.flush()
      self._mirror.sync()

  def audio(self, step: int, clips: Mapping[str, np.ndarray], sample_rate: int = audio.SAMPLE_RATE) -> None:
    if self.enabled and clips:
      self._tb.write_audios(step, {k: np.asarray(v)[None, :, None] for k, v in clips.items()}, sample_rate=sample_rate)

  def close(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()
      if self._mirror is not None:
        self._mirror.close()


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
