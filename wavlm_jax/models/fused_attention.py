"""Attention with WavLM's gated relative position bias, three ways (docs/model.md#fused-attention).

The bias of head h for query i and key j is g[b, h, i] * D[h, j - i]: a per-query gate g (1 for the
un-gated ILS-SSL bias) times the bucketed relative embedding D, which depends on j - i only. The paths:

- "xla": the (B, H, T, T) logits, probabilities and dropout mask in memory, as the reference models do;
- "chunked": the same computation one block of queries at a time under `lax.map`, each block recomputed
  in the backward pass, so that only (B, H, block, T) is ever live (portable, pure JAX);
- "pallas": flash attention (online softmax over key tiles in fast memory) as Pallas kernels for GPU
  and TPU, interpreted on CPU. A kernel never sees a (T, T) bias: for square tiles the bias tile of
  query block qb and key block kb depends on kb - qb only, so the 2 T / block distinct (block, block)
  tiles of D per head (shared by the batch) are gathered once per step and each kernel picks its tile.
  The backward pass recomputes the tiles and returns dq, dk, dv, the gate's gradient (row sums of
  dS * D) and the tiles' gradient (sums of g * dS over the batch and along each block diagonal: on TPU
  the dq kernel adds its tiles into it as its sequential grid goes, on GPU a kernel of its own), which the
  gather turns into the embedding table's gradient.

Attention dropout in every path draws its mask from a counter-based hash of (seed, batch row, head,
query, key), so the mask is never stored, costs a few integer operations per element (no threefry
over (B, H, T, T)), and is the same in all three paths: they agree to rounding with dropout on.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wavlm_jax.models import config as config_lib, layers, partitioning
from wavlm_jax.models.position import _offset_buckets, relative_position_bias

_MASK = float(np.finfo(np.float32).min)  # padded keys' logit, as in the reference implementations

# ----------------------------------------------------------------------------------------------
# Dropout from a counter-based hash (layers.fmix32).
# ----------------------------------------------------------------------------------------------
def row_seeds(seed: jax.Array, batch: int, heads: int, length: int) -> jax.Array:
  """(B, H, T) int32: one well-mixed stream per (batch row, head, query), from global indices."""
  bh = (jnp.arange(batch, dtype=jnp.int32)[:, None] * heads + jnp.arange(heads, dtype=jnp.int32)[None, :])
  stream = layers.fmix32(seed ^ layers.fmix32(bh * layers.HASH_GOLDEN + 1))
  return layers.fmix32(stream[:, :, None] + jnp.arange(length, dtype=jnp.int32) * layers.HASH_GOLDEN)


def keep_mask(rows: jax.Array, keys: jax.Array, rate: float) -> jax.Array:
  """Dropout keep decisions for row seeds `rows` (..., 1) and global key indices `keys` (..., K)."""
  bits = layers.fmix32(rows ^ (keys * layers.HASH_M2))
  return lax.shift_right_logical(bits, 8) < layers.keep_threshold(rate)


# ----------------------------------------------------------------------------------------------
# The relative position bias each path consumes.
# ----------------------------------------------------------------------------------------------
def _padded(length: int, block: int) -> int:
  return -(-length // block) * block


def _relative_values(table: jax.Array, span: int, num_buckets: int, max_distance: int) -> jax.Array:
  """(H, 2 span - 1) fp32: D[h, r + span - 1] for relative positions r = j - i in (-span, span)."""
  offsets = jnp.asarray(_offset_buckets(span - 1, num_buckets, max_distance))
  return jnp.transpose(jnp.take(table, offsets, axis=0)).astype(jnp.float32)


@functools.lru_cache(maxsize=32)
def _tile_index(blocks: int, block: int) -> np.ndarray:
  """(2 n - 1, block, block) indices into the relative values of span n * block: tile t holds the bias
  of query block qb and key block kb = qb + t - (n - 1)."""
  delta = (np.arange(2 * blocks - 1) - (blocks - 1))[:, None, None] * block
  within = np.arange(block)[None, None, :] - np.arange(block)[None, :, None]
  return (delta + within + blocks * block - 1).astype(np.int32)


def bias_tiles(table: jax.Array, length: int, num_buckets: int, max_distance: int, block: int) -> jax.Array:
  """(H, 2 n - 1, block, block) bias tiles for n = ceil(length / block) blocks (the "pallas" path)."""
  n = _padded(length, block) // block
  values = _relative_values(table, n * block, num_buckets, max_distance)
  return jnp.take(values, jnp.asarray(_tile_index(n, block)), axis=1)


# ----------------------------------------------------------------------------------------------
# "xla" and "chunked".
# ----------------------------------------------------------------------------------------------
def dense_logits(q, k, gate, bias, key_valid):
  """(B, H, Q, T) fp32 logits in memory: q.k (q pre-scaled) plus the (gated) bias (H, Q, T), padded keys
  at the fp32 minimum."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = partitioning.constrain(logits, ("batch", "act_heads", "frames", None))
  if bias is not None:
    logits = logits + (bias[None] if gate is None else gate[..., None] * bias[None])
  if key_valid is not None:
    logits = jnp.where(key_valid[:, None, None, :], logits, _MASK)
  return logits


def _dense_block(q, k, v, gate, bias, key_valid, rows, rate):
  """Attention of a block of queries against all keys, all in memory. q (B, Q, H, d) pre-scaled, k and v
  (B, T, H, d), gate (B, H, Q) or None, bias (H, Q, T) or None, key_valid (B, T) or None, rows (B, H, Q)
  dropout row seeds or None."""
  probs = jax.nn.softmax(dense_logits(q, k, gate, bias, key_valid), axis=-1)
  if rows is not None:
    keys = jnp.arange(k.shape[1], dtype=jnp.int32)
    probs = jnp.where(keep_mask(rows[..., None], keys, rate), probs / (1.0 - rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def attend_chunked(q, k, v, gate, bias, key_valid, rows, rate, block):
  """`_dense_block` over query blocks of `block` frames under lax.map, each recomputed for its gradient."""
  b, t, h, d = q.shape
  tq = _padded(t, block)
  n = tq // block
  pad = tq - t
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, n, block, h, d).swapaxes(0, 1)
  xs = {"q": qp}
  if gate is not None:
    xs["gate"] = jnp.pad(gate, ((0, 0), (0, 0), (0, pad))).reshape(b, h, n, block).transpose(2, 0, 1, 3)
  if bias is not None:
    xs["bias"] = jnp.pad(bias, ((0, 0), (0, pad), (0, 0))).reshape(h, n, block, t).swapaxes(0, 1)
  if rows is not None:
    xs["rows"] = jnp.pad(rows, ((0, 0), (0, 0), (0, pad))).reshape(b, h, n, block).transpose(2, 0, 1, 3)

  @jax.checkpoint
  def one(x):
    return _dense_block(x["q"], k, v, x.get("gate"), x.get("bias"), key_valid, x.get("rows"), rate)

  out = lax.map(one, xs)  # (n, B, block, H, d)
  return out.swapaxes(0, 1).reshape(b, tq, h, d)[:, :t]


# ----------------------------------------------------------------------------------------------
# "pallas": the kernels.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Spec:
  block: int
  blocks: int  # key (and query) blocks
  gated: bool
  has_bias: bool
  rate: float  # attention dropout; 0 = none
  interpret: bool
  fuse_bias_grad: bool = True  # the bias gradient summed by the dq kernel's sequential grid (not on GPU)

  @property
  def dropout(self) -> bool:
    return self.rate > 0.0

  @property
  def fused_bias_grad(self) -> bool:
    return self.has_bias and self.fuse_bias_grad


def _nt(a, b):
  """a @ b.T with fp32 accumulation."""
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _tn(a, b):
  """a.T @ b with fp32 accumulation."""
  return jnp.dot(a.T, b, preferred_element_type=jnp.float32)


def _nn(a, b):
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


class _Tile:
  """Recomputes one (query block, key block) tile: logits, and the pieces the gradients need."""

  def __init__(self, spec: _Spec, q, k, valid, g, bias_tile, rows, kb):
    s = _nt(q, k)
    if spec.has_bias:
      s = s + (g * bias_tile if spec.gated else bias_tile)
    # valid: 1 a key, 0 a padded key (the fp32 minimum, as in the reference), 2 a key of a batch row
    # without any valid key, whose logits are then all equal in the reference (uniform attention over
    # its T frames); a constant 0 here, so that the statistics stay exact in both passes.
    self.s = jnp.where(valid == 1, s, jnp.where(valid == 2, 0.0, _MASK))
    self.valid = valid
    self.keep = None
    if spec.dropout:
      keys = kb * spec.block + lax.broadcasted_iota(jnp.int32, s.shape, 1)
      self.keep = keep_mask(rows, keys, spec.rate)
    self.spec = spec

  def dropped(self, x):
    """Dropout applied to a tile (scaled by 1 / keep rate)."""
    if self.keep is None:
      return x
    return jnp.where(self.keep, x * (1.0 / (1.0 - self.spec.rate)), 0.0)

  def grad_logits(self, p, do, v, delta):
    """dS = P * (dP - delta) for dP the gradient of the dropped probabilities; none flows to a masked
    logit (which is a constant)."""
    return jnp.where(self.valid == 1, p * (self.dropped(_nt(do, v)) - delta), 0.0)


_ORDER = ("q", "k", "v", "valid", "g", "bias", "rows", "do", "lse", "delta")


def _present(spec: _Spec, names) -> list[str]:
  """`names` (in kernel order) less the optional inputs this spec does not use: the gate when un-gated,
  the bias tiles when there is no relative position bias, the dropout row seeds when dropout is off."""
  used = {"g": spec.gated, "bias": spec.has_bias, "rows": spec.dropout}
  return [n for n in _ORDER if n in names and used.get(n, True)]


def _unpack(spec: _Spec, refs, names):
  """The kernel's input refs by name, and the output refs that follow them."""
  present = _present(spec, names)
  return dict(zip(present, refs)), refs[len(present):]


def _forward_kernel(*refs, spec: _Spec):
  r, (o_ref, lse_ref) = _unpack(spec, refs, ("q", "k", "v", "valid", "g", "bias", "rows"))
  n, blk = spec.blocks, spec.block
  qb = jax.lax.convert_element_type(_program_id(2), jnp.int32)
  q = r["q"][...]
  g = r["g"][...] if spec.gated else None
  rows = r["rows"][...] if spec.dropout else None

  def body(kb, carry):
    acc, m, l = carry
    ks = _ds(kb, blk)
    bias_tile = r["bias"][kb - qb + n - 1] if spec.has_bias else None
    v = r["v"][ks, :]
    tile = _Tile(spec, q, r["k"][ks, :], r["valid"][:, ks], g, bias_tile, rows, kb)
    m_new = jnp.maximum(m, jnp.max(tile.s, axis=1, keepdims=True))
    p = jnp.exp(tile.s - m_new)
    alpha = jnp.exp(m - m_new)
    l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
    p = jnp.where(tile.keep, p, 0.0) if tile.keep is not None else p
    acc = alpha * acc + _nn(p.astype(v.dtype), v)
    return acc, m_new, l

  init = (jnp.zeros(q.shape, jnp.float32), jnp.full((blk, 1), -jnp.inf, jnp.float32),
          jnp.zeros((blk, 1), jnp.float32))
  acc, m, l = lax.fori_loop(0, n, body, init)
  scale = 1.0 / (1.0 - spec.rate) if spec.dropout else 1.0
  o_ref[...] = (acc * (scale / l)).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log(l)


def _dkdv_kernel(*refs, spec: _Spec):
  r, (dk_ref, dv_ref) = _unpack(spec, refs, ("q", "k", "v", "valid", "g", "bias", "rows", "do", "lse", "delta"))
  n, blk = spec.blocks, spec.block
  kb = jax.lax.convert_element_type(_program_id(2), jnp.int32)
  k, v, valid = r["k"][...], r["v"][...], r["valid"][...]

  def body(qb, carry):
    dk, dv = carry
    qs = _ds(qb, blk)
    q, do = r["q"][qs, :], r["do"][qs, :]
    tile = _Tile(spec, q, k, valid, r["g"][qs, :] if spec.gated else None,
                 r["bias"][kb - qb + n - 1] if spec.has_bias else None,
                 r["rows"][qs, :] if spec.dropout else None, kb)
    p = jnp.exp(tile.s - r["lse"][qs, :])
    dv = dv + _tn(tile.dropped(p).astype(do.dtype), do)
    ds = tile.grad_logits(p, do, v, r["delta"][qs, :])
    dk = dk + _tn(ds.astype(q.dtype), q)
    return dk, dv

  dk, dv = lax.fori_loop(0, n, body, (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, spec: _Spec):
  """Program (batch row, head, query block), looping over key blocks: dq and the gate's gradient. With
  `spec.fused_bias_grad` (TPU, interpreted) the grid is (head, batch row, query block), the last two axes
  sequential, and each program also adds g * dS of its tiles into the head's bias-tile gradient, which
  stays in fast memory across them (tile kb - qb + n - 1 for key block kb): no kernel of its own
  recomputes the tiles for it."""
  r, outs = _unpack(spec, refs, ("q", "k", "v", "valid", "g", "bias", "rows", "do", "lse", "delta"))
  n, blk = spec.blocks, spec.block
  qb = jax.lax.convert_element_type(_program_id(2), jnp.int32)
  q, do, lse, delta = r["q"][...], r["do"][...], r["lse"][...], r["delta"][...]
  g = r["g"][...] if spec.gated else None
  rows = r["rows"][...] if spec.dropout else None
  dbias_ref = outs[-1] if spec.fused_bias_grad else None
  if dbias_ref is not None:
    from jax.experimental import pallas as pl

    @pl.when(jnp.logical_and(_program_id(1) == 0, _program_id(2) == 0))
    def _():
      dbias_ref[...] = jnp.zeros(dbias_ref.shape, jnp.float32)

  def body(kb, carry):
    dq, dg = carry
    ks = _ds(kb, blk)
    bias_tile = r["bias"][kb - qb + n - 1] if spec.has_bias else None
    k, v = r["k"][ks, :], r["v"][ks, :]
    tile = _Tile(spec, q, k, r["valid"][:, ks], g, bias_tile, rows, kb)
    ds = tile.grad_logits(jnp.exp(tile.s - lse), do, v, delta)
    dq = dq + _nn(ds.astype(k.dtype), k)
    if spec.gated:
      dg = dg + jnp.sum(ds * bias_tile, axis=1, keepdims=True)
    if dbias_ref is not None:
      t = kb - qb + n - 1
      dbias_ref[t] = dbias_ref[t] + (g * ds if spec.gated else ds)
    return dq, dg

  dq, dg = lax.fori_loop(0, n, body, (jnp.zeros(q.shape, jnp.float32), jnp.zeros((blk, 1), jnp.float32)))
  outs[0][...] = dq.astype(outs[0].dtype)
  if spec.gated:
    outs[1][...] = dg


def _dbias_kernel(*refs, spec: _Spec, batch: int):
  """Program (head, tile t): the sum over the batch and the blocks on diagonal t of g * dS (GPU, whose
  programs run concurrently, so that the dq kernel cannot accumulate across them)."""
  r, (dbias_ref,) = _unpack(spec, refs, ("q", "k", "v", "valid", "g", "bias", "rows", "do", "lse", "delta"))
  n, blk = spec.blocks, spec.block
  t = jax.lax.convert_element_type(_program_id(1), jnp.int32)
  shift = t - (n - 1)  # kb - qb on this diagonal
  bias_tile = r["bias"][...]
  first, last = jnp.maximum(0, -shift), jnp.minimum(n, n - shift)

  def one_row(b, acc):
    at = lambda name, *idx: r[name][(b, *idx)]

    def body(qb, acc):
      kb = qb + shift
      qs, ks = _ds(qb, blk), _ds(kb, blk)
      q, do = at("q", qs, slice(None)), at("do", qs, slice(None))
      g = at("g", qs, slice(None)) if spec.gated else None
      tile = _Tile(spec, q, at("k", ks, slice(None)), at("valid", slice(None), ks), g, bias_tile,
                   at("rows", qs, slice(None)) if spec.dropout else None, kb)
      ds = tile.grad_logits(jnp.exp(tile.s - at("lse", qs, slice(None))), do, at("v", ks, slice(None)),
                            at("delta", qs, slice(None)))
      return acc + (g * ds if spec.gated else ds)

    return lax.fori_loop(first, last, body, acc)

  dbias_ref[...] = lax.fori_loop(0, batch, one_row, jnp.zeros((blk, blk), jnp.float32))


def _program_id(axis):
  from jax.experimental import pallas as pl
  return pl.program_id(axis)


def _ds(index, size):
  from jax.experimental import pallas as pl
  return pl.ds(pl.multiple_of(index * size, size), size)


# Warps per GPU program at the 64-frame tile: the fewest with which ptxas (sm_90) spills no register (the dk,
# dv kernel keeps two (block, d) fp32 accumulators and recomputes P and dS: 84 bytes spilled per thread with
# 4 warps, none with 8); fewer warps leave registers for more resident programs (bench/triton_kernels.py).
_GPU_WARPS = {"wavlm_attention_dkdv": 8}


# Per kernel: matmuls per (query block, key block) tile, and how many times it moves a (B, H, T, d) tensor
# and a (B, H, T) fp32 column through memory (the GPU's bias-gradient kernel reads each block of q, k, v and
# dO once per diagonal it lies on: n times).
_TRAFFIC = {"wavlm_attention_fwd": (2, 4, 4), "wavlm_attention_dkdv": (4, 6, 4),
            "wavlm_attention_dq": (3, 5, 5), "wavlm_attention_dbias": (2, 4, 4)}


def _cost(name: str, spec: _Spec, q):
  """The kernel's FLOPs, exponentials and bytes for the compiler's scheduler, which otherwise takes a custom
  call for free when it overlaps collectives (an fsdp step's all-gathers) with compute."""
  from jax.experimental import pallas as pl
  b, h, t, d = q.shape
  matmuls, tensors, columns = _TRAFFIC[name]
  passes = spec.blocks if name == "wavlm_attention_dbias" else 1
  moved = passes * (tensors * q.size * q.dtype.itemsize + columns * b * h * t * 4)
  # A head's bias tiles: fetched once per program sequence that keeps them (per head on the head-major
  # grids, which also write their gradient once; per batch row and head otherwise).
  head_major = name == "wavlm_attention_dbias" or (name == "wavlm_attention_dq" and spec.fused_bias_grad)
  moved += (2 * h if head_major else b * h) * (2 * spec.blocks - 1) * spec.block ** 2 * 4
  return pl.CostEstimate(flops=int(2 * matmuls * b * h * t * t * d), transcendentals=int(b * h * t * t),
                         bytes_accessed=int(moved))


def _call(kernel, spec: _Spec, grid, in_specs, out_specs, out_shape, name, sequential: int = 0, cost=None):
  """The pallas_call; `sequential` trailing grid axes accumulate into resident outputs (TPU "arbitrary")."""
  from jax.experimental import pallas as pl
  params = None
  platform = None if spec.interpret else target_platform()
  if platform == "gpu":
    from jax.experimental.pallas import triton as plgpu
    params = plgpu.CompilerParams(num_warps=_GPU_WARPS.get(name, 4), num_stages=2)
  elif platform == "tpu":  # independent programs may be split across a chip's TensorCores (v4, v5p)
    from jax.experimental.pallas import tpu as pltpu
    semantics = ["parallel"] * (len(grid) - sequential) + ["arbitrary"] * sequential
    params = pltpu.CompilerParams(dimension_semantics=tuple(semantics))
  return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
                        interpret=spec.interpret, compiler_params=params, name=name,
                        cost_estimate=None if spec.interpret else cost)


def _inputs(spec: _Spec, args: dict, shapes: dict):
  """The inputs a kernel takes, in order, and their block specs."""
  names = _present(spec, args)
  return [args[n] for n in names], [shapes[n] for n in names]


def _forward(spec: _Spec, q, k, v, valid, g, bias, rows):
  from jax.experimental import pallas as pl
  b, h, t, d = q.shape
  blk, n = spec.block, spec.blocks
  row_block = lambda width: pl.BlockSpec((None, None, blk, width), lambda i, j, c: (i, j, c, 0))
  full = lambda width: pl.BlockSpec((None, None, t, width), lambda i, j, c: (i, j, 0, 0))
  shapes = {"q": row_block(d), "k": full(d), "v": full(d),
            "valid": pl.BlockSpec((None, 1, t), lambda i, j, c: (i, 0, 0)),
            "g": row_block(1), "rows": row_block(1),
            "bias": pl.BlockSpec((None, 2 * n - 1, blk, blk), lambda i, j, c: (j, 0, 0, 0))}
  args, in_specs = _inputs(spec, dict(q=q, k=k, v=v, valid=valid, g=g, bias=bias, rows=rows), shapes)
  out_shape = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, t, 1), jnp.float32))
  return _call(functools.partial(_forward_kernel, spec=spec), spec, (b, h, n), in_specs,
               (row_block(d), row_block(1)), out_shape, "wavlm_attention_fwd",
               cost=_cost("wavlm_attention_fwd", spec, q))(*args)


def _backward(spec: _Spec, res, do):
  from jax.experimental import pallas as pl
  q, k, v, valid, g, bias, rows, o, lse = res
  b, h, t, d = q.shape
  blk, n = spec.block, spec.blocks
  delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
  args = dict(q=q, k=k, v=v, valid=valid, g=g, bias=bias, rows=rows, do=do, lse=lse, delta=delta)

  def blocks(head_major: bool):
    """Block specs for a grid (b, h, block), or (h, b, block) when head_major."""
    at = (lambda f: lambda j, i, c: f(i, j, c)) if head_major else (lambda f: f)
    return (lambda width: pl.BlockSpec((None, None, blk, width), at(lambda i, j, c: (i, j, c, 0))),
            lambda width: pl.BlockSpec((None, None, t, width), at(lambda i, j, c: (i, j, 0, 0))),
            pl.BlockSpec((None, 2 * n - 1, blk, blk), at(lambda i, j, c: (j, 0, 0, 0))),
            pl.BlockSpec((None, 1, blk), at(lambda i, j, c: (i, 0, c))),
            pl.BlockSpec((None, 1, t), at(lambda i, j, c: (i, 0, 0))))

  # dk, dv: program (b, h, key block), looping over query blocks.
  row_block, full, head_bias, valid_block, valid_full = blocks(False)
  shapes = {name: full(d) for name in ("q", "do")}
  shapes.update({name: full(1) for name in ("g", "rows", "lse", "delta")})
  shapes.update(k=row_block(d), v=row_block(d), bias=head_bias, valid=valid_block)
  ins, in_specs = _inputs(spec, args, shapes)
  dk, dv = _call(functools.partial(_dkdv_kernel, spec=spec), spec, (b, h, n), in_specs,
                 (row_block(d), row_block(d)),
                 (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
                 "wavlm_attention_dkdv", cost=_cost("wavlm_attention_dkdv", spec, q))(*ins)
  # dq, the gate's gradient and (fused) the bias tiles': program (b, h, query block) or (h, b, query
  # block), looping over key blocks.
  fused = spec.fused_bias_grad
  row_block, full, head_bias, _, valid_full = blocks(fused)
  shapes = {name: full(d) for name in ("k", "v")}
  shapes.update({name: row_block(1) for name in ("g", "rows", "lse", "delta")})
  shapes.update(q=row_block(d), do=row_block(d), bias=head_bias, valid=valid_full)
  ins, in_specs = _inputs(spec, args, shapes)
  out_specs, out_shape = [row_block(d)], [jax.ShapeDtypeStruct(q.shape, q.dtype)]
  if spec.gated:
    out_specs.append(row_block(1))
    out_shape.append(jax.ShapeDtypeStruct((b, h, t, 1), jnp.float32))
  if fused:
    out_specs.append(head_bias)
    out_shape.append(jax.ShapeDtypeStruct(bias.shape, jnp.float32))
  outs = _call(functools.partial(_dq_kernel, spec=spec), spec, (h, b, n) if fused else (b, h, n), in_specs,
               tuple(out_specs), tuple(out_shape), "wavlm_attention_dq", sequential=2 if fused else 0,
               cost=_cost("wavlm_attention_dq", spec, q))(*ins)
  dq, dg, dbias = outs[0], outs[1] if spec.gated else None, outs[-1] if fused else None
  if spec.has_bias and not fused:  # GPU: a kernel of its own, program (h, tile), looping over the batch
    per_head = lambda width: pl.BlockSpec((b, None, t, width), lambda j, c: (0, j, 0, 0))
    tile_spec = pl.BlockSpec((None, None, blk, blk), lambda j, c: (j, c, 0, 0))
    shapes = {name: per_head(d) for name in ("q", "k", "v", "do")}
    shapes.update({name: per_head(1) for name in ("g", "rows", "lse", "delta")})
    shapes.update(valid=pl.BlockSpec((b, 1, t), lambda j, c: (0, 0, 0)), bias=tile_spec)
    ins, in_specs = _inputs(spec, args, shapes)
    dbias = _call(functools.partial(_dbias_kernel, spec=spec, batch=b), spec, (h, 2 * n - 1), in_specs,
                  tile_spec, jax.ShapeDtypeStruct(bias.shape, jnp.float32), "wavlm_attention_dbias",
                  cost=_cost("wavlm_attention_dbias", spec, q))(*ins)
  return dq, dk, dv, None, dg, dbias, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(spec: _Spec, q, k, v, valid, g, bias, rows):
  return _forward(spec, q, k, v, valid, g, bias, rows)[0]


def _flash_fwd(spec, q, k, v, valid, g, bias, rows):
  o, lse = _forward(spec, q, k, v, valid, g, bias, rows)
  return o, (q, k, v, valid, g, bias, rows, o, lse)


_flash.defvjp(_flash_fwd, _backward)


def _check_block(block: int, head_dim: int, platform: str | None) -> None:
  """What the compiled kernels need of the tiles: TPU blocks put key blocks on the 128-wide lane axis;
  Triton's matmuls want blocks of at least 16 and power-of-two head sizes."""
  if block <= 0:
    raise ValueError(f"attention block {block}: resolve 0 (the platform's) with config.attention_block_for")
  if platform == "tpu" and block % 128:
    raise ValueError(f"model.attention_block={block}: the TPU kernels need a multiple of 128")
  if platform == "gpu" and (block < 16 or head_dim < 16 or head_dim & (head_dim - 1)):
    raise ValueError(f"model.attention_block={block}, head size {head_dim}: the GPU kernels need a block of at "
                     "least 16 and a power-of-two head size of at least 16 (use attention_impl='chunked')")


def attend_pallas(q, k, v, gate, tiles, key_valid, rows, rate, block, interpret,
                  fuse_bias_grad: bool | None = None):
  """Flash attention with the tiled bias. q (B, T, H, d) pre-scaled, k, v alike; gate (B, H, T) or None;
  tiles from `bias_tiles` or None; key_valid (B, T) or None; rows (B, H, T) or None. fuse_bias_grad: the
  bias tiles' gradient summed by the dq kernel across its sequential grid, rather than by a kernel of its
  own (default: on every platform but GPU, whose programs run concurrently)."""
  b, t, h, d = q.shape
  platform = None if interpret else target_platform()
  _check_block(block, d, platform)
  if fuse_bias_grad and platform == "gpu":
    raise ValueError("fuse_bias_grad needs a sequential grid (TPU, interpreted); GPU programs run concurrently")
  tp = _padded(t, block)
  pad = tp - t
  heads_first = lambda x: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, pad), (0, 0)))
  column = lambda x: None if x is None else jnp.pad(x, ((0, 0), (0, 0), (0, pad)))[..., None]
  valid = jnp.ones((b, t), jnp.int32) if key_valid is None else key_valid.astype(jnp.int32)
  if key_valid is not None:  # rows without a valid key: uniform over the T frames (see _Tile)
    valid = jnp.where(jnp.any(key_valid, axis=1, keepdims=True), valid, 2)
  valid = jnp.pad(valid, ((0, 0), (0, pad)))[:, None, :]
  spec = _Spec(block=block, blocks=tp // block, gated=gate is not None, has_bias=tiles is not None,
               rate=rate if rows is not None else 0.0, interpret=interpret,
               fuse_bias_grad=target_platform() != "gpu" if fuse_bias_grad is None else fuse_bias_grad)
  gate = None if gate is None else column(gate.astype(jnp.float32))
  out = _sharded(functools.partial(_flash, spec), heads_first(q), heads_first(k), heads_first(v), valid,
                 gate, tiles, column(rows))
  return jnp.swapaxes(out[:, :, :t], 1, 2)


def _sharded(fn, q, k, v, valid, g, bias, rows):
  """fn on each device's batch rows and heads under the active mesh (a kernel is not partitioned by the
  compiler); the whole call outside one."""
  ctx = partitioning.current()
  if ctx is None:
    return fn(q, k, v, valid, g, bias, rows)
  mesh, rules = ctx
  spec = lambda x, axes: None if x is None else partitioning.spec_for(axes, x.shape, mesh, rules)
  bhtd = ("batch", "act_heads", None, None)
  qspec = spec(q, bhtd)
  # Every per-(row, head) input must split the same way as q; the bias is split by head only.
  specs = (qspec, qspec, qspec, jax.sharding.PartitionSpec(qspec[0], None, None),
           None if g is None else qspec, None if bias is None else jax.sharding.PartitionSpec(qspec[1]),
           None if rows is None else qspec)
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=qspec, check_vma=False)(
      q, k, v, valid, g, bias, rows)


# ----------------------------------------------------------------------------------------------
# Dispatch.
# ----------------------------------------------------------------------------------------------
def _target_device() -> jax.Device:
  """A device the step is being built for: the active mesh's (e.g. a TPU for an ahead-of-time compile on a
  CPU host), else this host's default backend's."""
  ctx = partitioning.current()
  return ctx[0].devices.flat[0] if ctx is not None else jax.devices()[0]


def target_platform() -> str:
  """The platform the step is being built for (`_target_device`'s)."""
  return _target_device().platform


# The TPU kernels keep a (batch row, head)'s keys, values, per-query statistics and bias tiles in fast
# memory, so the length they take is bounded: with 128-frame tiles and 64-wide heads (every card's) the
# forward and backward passes compile ahead of time up to 2,560 padded frames (51.2 s at 50 Hz) on v4 and
# v5p, overflowing their 16 MiB at 2,688, and up to 4,608 (92 s) on v5e, overflowing at 5,120. Longer
# inputs (fewer frames for larger tiles) take the chunked path there: no such bound, but (H, T, T) bias
# tensors in memory (4.2 GB of temporaries for 55 s and 16 heads, where the kernels needed 0.36 GB at
# 51 s). GPU kernels stream their tiles: no bound.
TPU_KERNEL_MAX_FRAMES = {"v5e": 4608, "other": 2560}


def _path(impl: str, length: int, block: int) -> tuple[str, int]:
  """The attention path `impl` takes for `length` frames on the target platform, and its tile (`block`, or
  the platform's for 0)."""
  platform = target_platform()
  block = block or config_lib.attention_block_for(platform)
  if impl == "auto":
    impl = config_lib.attention_impl_for(platform)
  if impl == "pallas" and platform == "tpu":
    kind = _target_device().device_kind
    limit = TPU_KERNEL_MAX_FRAMES["v5e" if kind.startswith(("TPU v5 lite", "TPU v5e")) else "other"]
    if _padded(length, block) * block > limit * 128:
      _warn_long(length, limit)
      impl = "chunked"
  return impl, block


@functools.lru_cache(maxsize=None)
def _warn_long(length: int, limit: int) -> None:
  logging.getLogger(__name__).warning(
      "attention over %d frames: beyond the TPU kernels' fast memory (%d frames); using the chunked path",
      length, limit)


def attend(impl: str, q, k, v, gate, bias, key_valid, *, rate: float = 0.0, key: jax.Array | None = None,
           block: int = 0):
  """Multi-head attention with the (gated) relative position bias.

  q, k, v: (B, T, H, d), q already scaled by d^-1/2. gate: (B, H, T) or None (un-gated). bias: what
  `position_bias_for(impl, ...)` returned (None: no relative position bias). key_valid: (B, T) bool or
  None. rate, key: attention dropout (off when key is None). block: the tile (0: the platform's, as
  `position_bias_for`). Returns (B, T, H, d) in v's dtype. On TPU, "pallas" beyond
  `TPU_KERNEL_MAX_FRAMES` runs the chunked path (as `position_bias_for` does).
  """
  b, t, h, _ = q.shape
  impl, block = _path(impl, t, block)
  rows = None
  if key is not None and rate > 0.0:
    rows = row_seeds(layers.seed_from_key(key), b, h, t)
  if impl == "xla":
    return _dense_block(q, k, v, gate, bias, key_valid, rows, rate)
  if impl == "chunked":
    return attend_chunked(q, k, v, gate, bias, key_valid, rows, rate, block)
  if impl == "pallas":
    return attend_pallas(q, k, v, gate, bias, key_valid, rows, rate, block,
                         interpret=target_platform() == "cpu")
  raise ValueError(f"attention_impl must be one of {config_lib.ATTENTION_IMPLS}, got {impl!r}")


def position_bias_for(impl: str, table: jax.Array, length: int, num_buckets: int, max_distance: int,
                      block: int = 0) -> jax.Array:
  """The bias structure `attend` takes for `impl`: (H, T, T) for xla/chunked, tiles of `block` frames (0:
  the platform's) for pallas."""
  impl, block = _path(impl, length, block)
  if impl == "pallas":
    return bias_tiles(table, length, num_buckets, max_distance, block)
  return relative_position_bias(table, length, num_buckets, max_distance)
