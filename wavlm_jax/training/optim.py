"""Optimiser: AdamW with fairseq's HuBERT/WavLM settings (docs/objectives.md#hyper-parameters), linear
warmup then linear decay to zero, global-norm clipping. Durations are steps (>= 1) or fractions of the run (< 1)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

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


# ================================================================================================
# Fine-tuning (docs/downstream.md#ctc-fine-tuning): fairseq's tri-stage schedule and frozen groups
# ================================================================================================
def tri_stage(peak_lr: float, total_steps: int, *, warmup: float = 0, hold: float = 0, decay: float = 0,
              phase_ratio=(), init_lr_scale: float = 0.01, final_lr_scale: float = 0.05) -> optax.Schedule:
  """fairseq's `tri_stage`: linear warmup from init_lr_scale x peak, hold at peak, exponential decay
  peak x exp(-ln(1 / final_lr_scale) / decay x t) for `decay` steps, then constant final_lr_scale x peak.
  Stage lengths are steps (>= 1) or fractions of the run (< 1); `phase_ratio` (three fractions of
  total_steps) replaces them, as fairseq's option of that name."""
  import jax.numpy as jnp

  if phase_ratio:
    if len(phase_ratio) != 3 or abs(sum(phase_ratio) - 1) > 1e-6:
      raise ValueError(f"phase_ratio must be three fractions summing to 1, got {tuple(phase_ratio)}")
    w, h, d = (int(total_steps * r) for r in phase_ratio)
  else:
    w, h, d = (steps_of(x, total_steps) for x in (warmup, hold, decay))
  init_lr, final_lr = init_lr_scale * peak_lr, final_lr_scale * peak_lr
  rate = (peak_lr - init_lr) / w if w else 0.0
  k = -math.log(final_lr_scale) / d if d else 0.0

  def schedule(count):
    n = jnp.asarray(count, jnp.float32)
    return jnp.where(n < w, init_lr + rate * n,
                     jnp.where(n < w + h, peak_lr,
                               jnp.where(n < w + h + d, peak_lr * jnp.exp(-k * (n - w - h)), final_lr)))

  return schedule


class FrozenUntilState(NamedTuple):
  count: Any  # updates seen, frozen or not
  inner: Any


def frozen_until(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
  """`inner` for updates >= `steps`; before that, zero updates and `inner`'s state left untouched (a
  frozen parameter gets no optimizer step at all, not a zero-gradient Adam step: torch's Adam skips
  parameters without gradients, so their moments and bias correction start at the unfreeze)."""
  import jax
  import jax.numpy as jnp

  def init(params):
    return FrozenUntilState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    def frozen():
      return jax.tree.map(lambda u: u * 0, updates), state.inner

    def live():
      return inner.update(updates, state.inner, params)

    new_updates, new_inner = jax.lax.cond(state.count < steps, frozen, live)
    return new_updates, FrozenUntilState(state.count + 1, new_inner)

  return optax.GradientTransformation(init, update)


FROZEN, ENCODER, HEAD = "frozen", "encoder", "head"


def finetune_optimizer(cfg, total_steps: int, group_of) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam per parameter group under one tri-stage schedule (the global step): `head` always trains,
  `encoder` from update `cfg.freeze_steps`, `frozen` (the CNN when feature_grad_mult is 0) never.
  `group_of(path)` names a parameter's group from its "/"-joined path."""
  import jax

  schedule = tri_stage(cfg.peak_lr, total_steps, warmup=cfg.warmup, hold=cfg.hold, decay=cfg.decay,
                       phase_ratio=tuple(cfg.phase_ratio), init_lr_scale=cfg.init_lr_scale,
                       final_lr_scale=cfg.final_lr_scale)

  def adam():
    return optax.chain(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
                       optax.add_decayed_weights(cfg.weight_decay) if cfg.weight_decay else optax.identity())

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: group_of("/".join(str(getattr(k, "key", k)) for k in path)), params)

  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
      optax.multi_transform({HEAD: adam(), ENCODER: frozen_until(adam(), cfg.freeze_steps),
                             FROZEN: optax.set_to_zero()}, labels),
      optax.scale_by_learning_rate(schedule),
  )
  return tx, schedule
