"""Input pipeline throughput: audio-seconds produced per second on one host core, mixing off, utterance
mixing on, noise mixing on, at 4 s and 15.6 s crops, on the embedded eSpeak corpus.

    .venv/bin/python bench/input_pipeline.py [--dataset espeak_speech/small] [--out bench/results/input_pipeline.json]

Target (issue 3): >= 1,000 audio-seconds/s per core with mixing on. A TPU v5e host feeding WavLM Base
needs roughly 70 per core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from wavlm_jax import data  # noqa: E402
from wavlm_jax.data import builders  # noqa: E402

MODES = {"mixing off": dict(mix_prob=0.0), "utterance mixing": dict(mix_prob=1.0),
         "noise mixing": dict(mix_prob=1.0, noise_prob=1.0)}


def measure(dataset: str, data_dir: str, crop: float, mode: dict, batch: int, batches: int) -> float:
  cfg = data.data_config(dataset=dataset, data_dir=data_dir, crop_seconds=crop, min_seconds=1.0, batch_size=batch,
                         num_threads=1, prefetch=1, **mode)
  it = data.create_iterator(cfg, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  start, audio = time.perf_counter(), 0.0
  for _ in range(batches):
    audio += float(np.sum(~next(it)["padding_mask"])) / 16000  # real audio only (duration batches: all of it)
  elapsed = time.perf_counter() - start
  return audio / elapsed


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="espeak_speech/small")
  p.add_argument("--data-dir", default="", help="where the dataset is (built if absent); default: a temporary "
                 "directory, so the benchmark reads no state from earlier runs")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--batches", type=int, default=40)
  p.add_argument("--out", default="bench/results/input_pipeline.json")
  args = p.parse_args()
  scratch = tempfile.TemporaryDirectory()
  args.data_dir = args.data_dir or scratch.name
  builders.prepare(args.dataset, args.data_dir)
  rows = []
  for crop in (4.0, 15.6):
    for name, mode in MODES.items():
      rate = measure(args.dataset, args.data_dir, crop, mode, args.batch, args.batches)
      rows.append({"crop_seconds": crop, "mode": name, "audio_seconds_per_second_per_core": round(rate, 1)})
  print(f"\ninput pipeline, {args.dataset}, batch {args.batch}, 1 thread (one core)")
  print(f"{'crop':>6}  {'mode':<18} {'audio-s/s/core':>15}")
  for r in rows:
    print(f"{r['crop_seconds']:>5.1f}s  {r['mode']:<18} {r['audio_seconds_per_second_per_core']:>15,.0f}")
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({"dataset": args.dataset, "batch": args.batch, "rows": rows}, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
