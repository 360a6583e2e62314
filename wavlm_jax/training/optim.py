"""Optimiser: AdamW with fairseq's HuBERT/WavLM settings (docs/objectives.md#hyper-parameters), linear
warmup then linear decay to zero, global-norm clipping. Durations are steps (>= 1) or fractions of the run (< 1)."""

from __future__ import annotations

import optax


def steps_of(duration: float, total_steps: int) -> int:
  """A duration in steps: values below 1 are fractions of `total_steps`."""
  if duration < 0:
    raise ValueError(f"durations must be >= 0, got {duration}")
  return int(round(duration * total_steps)) if duration < 1 else int(duration)


def schedule(cfg, total_steps: int) -> optax.Schedule:
  warmup = steps_of(cfg.warmup, total_steps)
  return optax.join_schedules([
      optax.linear_schedule(0.0, cfg.peak_lr, max(warmup, 1)),
      optax.linear_schedule(cfg.peak_lr, cfg.end_lr, max(total_steps - warmup, 1)),
  ], [warmup])


def optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """Clipping then AdamW (decoupled weight decay on every parameter, as fairseq's `adam`)."""
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay),
  )
