"""k-means in JAX, data-parallel over all devices and hosts.

Points are sharded along a 1-D "data" mesh (on several hosts, each host holds its own points); each
device assigns its points (`shard_map`, in cache-sized blocks) and only the per-cluster sums and counts
and the inertia are reduced across devices and hosts. Fitting is greedy k-means++ seeding and Lloyd on
a random sample, then full Lloyd iterations (exact, not mini-batch) from the sample's solution; several
initialisations keep the lowest inertia. Empty clusters are re-seeded with the points farthest from
their centroids. For data larger than memory, `fit_streaming` runs Lloyd over a re-iterable stream of
chunks, one pass per iteration, so the points are never all in host memory. Assignment needs no
communication: every host labels its own points on its own devices. Deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wavlm_jax import storage


@dataclasses.dataclass
class KMeans:
  centroids: np.ndarray  # (k, d) float32
  inertia: float  # sum of squared distances of the fitted points to their centroid
  iterations: int
  provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def k(self) -> int:
    return self.centroids.shape[0]

  def save(self, path: str | os.PathLike) -> os.PathLike:
    """Writes PATH.npz (centroids) and PATH.json (provenance, inertia); PATH may be a URL."""
    path = storage.path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, centroids=self.centroids)
    path.with_suffix(".npz").write_bytes(buffer.getvalue())
    meta = {"k": self.k, "dim": int(self.centroids.shape[1]), "inertia": self.inertia,
            "iterations": self.iterations, "provenance": self.provenance}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path

  @classmethod
  def load(cls, path: str | os.PathLike) -> "KMeans":
    path = storage.path(path)
    npz, meta = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.is_file() or not meta.is_file():
      raise FileNotFoundError(f"{path}: expected {npz.name} and {meta.name} (written by KMeans.save)")
    m = json.loads(meta.read_text())
    return cls(np.load(io.BytesIO(npz.read_bytes()))["centroids"], m["inertia"], m["iterations"], m.get("provenance", {}))

  def assign(self, x: np.ndarray) -> np.ndarray:
    return assign(x, self.centroids)


# Points per block of the assignment: the (block, k) scores stay in cache, and the nearest centroid is
# found by a min and a masked index-min (XLA:CPU's variadic argmin over a large (n, k) array is ~3x slower).
BLOCK = 8192


def _mesh(local: bool = False) -> Mesh:
  """A 1-D "data" mesh over every device (all hosts), or over this host's devices only."""
  return Mesh(np.array(jax.local_devices() if local else jax.devices()), ("data",))


def _rows_per_device(n: int, devices: int) -> int:
  m = -(-n // devices)
  return -(-m // BLOCK) * BLOCK if m > BLOCK else -(-m // 8) * 8


def _shard_points(x: np.ndarray, mesh: Mesh):
  """Pads this host's points x to equal whole blocks per device; returns (sharded points, sharded
  validity weights). On several hosts every host passes its own points (process-local data) and the
  padding makes the per-host shapes agree."""
  n, d = len(x), x.shape[1]
  local = [dev for dev in mesh.devices.flat if dev.process_index == jax.process_index()]
  multihost = len(local) < mesh.devices.size
  if multihost:
    from jax.experimental import multihost_utils
    n_max = int(np.max(multihost_utils.process_allgather(np.array([n]))))
  else:
    n_max = n
  rows = _rows_per_device(n_max, len(local)) * len(local)
  xp = np.zeros((rows, d), np.float32)
  xp[:n] = x
  w = np.zeros(rows, np.float32)
  w[:n] = 1.0
  sharding = NamedSharding(mesh, P("data"))
  if not multihost:
    return jax.device_put(xp, sharding), jax.device_put(w, sharding)
  total = rows * (mesh.devices.size // len(local))
  return (jax.make_array_from_process_local_data(sharding, xp, (total, d)),
          jax.make_array_from_process_local_data(sharding, w, (total,)))


def _sq_distances(x, c):
  """(n, k) squared distances, as ||x||^2 - 2 x.c + ||c||^2 (one matmul)."""
  x2 = jnp.sum(x * x, axis=1, keepdims=True)
  c2 = jnp.sum(c * c, axis=1)
  return jnp.maximum(x2 - 2.0 * jnp.dot(x, c.T, precision=jax.lax.Precision.HIGHEST) + c2, 0.0)


def _nearest(x, c):
  """Labels (int32) and squared distances of this device's points x (m, d) to centroids c (k, d)."""
  m, k = x.shape[0], c.shape[0]
  block = BLOCK if m % BLOCK == 0 else m
  c2 = jnp.sum(c * c, axis=1)
  slots = jax.lax.broadcasted_iota(jnp.float32, (block, k), 1)

  def one(xb):
    # argmin_c ||x - c||^2 = argmin_c (||c||^2 - 2 x.c): the per-row ||x||^2 only enters the distance.
    s = c2 - 2.0 * jnp.dot(xb, c.T, precision=jax.lax.Precision.HIGHEST)
    best = jnp.min(s, axis=1, keepdims=True)
    label = jnp.min(jnp.where(s <= best, slots, float(k)), axis=1)  # the first of ties, as argmin
    return jnp.minimum(label, k - 1).astype(jnp.int32), jnp.maximum(best[:, 0] + jnp.sum(xb * xb, axis=1), 0.0)

  labels, dist = jax.lax.map(one, x.reshape(m // block, block, x.shape[1]))
  return labels.reshape(m), dist.reshape(m)


def _local_stats(x, w, c):
  labels, dist = _nearest(x, c)
  k = c.shape[0]
  # Segment sums cost O(n d), a one-hot matmul O(n k d) (as much as the distances themselves). Padding
  # rows are zeros, so they add nothing to the sums; the weights only count.
  sums = jax.ops.segment_sum(x, labels, num_segments=k)
  counts = jax.ops.segment_sum(w, labels, num_segments=k)
  reduce = lambda v: jax.lax.psum(v, "data")
  return reduce(sums), reduce(counts), reduce(jnp.sum(dist * w)), dist * w


@functools.lru_cache(maxsize=None)
def _programs(mesh: Mesh):
  """The jitted, data-parallel programs for `mesh`: each device works on its own points, and only the
  (k, d) sums, (k,) counts and the inertia cross devices (and hosts)."""
  data, rep = P("data"), P()
  assign = jax.jit(jax.shard_map(_nearest, mesh=mesh, in_specs=(data, rep), out_specs=(data, data)))
  stats = jax.jit(jax.shard_map(_local_stats, mesh=mesh, in_specs=(data, data, rep),
                                out_specs=(rep, rep, rep, data)))

  @jax.jit
  def lloyd_step(x, w, c):
    sums, counts, inertia, dist = stats(x, w, c)
    return _update(c, sums, counts, x, dist), inertia, jnp.sum(counts <= 0)

  return assign, stats, lloyd_step


def _assign(x, c):
  return _programs(x.sharding.mesh)[0](x, c)


def _stats(x, w, c):
  return _programs(x.sharding.mesh)[1](x, w, c)


def _lloyd_step(x, w, c):
  return _programs(x.sharding.mesh)[2](x, w, c)


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


@functools.partial(jax.jit, static_argnums=(2, 4))
def _seed(x, w, k: int, key, trials: int):
  # All random numbers up front: D^2 sampling by inverting the cumulative distribution (cheaper than
  # Gumbel noise over n points), and a loop body without a PRNG (a fraction of the compile time).
  draws = jax.random.uniform(key, (k, trials))

  def sample(weights, u):
    cdf = jnp.cumsum(weights)
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right", method="compare_all"), x.shape[0] - 1)

  i0 = sample(w, draws[0, :1])[0]
  c = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[i0])
  d = jnp.sum((x - x[i0]) ** 2, axis=1)

  def body(j, carry):
    c, d = carry
    cand = sample(d * w, draws[j])
    new_d = jnp.minimum(d[None, :], _sq_distances(x, x[cand]).T)  # (trials, n)
    best = jnp.argmin(jnp.sum(new_d * w[None, :], axis=1))
    return c.at[j].set(x[cand[best]]), new_d[best]

  c, _ = jax.lax.fori_loop(1, k, body, (c, d))
  return c


def kmeans_plus_plus(x, w, k: int, key, trials: int | None = None) -> jax.Array:
  """Greedy k-means++ seeding on points x with weights w (0 = padding): each new centre is the best of
  `trials` (default 2 + ln k, as scikit-learn) D^2-sampled candidates."""
  return _seed(x, w, k, key, trials or 2 + int(np.log(k)))


def _global_sample(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random sample of `size` points of the data of all hosts, the same array on every host (each host
  contributes an equal share of its own points, at most as many as the smallest host has)."""
  if jax.process_count() == 1:
    return x[np.sort(rng.permutation(len(x))[:size])]
  from jax.experimental import multihost_utils

  share = -(-size // jax.process_count())
  share = min(share, int(np.min(multihost_utils.process_allgather(np.array([len(x)])))))
  mine = x[np.sort(rng.permutation(len(x))[:share])]
  return np.concatenate(list(multihost_utils.process_allgather(mine)))


def _lloyd(xs, ws, c, max_iter: int, tol: float):
  """Lloyd iterations until the relative inertia improvement is <= tol; returns (c, inertia, iterations)."""
  previous, inertia, it = np.inf, np.inf, 0
  for it in range(1, max_iter + 1):
    c, inertia, _ = _lloyd_step(xs, ws, c)
    inertia = float(inertia)
    if np.isfinite(previous) and previous - inertia <= tol * previous:
      break
    previous = inertia
  return c, inertia, it


def sum_over_hosts(*values):
  """Sums host arrays over all hosts (identity on one host); every host gets the sums."""
  values = [np.asarray(v) for v in values]
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils

  return [np.sum(multihost_utils.process_allgather(v), axis=0) for v in values]


def fit(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 100, tol: float = 1e-4,
        init_size: int | None = None, provenance: dict | None = None,
        log: Callable[[str], None] | None = None) -> KMeans:
  """Fits k-means to in-memory points x (n, d) (on several hosts: each host's own points): best of
  `n_init` runs of k-means++ seeding and Lloyd on a random sample of `init_size` points (default
  max(30,000, 20 k)), then Lloyd on every point until the relative inertia improvement is <= tol.
  Starting the full-data iterations from the sample's solution saves most of them."""
  x = np.asarray(x, np.float32)
  if len(x) < k:
    raise ValueError(f"{len(x)} points cannot make {k} clusters")
  mesh, local = _mesh(), _mesh(local=True)
  xs, ws = _shard_points(x, mesh)
  points = int(sum_over_hosts(np.array(len(x)))[0])  # over all hosts
  init_size = min(points, init_size or max(30_000, 20 * k))
  best = None
  for run in range(n_init):
    # The sample is the same on every host, so seeding runs identically on each host's own devices.
    sample = _global_sample(x, init_size, np.random.default_rng([seed, run]))
    ss, sw = _shard_points(sample, local)
    c = kmeans_plus_plus(ss, sw, k, jax.random.key(seed * 1000 + run))
    c, _, sample_iters = _lloyd(ss, sw, c, max_iter, tol)
    c = jax.device_put(np.asarray(c), NamedSharding(mesh, P()))  # the same values on every host
    c, _, it = _lloyd(xs, ws, c, max_iter, tol)
    final = float(_lloyd_step(xs, ws, c)[1])  # the inertia of c (the same program: nothing to compile)
    if log:
      log(f"k-means init {run + 1}/{n_init}: inertia {final:.6g} after {sample_iters} iterations on "
          f"{len(sample):,} points and {it} on all")
    if best is None or final < best.inertia:
      best = KMeans(np.asarray(c), final, it, dict(provenance or {}))
  best.provenance.update(points=points, seed=seed, n_init=n_init,
                         devices=mesh.devices.size, hosts=jax.process_count())
  return best


def fit_streaming(chunks: Callable[[], Iterable[np.ndarray]], k: int, *, seed: int = 0, max_iter: int = 20,
                  tol: float = 1e-4, init_points: int = 100_000, provenance: dict | None = None,
                  log: Callable[[str], None] | None = None) -> KMeans:
  """Lloyd over a stream: `chunks()` returns a fresh iterable of (m, d) arrays on every call (one pass
  per iteration; on several hosts each host streams its own points). Initialised by k-means++ and
  Lloyd on the first `init_points` points of the stream (an equal share from each host)."""
  local = _mesh(local=True)
  head = take_rows(chunks(), -(-init_points // jax.process_count()))
  head = _global_sample(head, len(head) * jax.process_count(), np.random.default_rng(seed))
  if len(head) < k:
    raise ValueError(f"the stream has {len(head)} points, fewer than k={k}")
  hx, hw = _shard_points(head, local)
  c, _, _ = _lloyd(hx, hw, kmeans_plus_plus(hx, hw, k, jax.random.key(seed)), max_iter, tol)
  previous, total = np.inf, 0
  for it in range(1, max_iter + 1):
    sums, counts, inertia, total = np.zeros(c.shape, np.float64), np.zeros(k, np.float64), 0.0, 0
    replicated = jax.device_put(c, NamedSharding(local, P()))
    for chunk in chunks():
      xs, ws = _shard_points(np.asarray(chunk, np.float32), local)
      s, cnt, inn, _ = _stats(xs, ws, replicated)
      sums, counts, inertia, total = sums + np.asarray(s), counts + np.asarray(cnt), inertia + float(inn), total + len(chunk)
    sums, counts, inertia, total = sum_over_hosts(sums, counts, inertia, total)
    inertia, total = float(inertia), int(total)
    # Empty clusters: re-seed from the initialisation sample's farthest points (only then needed).
    far = _stats(hx, hw, c)[3] if np.any(counts <= 0) else jnp.zeros_like(hw)
    c = _update(c, jnp.asarray(sums, jnp.float32), jnp.asarray(counts, jnp.float32), hx, far)
    if log:
      log(f"streaming k-means iteration {it}: inertia {inertia:.6g} over {total} points")
    if np.isfinite(previous) and previous - inertia <= tol * previous:
      break
    previous = inertia
  result = KMeans(np.asarray(c), inertia, it, dict(provenance or {}))
  result.provenance.update(points=total, seed=seed, streaming=True, devices=jax.device_count(),
                           hosts=jax.process_count())
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
  """Nearest-centroid labels (int32) of x, data-parallel over this host's devices (hosts label their own
  points: assignment needs no communication), in chunks of bounded memory."""
  x = np.asarray(x, np.float32)
  mesh = _mesh(local=True)
  c = jax.device_put(np.asarray(centroids, np.float32), NamedSharding(mesh, P()))
  out = np.empty(len(x), np.int32)
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    xs, _ = _shard_points(part, mesh)
    out[start:start + len(part)] = np.asarray(_assign(xs, c)[0])[:len(part)]
  return out


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
  mesh = _mesh(local=True)
  xs, ws = _shard_points(np.asarray(x, np.float32), mesh)
  return float(_stats(xs, ws, jnp.asarray(centroids, jnp.float32))[2])

