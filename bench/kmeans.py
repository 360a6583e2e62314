"""k-means: this JAX implementation against scikit-learn's MiniBatchKMeans with fairseq's settings
(k-means++, batch 10,000, n_init 20, max_iter 100, tol 0, max_no_improvement 100, reassignment 0), on
the same features, side by side in one run: wall time and final inertia on all points.

    .venv/bin/python bench/kmeans.py [--points 200000] [--out bench/results/kmeans.json]

Features: 39-d MFCC of the embedded corpus (espeak_speech/small), and a 768-d "hidden-like" stand-in
(a fixed random 2-layer lift of 5 stacked MFCC frames; a real WavLM Base forward over 200k frames is
beyond this 2-core machine). Also checks that assignment gives identical labels on 1, 2, 4 and 8
(fake) devices and reports the per-device throughput.
JAX is timed twice on the same data: the first call in the process (XLA compilation included, ~1-2 s
on this machine; a persistent compilation cache removes it for later processes) and once compiled.
Target (issue 4): >= 5x faster than scikit-learn at equal or lower inertia.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mfcc_features(points: int, data_dir: str) -> np.ndarray:
  import tensorflow_datasets as tfds

  from wavlm_jax.data import builders
  from wavlm_jax.targets import features

  builders.prepare("espeak_speech/small", data_dir)
  src = tfds.data_source("espeak_speech/small", split="train", data_dir=data_dir)
  from wavlm_jax.targets import kmeans

  stream = (features.mfcc(np.asarray(src[i]["audio"], np.float32) / 32768.0) for i in range(len(src)))
  x = kmeans.take_rows(stream, points)
  if len(x) < points:
    raise SystemExit(f"only {len(x)} frames available")
  return x


def hidden_like(mfcc: np.ndarray, dim: int = 768, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  z = (mfcc - mfcc.mean(0)) / (mfcc.std(0) + 1e-6)
  ctx = np.concatenate([np.roll(z, s, axis=0) for s in range(-2, 3)], axis=1)
  h = np.tanh(ctx @ rng.standard_normal((ctx.shape[1], dim)) / np.sqrt(ctx.shape[1]))
  return (h @ rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)


def run_sklearn(x, k, seed):
  from sklearn.cluster import MiniBatchKMeans

  km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                       max_no_improvement=100, n_init=20, reassignment_ratio=0.0, init_size=None, random_state=seed)
  start = time.perf_counter()
  km.fit(x)
  return time.perf_counter() - start, km.cluster_centers_


def run_jax(x, k, seed):
  """(first-call seconds, compile included; seconds once compiled; centroids; full-data iterations)."""
  from wavlm_jax.targets import kmeans

  start = time.perf_counter()
  kmeans.fit(x, k, seed=seed, n_init=1, max_iter=100, tol=1e-4)
  cold = time.perf_counter() - start
  start = time.perf_counter()
  km = kmeans.fit(x, k, seed=seed, n_init=1, max_iter=100, tol=1e-4)
  return cold, time.perf_counter() - start, km.centroids, km.iterations


def assignment_scaling(x_path: str, centroids_path: str) -> list[dict]:
  rows = []
  for devices in (1, 2, 4, 8):
    code = (f"import os; os.environ['XLA_FLAGS']='--xla_force_host_platform_device_count={devices}'\n"
            "import time, hashlib, numpy as np\nfrom wavlm_jax.targets import kmeans\n"
            f"x=np.load('{x_path}'); c=np.load('{centroids_path}')\nkmeans.assign(x[:1000], c)\n"
            "t=time.perf_counter(); lab=kmeans.assign(x, c); t=time.perf_counter()-t\n"
            "print(t, hashlib.sha256(lab.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    rows.append({"devices": devices, "seconds": float(out[0]), "labels_sha256": out[1][:16]})
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--points", type=int, default=200_000)
  p.add_argument("--data-dir", default="", help="where espeak_speech/small is (built if absent); default: a "
                 "temporary directory, so the benchmark reads no state from earlier runs")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sets", default="mfcc,hidden", help="which feature sets to run: mfcc, hidden")
  p.add_argument("--out", default="bench/results/kmeans.json")
  args = p.parse_args()

  from wavlm_jax.targets import kmeans

  with tempfile.TemporaryDirectory() as scratch:
    mfcc = mfcc_features(args.points, args.data_dir or scratch)
  hidden = hidden_like(mfcc)
  sets = [s for s in [("MFCC 39-d, k=100", mfcc, 100, "mfcc"), ("hidden-like 768-d, k=500", hidden, 500, "hidden")]
          if s[3] in args.sets.split(",")]
  rows = []
  for name, x, k, _ in sets:
    t_sk, c_sk = run_sklearn(x, k, args.seed)
    t_cold, t_jx, c_jx, iters = run_jax(x, k, args.seed)
    i_sk, i_jx = kmeans.inertia(x, c_sk), kmeans.inertia(x, c_jx)
    rows.append({"features": name, "points": len(x), "sklearn_seconds": round(t_sk, 2), "jax_seconds": round(t_jx, 2),
                 "jax_first_call_seconds": round(t_cold, 2), "speedup": round(t_sk / t_jx, 2),
                 "speedup_first_call": round(t_sk / t_cold, 2), "sklearn_inertia": i_sk, "jax_inertia": i_jx,
                 "inertia_ratio_jax_over_sklearn": round(i_jx / i_sk, 4), "jax_full_data_iterations": iters})
    print(f"{name}: sklearn {t_sk:.1f}s inertia {i_sk:.5g} | jax {t_jx:.2f}s ({t_cold:.2f}s with compilation) "
          f"inertia {i_jx:.5g}", flush=True)

  tmp = Path(args.out).parent
  tmp.mkdir(parents=True, exist_ok=True)
  np.save(tmp / "_x.npy", hidden)
  np.save(tmp / "_c.npy", kmeans.fit(hidden[:20000], 500, n_init=1, max_iter=5).centroids)
  scaling = assignment_scaling(str(tmp / "_x.npy"), str(tmp / "_c.npy"))
  (tmp / "_x.npy").unlink()
  (tmp / "_c.npy").unlink()

  print(f"\n{'features':<26} {'sklearn s':>10} {'jax s':>8} {'speedup':>8} {'jax s, 1st call':>16} {'speedup':>8} "
        f"{'inertia jax/sklearn':>20}")
  for r in rows:
    print(f"{r['features']:<26} {r['sklearn_seconds']:>10.1f} {r['jax_seconds']:>8.2f} {r['speedup']:>7.1f}x "
          f"{r['jax_first_call_seconds']:>16.2f} {r['speedup_first_call']:>7.1f}x "
          f"{r['inertia_ratio_jax_over_sklearn']:>20.4f}")
  print(f"\nassignment of {args.points:,} x 768 to 500 centroids on fake CPU devices (same 2 cores):")
  for r in scaling:
    print(f"  {r['devices']} device(s): {r['seconds']:.2f}s  labels {r['labels_sha256']}")
  identical = len({r["labels_sha256"] for r in scaling}) == 1
  print(f"  labels identical across device counts: {identical}")
  Path(args.out).write_text(json.dumps({"rows": rows, "assignment_scaling": scaling,
                                        "labels_identical_across_devices": identical}, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
