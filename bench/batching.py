"""Pretraining batches on a LibriSpeech-like length distribution: fixed crop-or-pad batches (before)
against duration batches from length buckets (now): padding share, audio cropped away, masked fraction of
full rows, and real audio-seconds per second of the whole jitted train step.

    .venv/bin/python bench/batching.py                       # tiny model card, ~3 minutes on 2 cores
    .venv/bin/python bench/batching.py --card wavlm_base --batch 2 --steps 2

Lengths: a synthetic LibriSpeech-like distribution (1-35 s; most utterances 12-17 s, a quarter shorter,
a few long ones; mean ~13.9 s), 20,000 utterances. "cropped": the share of the audio of all utterances
of at least --min-seconds that batches never see (beyond the 15.6 s crop, cropped to a bucket, or in a
bucket too small for one batch). "masked (full rows)": before, with one row as short as the 1 % quantile
in the batch (fairseq's rule trims every row to that row's count). No audio is read: the plans come from the lengths,
and the step runs on random waveforms of each shape (its time does not depend on the values). The step's
audio-seconds/s is the epoch's real audio over the summed step times of the epoch's batches (each shape
timed as the median of --steps runs after compilation).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from wavlm_jax import data, train  # noqa: E402
from wavlm_jax.data import buckets  # noqa: E402
from wavlm_jax.data.labels import LabelSpec  # noqa: E402
from wavlm_jax.training import mesh as mesh_lib  # noqa: E402
from wavlm_jax.models import masking  # noqa: E402
from wavlm_jax.models.config import model_card  # noqa: E402

RATE = 16000


def librispeech_like(n: int, seed: int = 0) -> np.ndarray:
  """Utterance lengths (samples): 70 % around 14.5-16.5 s, 25 % spread over 1-14 s, 5 % 17-35 s."""
  rng = np.random.default_rng(seed)
  kind = rng.choice(3, n, p=[0.70, 0.25, 0.05])
  seconds = np.where(kind == 0, rng.normal(15.3, 1.0, n),
                     np.where(kind == 1, rng.uniform(1.0, 14.0, n), rng.uniform(17.0, 35.0, n)))
  return (np.clip(seconds, 1.0, 35.0) * RATE).astype(np.int64)


def fixed_batches(lengths, crop, min_samples, rows):
  """The old pipeline: every utterance of at least min_samples cropped or padded to `crop`."""
  use = lengths[lengths >= min_samples]
  real = np.minimum(use, crop)
  count = len(use) // rows
  return [(rows, crop)] * count, float(np.sum(real[:count * rows])) / RATE, 1.0 - np.mean(real) / crop


def duration_batches(lengths, cfg):
  plan = buckets.make_plan(lengths, cfg, batch_multiple=1)
  shapes = [(plan.batch(i)[0].rows, plan.batch(i)[0].samples) for i in range(plan.batches_per_epoch)]
  return shapes, sum(r * s for r, s in shapes) / RATE, plan


def masked_fraction_of_full_rows(frames: int, short_frames: int, rows: int, equalize_all: bool,
                                 trials: int = 20) -> float:
  """Mean masked fraction of the full rows of a batch whose last row has `short_frames` valid frames
  (p 0.8, l 10). equalize_all: the rule before, fairseq's: every row trimmed to the batch's smallest count."""
  sizes = np.full(rows, frames)
  sizes[-1] = short_frames
  valid = np.arange(frames)[None, :] < sizes[:, None]
  fn = jax.jit(lambda k: masking.span_mask(k, (rows, frames), 0.8, 10, 2, valid, equalize=not equalize_all))
  fractions = []
  for t in range(trials):
    mask = np.asarray(fn(jax.random.key(t)))
    fractions.append(mask.sum(1).min() / frames if equalize_all else mask[:-1].mean())
  return float(np.mean(fractions))


def time_shapes(card: str, shapes, steps: int) -> dict:
  """Median seconds of the jitted train step per (rows, samples)."""
  from configs import common

  model = model_card(card, num_label_classes=100, dropout=0.0, attention_dropout=0.0, layerdrop=0.0)
  cfg = common.run_config(model, data.data_config(), total_steps=1000, seed=0)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  rules = mesh_lib.rules_for(cfg.sharding)
  labels = LabelSpec(50.0, 100)
  run = train.build(cfg, mesh, rules, labels)
  bs = NamedSharding(mesh, P(mesh_lib.BATCH))
  state = run.init()
  out = {}
  rng = np.random.default_rng(0)
  for rows, samples in sorted(set(shapes)):
    abstract = train.abstract_batch(rows, samples, labels, bs)
    step = run.step.lower(run.abstract_state, abstract).compile()
    batch = {"audio": jax.device_put(rng.standard_normal((rows, samples)).astype(np.float32) * 0.1, bs),
             "padding_mask": jax.device_put(np.zeros((rows, samples), bool), bs),
             "labels": jax.device_put(rng.integers(0, 100, abstract["labels"].shape).astype(np.int32), bs)}
    times = []
    for _ in range(steps + 1):
      start = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics["loss"])
      times.append(time.perf_counter() - start)
    out[(rows, samples)] = float(np.median(times[1:]))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--card", default="tiny")
  p.add_argument("--batch", type=int, default=8, help="rows at the longest crop (data.batch_size)")
  p.add_argument("--crop", type=float, default=15.6)
  p.add_argument("--min-seconds", type=float, default=2.0)
  p.add_argument("--num-buckets", type=int, default=8)
  p.add_argument("--utterances", type=int, default=20000)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--out", default="bench/results/batching.json")
  args = p.parse_args()

  lengths = librispeech_like(args.utterances)
  crop, min_samples = int(args.crop * RATE), int(args.min_seconds * RATE)
  cfg = data.data_config(crop_seconds=args.crop, min_seconds=args.min_seconds, batch_size=args.batch,
                         num_buckets=args.num_buckets)
  fixed_shapes, fixed_audio, fixed_pad = fixed_batches(lengths, crop, min_samples, args.batch)
  dur_shapes, dur_audio, plan = duration_batches(lengths, cfg)
  times = time_shapes(args.card, fixed_shapes[:1] + dur_shapes, args.steps)
  fixed_time = times[fixed_shapes[0]] * len(fixed_shapes)
  dur_time = sum(times[s] for s in dur_shapes)
  frames = (crop - 400) // 320 + 1
  shortest = (int(np.quantile(lengths, 0.01)) - 400) // 320 + 1
  rows = [
      {"batching": "fixed (before)", "shapes": 1, "padding_share": fixed_pad,
       "cropped_share": 1.0 - np.sum(np.minimum(lengths[lengths >= min_samples], crop)) / np.sum(
           lengths[lengths >= min_samples]),
       "masked_fraction_full_rows": masked_fraction_of_full_rows(frames, shortest, args.batch, equalize_all=True),
       "audio_seconds_per_second": fixed_audio / fixed_time},
      {"batching": "duration (now)", "shapes": len(plan.buckets), "padding_share": 0.0,
       "cropped_share": plan.stats()["cropped_share"],
       "masked_fraction_full_rows": masked_fraction_of_full_rows(frames, frames, args.batch, equalize_all=False),
       "audio_seconds_per_second": dur_audio / dur_time},
  ]
  print(f"lengths: {len(lengths)} utterances, mean {lengths.mean() / RATE:.1f} s, 1/50/99 % quantiles "
        + " / ".join(f"{np.quantile(lengths, q) / RATE:.1f}" for q in (0.01, 0.5, 0.99)) + " s")
  print(f"buckets: {json.dumps(plan.stats())}")
  print(f"{'batching':<16} {'shapes':>6} {'padding':>8} {'cropped':>8} {'masked (full rows)':>19} {'audio-s/s':>10}")
  for r in rows:
    print(f"{r['batching']:<16} {r['shapes']:>6} {r['padding_share']:>8.1%} {r['cropped_share']:>8.1%} "
          f"{r['masked_fraction_full_rows']:>19.1%} {r['audio_seconds_per_second']:>10.1f}")
  ratio = rows[1]["audio_seconds_per_second"] / rows[0]["audio_seconds_per_second"]
  print(f"real audio-seconds/s, duration / fixed: {ratio:.2f}x")
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "plan": plan.stats(),
                                        "step_seconds": {f"{r}x{s}": t for (r, s), t in times.items()}}, indent=2))


if __name__ == "__main__":
  main()
