"""k-means in JAX, data-parallel over all devices (and hosts).

Points are sharded along the batch axis over a 1-D "data" mesh; assignment runs where the points are
and the per-cluster sums and counts are reduced across devices by XLA. Fitting is k-means++
initialisation, then full Lloyd iterations (exact, not mini-batch); several initialisations keep the
lowest inertia. Empty clusters are re-seeded with the points farthest from their centroids. For data
larger than memory, `fit_streaming` runs Lloyd over a re-iterable stream of chunks, one pass per
iteration, so the points are never all in host memory. Everything is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@dataclasses.dataclass
class KMeans:
  centroids: np.ndarray  # (k, d) float32
  inertia: float  # sum of squared distances of the fitted points to their centroid
  iterations: int
  provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def k(self) -> int:
    return self.centroids.shape[0]

  def save(self, path: str | Path) -> Path:
    """Writes PATH.npz (centroids) and PATH.json (provenance, inertia)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".npz"), centroids=self.centroids)
    meta = {"k": self.k, "dim": int(self.centroids.shape[1]), "inertia": self.inertia,
            "iterations": self.iterations, "provenance": self.provenance}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path

  @classmethod
  def load(cls, path: str | Path) -> "KMeans":
    path = Path(path)
    npz, meta = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.is_file() or not meta.is_file():
      raise FileNotFoundError(f"{path}: expected {npz.name} and {meta.name} (written by KMeans.save)")
    m = json.loads(meta.read_text())
    return cls(np.load(npz)["centroids"], m["inertia"], m["iterations"], m.get("provenance", {}))

  def assign(self, x: np.ndarray) -> np.ndarray:
    return assign(x, self.centroids)


def _mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


def _shard_points(x: np.ndarray, mesh: Mesh):
  """Pads x to a multiple of the device count; returns (sharded points, sharded validity weights)."""
  n = len(x)
  d = mesh.devices.size
  padded = -(-n // d) * d
  xp = np.zeros((padded, x.shape[1]), np.float32)
  xp[:n] = x
  w = np.zeros(padded, np.float32)
  w[:n] = 1.0
  sharding = NamedSharding(mesh, P("data"))
  return jax.device_put(xp, sharding), jax.device_put(w, sharding)


def _sq_distances(x, c):
  """(n, k) squared distances, as ||x||^2 - 2 x.c + ||c||^2 (one matmul)."""
  x2 = jnp.sum(x * x, axis=1, keepdims=True)
  c2 = jnp.sum(c * c, axis=1)
  return jnp.maximum(x2 - 2.0 * jnp.dot(x, c.T, precision=jax.lax.Precision.HIGHEST) + c2, 0.0)


@jax.jit
def _assign(x, c):
  # argmin_c ||x - c||^2 = argmin_c (||c||^2 - 2 x.c): the per-row ||x||^2 only enters the distance.
  s = jnp.sum(c * c, axis=1) - 2.0 * jnp.dot(x, c.T, precision=jax.lax.Precision.HIGHEST)
  labels = jnp.argmin(s, axis=1)
  best = jnp.take_along_axis(s, labels[:, None], axis=1)[:, 0]
  return labels.astype(jnp.int32), jnp.maximum(best + jnp.sum(x * x, axis=1), 0.0)


@jax.jit
def _stats(x, w, c):
  """Per-cluster weighted sums and counts, the weighted inertia, and per-point distances."""
  labels, dist = _assign(x, c)
  k = c.shape[0]
  # Segment sums cost O(n d), a one-hot matmul O(n k d) (as much as the distances themselves).
  sums = jax.ops.segment_sum(x * w[:, None], labels, num_segments=k)
  counts = jax.ops.segment_sum(w, labels, num_segments=k)
  return sums, counts, jnp.sum(dist * w), dist * w


def _update(c, sums, counts, x, far_dist):
  """New centroids; empty clusters take the points farthest from their centroids."""
  k = c.shape[0]
  new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)
  empty = counts <= 0

  def reseed(new):
    _, far = jax.lax.top_k(far_dist, k)
    slot = jnp.cumsum(empty) - 1  # the j-th empty cluster takes the j-th farthest point
    return jnp.where(empty[:, None], x[far[jnp.clip(slot, 0, k - 1)]], new)

  return jax.lax.cond(jnp.any(empty), reseed, lambda new: new, new)


@jax.jit
def _lloyd_step(x, w, c):
  sums, counts, inertia, dist = _stats(x, w, c)
  return _update(c, sums, counts, x, dist), inertia, jnp.sum(counts <= 0)


def kmeans_plus_plus(x, w, k: int, key, trials: int | None = None) -> jax.Array:
  """Greedy k-means++ seeding on sharded points x with weights w (0 = padding): each new centre is the
  best of `trials` (default 2 + ln k, as scikit-learn) D^2-sampled candidates."""
  trials = trials or 2 + int(np.log(k))

  @jax.jit
  def run(x, w, key):
    key, first = jax.random.split(key)
    i0 = jax.random.categorical(first, jnp.log(w))
    c = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[i0])
    d = jnp.sum((x - x[i0]) ** 2, axis=1)

    def body(j, carry):
      c, d, key = carry
      key, sub = jax.random.split(key)
      # D^2 sampling by inverting the cumulative distribution (cheaper than Gumbel noise over n points).
      cdf = jnp.cumsum(d * w)
      u = jax.random.uniform(sub, (trials,)) * cdf[-1]
      cand = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), x.shape[0] - 1)
      new_d = jnp.minimum(d[None, :], _sq_distances(x, x[cand]).T)  # (trials, n)
      best = jnp.argmin(jnp.sum(new_d * w[None, :], axis=1))
      return c.at[j].set(x[cand[best]]), new_d[best], key

    c, _, _ = jax.lax.fori_loop(1, k, body, (c, d, key))
    return c

  return run(x, w, key)


def fit(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 3, max_iter: int = 100, tol: float = 1e-6,
        init_size: int | None = None, provenance: dict | None = None,
        log: Callable[[str], None] | None = None) -> KMeans:
  """Fits k-means to in-memory points x (n, d): best of `n_init` k-means++ + Lloyd runs. The seeding
  runs on a random sample of `init_size` points (default max(30,000, 20 k), as scikit-learn's
  MiniBatchKMeans seeds on a sample); Lloyd then uses every point."""
  x = np.asarray(x, np.float32)
  if len(x) < k:
    raise ValueError(f"{len(x)} points cannot make {k} clusters")
  mesh = _mesh()
  xs, ws = _shard_points(x, mesh)
  init_size = min(len(x), init_size or max(30_000, 20 * k))
  best = None
  for run in range(n_init):
    sample = np.sort(np.random.default_rng([seed, run]).permutation(len(x))[:init_size])
    c = kmeans_plus_plus(*_shard_points(x[sample], mesh), k, jax.random.key(seed * 1000 + run))
    previous = np.inf
    for it in range(1, max_iter + 1):
      c, inertia, _ = _lloyd_step(xs, ws, c)
      inertia = float(inertia)
      if np.isfinite(previous) and previous - inertia <= tol * previous:
        break
      previous = inertia
    final = float(_stats(xs, ws, c)[2])
    if log:
      log(f"k-means init {run + 1}/{n_init}: inertia {final:.6g} after {it} iterations")
    if best is None or final < best.inertia:
      best = KMeans(np.asarray(c), final, it, dict(provenance or {}))
  best.provenance.update(points=len(x), seed=seed, n_init=n_init, devices=mesh.devices.size)
  return best


def fit_streaming(chunks: Callable[[], Iterable[np.ndarray]], k: int, *, seed: int = 0, max_iter: int = 20,
                  tol: float = 1e-4, init_points: int = 100_000, provenance: dict | None = None,
                  log: Callable[[str], None] | None = None) -> KMeans:
  """Lloyd over a stream: `chunks()` returns a fresh iterable of (m, d) arrays on every call (one pass
  per iteration). Initialised by k-means++ on the first `init_points` points of the stream."""
  mesh = _mesh()
  head = take_rows(chunks(), init_points)
  if len(head) < k:
    raise ValueError(f"the stream has {len(head)} points, fewer than k={k}")
  c = kmeans_plus_plus(*_shard_points(head, mesh), k, jax.random.key(seed))
  previous = np.inf
  total = 0
  for it in range(1, max_iter + 1):
    sums = jnp.zeros_like(c)
    counts = jnp.zeros((k,), jnp.float32)
    inertia, total = 0.0, 0
    for chunk in chunks():
      xs, ws = _shard_points(np.asarray(chunk, np.float32), mesh)
      s, cnt, inn, _ = _stats(xs, ws, c)
      sums, counts, inertia, total = sums + s, counts + cnt, inertia + float(inn), total + len(chunk)
    # Empty clusters: re-seed from the initialisation sample's farthest points.
    hx, hw = _shard_points(head, mesh)
    _, _, _, far = _stats(hx, hw, c)
    c = _update(c, sums, counts, hx, far)
    if log:
      log(f"streaming k-means iteration {it}: inertia {inertia:.6g} over {total} points")
    if np.isfinite(previous) and previous - inertia <= tol * previous:
      break
    previous = inertia
  result = KMeans(np.asarray(c), inertia, it, dict(provenance or {}))
  result.provenance.update(points=total, seed=seed, streaming=True, devices=mesh.devices.size)
  return result


def take_rows(chunks: Iterable[np.ndarray], n: int) -> np.ndarray:
  """The first n rows of a stream of (m, d) arrays (fewer if the stream ends first), float32."""
  out, total = [], 0
  for chunk in chunks:
    out.append(np.asarray(chunk, np.float32))
    total += len(chunk)
    if total >= n:
      break
  return np.concatenate(out)[:n] if out else np.zeros((0, 0), np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 262_144) -> np.ndarray:
  """Nearest-centroid labels (int32) of x, data-parallel over devices, in chunks of bounded memory."""
  x = np.asarray(x, np.float32)
  mesh = _mesh()
  c = jax.device_put(np.asarray(centroids, np.float32), NamedSharding(mesh, P()))
  out = np.empty(len(x), np.int32)
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    xs, _ = _shard_points(part, mesh)
    out[start:start + len(part)] = np.asarray(_assign(xs, c)[0])[:len(part)]
  return out


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
  mesh = _mesh()
  xs, ws = _shard_points(np.asarray(x, np.float32), mesh)
  return float(_stats(xs, ws, jnp.asarray(centroids, jnp.float32))[2])

