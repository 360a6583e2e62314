"""One process of a multi-host k-means run (tests/test_multihost_targets.py). JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID name the job (a single process without them); argv: points.npy
init.npy out_prefix. Each process takes its share of the points and writes the results of Lloyd from the
given centroids, of `fit`, of `fit_streaming` and its own points' labels to out_prefix-<process id>.npz."""

import sys

import numpy as np



def main(points_path: str, init_path: str, out_prefix: str) -> None:
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from configs import common
  from wavlm_jax import cli
  from wavlm_jax.targets import kmeans

  cli.initialize_distributed(common.distributed_config())
  points, init = np.load(points_path), np.load(init_path)
  mine = points[jax.process_index()::jax.process_count()]
  mesh = kmeans._mesh()
  xs, ws = kmeans._shard_points(mine, mesh)
  c0 = jax.device_put(init, NamedSharding(mesh, P()))
  lloyd, lloyd_inertia, _ = kmeans._lloyd(xs, ws, c0, 10, 0.0)
  fitted = kmeans.fit(mine, len(init), seed=3)
  chunks = lambda: (mine[i:i + 1500] for i in range(0, len(mine), 1500))
  streamed = kmeans.fit_streaming(chunks, len(init), seed=3, max_iter=10, init_points=4000)
  np.savez(f"{out_prefix}-{jax.process_index()}.npz", lloyd=np.asarray(lloyd), lloyd_inertia=lloyd_inertia, fit=fitted.centroids,
           fit_inertia=fitted.inertia, fit_points=fitted.provenance["points"], stream=streamed.centroids,
           stream_inertia=streamed.inertia, labels=kmeans.assign(mine, fitted.centroids),
           hosts=jax.process_count(), devices=jax.device_count())


if __name__ == "__main__":
  main(*sys.argv[1:])
