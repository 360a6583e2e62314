"""The fused attention paths (wavlm_jax.models.fused_attention): the Pallas kernels, interpreted on CPU, and
the chunked path equal the in-memory XLA path in outputs and in every gradient (q, k, v, the gate, the
relative embedding table), with padding, with and without the gate and the bias, with attention dropout
(the same counter-based mask in every path), in fp32 and bf16, under a sharded mesh, and in a whole
model's training step."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from wavlm_jax.models import config as config_lib, fused_attention as fa, layers, params, partitioning, wavlm

NUM_BUCKETS, MAX_DISTANCE = 16, 40


def _inputs(t, heads, batch=2, dim=8, lengths=None, dtype=jnp.float32, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  qkv = [(jax.random.normal(k, (batch, t, heads, dim)) * 0.5).astype(dtype) for k in ks[:3]]
  table = jax.random.normal(ks[3], (NUM_BUCKETS, heads))
  gate = 2 * jax.nn.sigmoid(jax.random.normal(ks[4], (batch, heads, t)))
  valid = None if lengths is None else jnp.arange(t)[None] < jnp.asarray(lengths)[:, None]
  cotangent = jax.random.normal(ks[5], (batch, t, heads, dim))
  return qkv, table, gate, valid, cotangent


def _run(impl, inputs, bias, gated, rate=0.0, key=None, block=32):
  """Output and gradients for q, k, v, the gate and the table of one path."""
  (q, k, v), table, gate, valid, cotangent = inputs
  t = q.shape[1]

  def loss(q, k, v, gate, table):
    b = fa.position_bias_for(impl, table, t, NUM_BUCKETS, MAX_DISTANCE, block) if bias else None
    out = fa.attend(impl, q, k, v, gate if gated else None, b, valid, rate=rate, key=key, block=block)
    return jnp.sum(out.astype(jnp.float32) * cotangent), out

  (_, out), grads = jax.value_and_grad(loss, argnums=range(5), has_aux=True)(q, k, v, gate, table)
  return dict(zip(("out", "q", "k", "v", "gate", "table"), (out,) + grads))


# Interpreted kernels run ~2.5x faster compiled than op by op. (Not for the sharded test: the mesh a step
# is traced under is not part of jit's cache key.)
_run_jit = jax.jit(_run, static_argnames=("impl", "bias", "gated", "rate", "block"))


def _assert_close(got, want, tol, skip=()):
  for name in want:
    if name in skip:
      continue
    a, b = np.asarray(got[name], np.float32), np.asarray(want[name], np.float32)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale, err_msg=name)


CASES = [  # (T, heads, lengths, gated, bias, dropout)
    (63, 2, None, True, True, 0.0),  # one frame short of two blocks
    (64, 4, (0, 37), False, True, 0.0),  # two blocks, un-gated bucket bias (ILS-SSL), a row without frames
    (200, 3, (200, 130), True, True, 0.1),  # seven blocks, padding, attention dropout
    (50, 2, (50, 21), False, False, 0.2),  # no relative bias (HuBERT)
]


@pytest.mark.parametrize("t,heads,lengths,gated,bias,rate", CASES)
def test_kernels_and_chunked_equal_xla(t, heads, lengths, gated, bias, rate):
  inputs = _inputs(t, heads, lengths=lengths)
  key = jax.random.key(7) if rate else None
  want = _run_jit("xla", inputs, bias, gated, rate, key)
  skip = () if gated else ("gate",)
  if not bias:
    skip += ("table",)
    assert not np.any(want["table"])  # nothing flows to an unused table
  for impl in ("pallas", "chunked"):
    _assert_close(_run_jit(impl, inputs, bias, gated, rate, key), want, 2e-6, skip)
  if gated:  # the gate really receives a gradient (row sums of dS * D), as does the table
    assert float(jnp.max(jnp.abs(want["gate"]))) > 1e-3 and float(jnp.max(jnp.abs(want["table"]))) > 1e-3


@pytest.mark.parametrize("gated, rate", [(True, 0.1), (False, 0.0)])
def test_bias_gradient_gpu_form_equals_the_fused_form(gated, rate):
  # The bias tiles' gradient is summed by the dq kernel across its sequential grid (TPU) or by a kernel of
  # its own looping over the batch (GPU, whose programs run concurrently); both are exact.
  (q, k, v), table, gate, valid, cotangent = _inputs(100, 3, batch=3, lengths=(100, 61, 7))
  tiles = fa.bias_tiles(table, 100, NUM_BUCKETS, MAX_DISTANCE, 32)
  rows = fa.row_seeds(jnp.int32(5), 3, 3, 100) if rate else None

  def grads(fuse):
    def loss(q, k, v, gate, tiles):
      out = fa.attend_pallas(q, k, v, gate if gated else None, tiles, valid, rows, rate, 32, interpret=True,
                             fuse_bias_grad=fuse)
      return jnp.sum(out * cotangent)
    return jax.jit(jax.grad(loss, argnums=range(5)))(q, k, v, gate, tiles)

  fused, separate = grads(True), grads(False)
  assert float(jnp.max(jnp.abs(fused[4]))) > 1e-3
  for a, b in zip(fused, separate):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_bfloat16_kernels_stay_close_to_fp32():
  inputs = _inputs(96, 2, lengths=(96, 70))
  want = _run_jit("xla", inputs, True, True)
  (q, k, v), *rest = inputs
  bf16 = ((q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)), *rest)
  got = _run_jit("pallas", bf16, True, True)
  assert got["out"].dtype == jnp.bfloat16 and got["q"].dtype == jnp.bfloat16
  assert got["gate"].dtype == jnp.float32 and got["table"].dtype == jnp.float32  # statistics stay fp32
  _assert_close(got, want, 3e-2)


def test_dropout_mask_rate_determinism_and_independence():
  rows = fa.row_seeds(jnp.int32(11), 4, 3, 256)
  keys = jnp.arange(256, dtype=jnp.int32)
  keep = np.asarray(fa.keep_mask(rows[..., None], keys, 0.1))  # (4, 3, 256, 256)
  assert abs(keep.mean() - 0.9) < 0.003  # 786k draws: 5 standard deviations is 0.0017
  again = np.asarray(fa.keep_mask(fa.row_seeds(jnp.int32(11), 4, 3, 256)[..., None], keys, 0.1))
  np.testing.assert_array_equal(keep, again)
  other = np.asarray(fa.keep_mask(fa.row_seeds(jnp.int32(12), 4, 3, 256)[..., None], keys, 0.1))
  assert abs((keep == other).mean() - (0.9 ** 2 + 0.1 ** 2)) < 0.005  # another seed: independent masks
  dropped = ~keep
  for a, b in ((dropped[:, :, 1:], dropped[:, :, :-1]), (dropped[..., 1:], dropped[..., :-1]),
               (dropped[1:], dropped[:-1]), (dropped[:, 1:], dropped[:, :-1])):
    assert abs((a & b).mean() - 0.01) < 0.002  # neighbouring queries, keys, rows, heads: uncorrelated
  # Keys from different PRNG implementations give seeds, and the rate is what was asked.
  for impl in ("threefry2x32", "rbg", "unsafe_rbg"):
    seed = layers.seed_from_key(jax.random.key(0, impl=impl))
    assert seed.dtype == jnp.int32
  assert abs(np.asarray(fa.keep_mask(rows[..., None], keys, 0.5)).mean() - 0.5) < 0.003


def test_activation_dropout_is_a_hash_the_same_on_every_mesh():
  # layers.dropout (the encoder's and projection's dropout) hashes (seed, flat index): the rate, independent
  # neighbours and keys, deterministic, and the same mask when the array is sharded over 8 devices.
  x = jnp.ones((8, 96, 64))
  key = jax.random.key(3)
  keep = np.asarray(layers.dropout(x, 0.1, key)) != 0
  assert abs(keep.mean() - 0.9) < 0.005 and abs((keep[:, 1:] & keep[:, :-1]).mean() - 0.81) < 0.01
  assert abs((keep[..., 1:] & keep[..., :-1]).mean() - 0.81) < 0.01
  assert abs((keep == (np.asarray(layers.dropout(x, 0.1, jax.random.key(4))) != 0)).mean() - 0.82) < 0.01
  np.testing.assert_allclose(np.asarray(layers.dropout(x, 0.1, key))[keep], 1 / 0.9, rtol=1e-6)
  mesh = Mesh(np.array(jax.devices("cpu")[:8]).reshape(4, 2), ("data", "model"))
  sharded = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data", None, "model")))
  out = jax.jit(lambda a: layers.dropout(a, 0.1, key))(sharded)
  assert out.sharding.spec == jax.P("data", None, "model")
  np.testing.assert_array_equal(np.asarray(out) != 0, keep)
  rbg = layers.dropout(x, 0.1, jax.random.key(3, impl="rbg"))
  assert abs(float(jnp.mean(rbg != 0)) - 0.9) < 0.005


def test_kernels_under_a_sharded_mesh_equal_the_unsharded_call():
  # The Pallas call runs per device under shard_map (batch rows on "data", heads on "model"); dropout draws
  # from global (row, head) indices, so the sharded result is the unsharded one.
  inputs = _inputs(40, 4, batch=4, lengths=(40, 33, 20, 40))
  key = jax.random.key(1)
  want = _run("pallas", inputs, True, True, 0.1, key, block=16)
  mesh = Mesh(np.array(jax.devices("cpu")[:8]).reshape(4, 2), ("data", "model"))
  with partitioning.use(mesh, {"batch": "data", "act_heads": "model"}):
    got = jax.jit(lambda: _run("pallas", inputs, True, True, 0.1, key, block=16))()
  _assert_close(got, want, 2e-6)


def test_model_training_step_with_pallas_equals_xla():
  # The tiny card's forward and backward (masking, dropout 0.1 everywhere, LayerDrop) with the interpreted
  # kernels, 16-frame tiles so that the 49 frames span four of them, against the XLA path.
  cards = {impl: config_lib.model_card("tiny", attention_impl=impl, attention_block=16, num_layers=2)
           for impl in ("xla", "pallas")}
  reference = wavlm.build(cards["xla"], seed=0)
  flat = {k: jnp.asarray(v) for k, v in params.get_params(reference).items()}
  x = jnp.asarray(np.random.RandomState(0).randn(2, 16000).astype(np.float32))
  pad = jnp.zeros((2, 16000), bool).at[1, 11000:].set(True)
  key = jax.random.key(5)
  probe = jax.random.normal(jax.random.key(6), (2, 49, 64))

  def loss(model_params, cfg):
    model = wavlm.abstract(cfg)
    params.set_params(model, model_params)
    out = model(x, pad, apply_mask=True, key=key)
    return jnp.sum(out.last_hidden_state * probe), out.last_hidden_state

  results = {impl: jax.jit(jax.value_and_grad(functools.partial(loss, cfg=cfg), has_aux=True))(flat)
             for impl, cfg in cards.items()}
  (la, ha), ga = results["xla"]
  (lb, hb), gb = results["pallas"]
  np.testing.assert_allclose(hb, ha, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lb, la, rtol=1e-5)
  for name in ga:  # to rounding, relative to each parameter's largest gradient (the key bias's is zero)
    scale = float(jnp.max(jnp.abs(ga[name])))
    np.testing.assert_allclose(gb[name], ga[name], rtol=1e-4, atol=1e-5 * scale + 1e-6, err_msg=name)
  assert float(jnp.max(jnp.abs(ga["wavlm/encoder/rel_attn_embed"]))) > 0
  gates = [n for n in ga if "gru_rel_pos" in n]
  assert gates and all(float(jnp.max(jnp.abs(ga[n]))) > 0 for n in gates)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_lower_for_gpu_and_tpu_from_this_host(monkeypatch, platform, bias):
  # Ahead of time, as for a pod: the compiled kernels' lowering (Pallas to Triton IR for CUDA, to Mosaic for
  # TPU) runs on this CPU host, at the platform's tile and the GPU's warps per kernel, for a bf16 step with
  # padding and dropout (200 frames, two 128-frame tiles on TPU). bench/triton_kernels.py compiles the
  # Triton IR on to sm_90 machine code; the TPU step compiles with libtpu in bench/scaling.py.
  monkeypatch.setattr(fa, "target_platform", lambda: platform)
  from jax.experimental import pallas as pl
  calls = {}  # kernel -> (grid, TPU dimension semantics, outputs)
  pallas_call = pl.pallas_call

  def spy(kernel, **kw):
    semantics = getattr(kw["compiler_params"], "dimension_semantics", None)
    calls[kw["name"].removeprefix("wavlm_attention_")] = (kw["grid"], semantics, len(kw["out_shape"]))
    return pallas_call(kernel, **kw)

  monkeypatch.setattr(pl, "pallas_call", spy)
  b, t, h, d = 2, 200, 4, 64

  def loss(q, k, v, gate, table, lengths, key):
    valid = jnp.arange(t)[None] < lengths[:, None]
    tiles = fa.position_bias_for("auto", table, t, 320, 800) if bias else None
    out = fa.attend("auto", q, k, v, gate if bias else None, tiles, valid, rate=0.1, key=key)
    return jnp.sum(out.astype(jnp.float32) ** 2)

  qkv = jax.ShapeDtypeStruct((b, t, h, d), jnp.bfloat16)
  args = (qkv, qkv, qkv, jax.ShapeDtypeStruct((b, h, t), jnp.float32), jax.ShapeDtypeStruct((320, h), jnp.float32),
          jax.ShapeDtypeStruct((b,), jnp.int32), jax.random.key(0))
  target = {"gpu": "cuda", "tpu": "tpu"}[platform]
  text = jax.jit(jax.grad(loss, argnums=range(5))).trace(*args).lower(lowering_platforms=(target,)).as_text()
  kernels = ["fwd", "dkdv", "dq"] + (["dbias"] if bias and platform == "gpu" else [])  # TPU: fused into dq
  assert sorted(calls) == sorted(kernels)
  if platform == "gpu":
    calls = re.findall(r'custom_call @__gpu\$xla\.gpu\.triton\(.*?grid_x = (\d+) : i32, grid_y = (\d+) : i32, '
                       r'grid_z = (\d+) : i32.*?name = "wavlm_attention_(\w+)", num_stages = 2 : i32, '
                       r'num_warps = (\d+) : i32', text)
    n = -(-t // 64)  # the GPU's 64-frame tiles
    want = {"fwd": (b, h, n, 4), "dkdv": (b, h, n, 8), "dq": (b, h, n, 4), "dbias": (h, 2 * n - 1, 1, 4)}
    assert {c[3]: tuple(map(int, c[:3] + c[4:])) for c in calls} == {k: want[k] for k in kernels}
    assert len(calls) == len(kernels)
  else:  # each kernel tells the scheduler its FLOPs: 2 per multiply-add of its matmuls on every tile
    assert text.count("custom_call @tpu_custom_call(") == len(kernels)
    costs = re.findall(r'cost_estimate.{0,80}?flops\\22:(\d+).*?kernel_name = "wavlm_attention_(\w+)"', text)
    matmuls = {"fwd": 2, "dkdv": 4, "dq": 3, "dbias": 2}
    assert {k: int(f) for f, k in costs} == {k: 2 * matmuls[k] * b * h * 256 ** 2 * d for k in kernels}
    # With the bias, dq also sums its gradient: head-major grid, batch and query blocks in sequence, and a
    # third output (dq, the gate's gradient, the tiles').
    parallel = ("parallel",) * 3
    assert calls["fwd"] == ((b, h, 2), parallel, 2) and calls["dkdv"] == ((b, h, 2), parallel, 2)
    assert calls["dq"] == (((h, b, 2), ("parallel", "arbitrary", "arbitrary"), 3) if bias else
                           ((b, h, 2), parallel, 1))


def test_inputs_beyond_the_tpu_kernels_fast_memory_take_the_chunked_path(monkeypatch):
  monkeypatch.setattr(fa, "target_platform", lambda: "tpu")  # and this host's device, not a v5e
  limit = fa.TPU_KERNEL_MAX_FRAMES["other"]
  (q, k, v), table, gate, _, _ = _inputs(limit + 1, 1, batch=1)
  assert fa.position_bias_for("pallas", table, limit, NUM_BUCKETS, MAX_DISTANCE).shape == (1, 39, 128, 128)
  bias = fa.position_bias_for("auto", table, limit + 1, NUM_BUCKETS, MAX_DISTANCE)
  assert bias.shape == (1, limit + 1, limit + 1)  # the chunked (and xla) form
  got = jax.jit(lambda *a: fa.attend("pallas", *a, None))(q, k, v, gate, bias)
  want = jax.jit(lambda *a: fa.attend("xla", *a, None))(q, k, v, gate, bias)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)


def test_auto_follows_the_platform_and_bad_values_are_refused():
  tiny = config_lib.model_card("tiny")
  assert tiny.attention_impl == "auto"
  assert config_lib.for_platform(tiny, "tpu").attention_impl == "pallas"
  assert config_lib.for_platform(tiny, "gpu").attention_impl == "pallas"
  assert config_lib.for_platform(tiny, "cpu").attention_impl == "xla"
  assert tiny.attention_block == 0 and [config_lib.for_platform(tiny, p).attention_block
                                        for p in ("tpu", "gpu", "cpu")] == [128, 64, 128]
  assert config_lib.for_platform(config_lib.model_card("tiny", attention_block=256), "gpu").attention_block == 256
  with pytest.raises(ValueError, match="attention_impl"):
    config_lib.model_card("tiny", attention_impl="flash")
  with pytest.raises(ValueError, match="attention_block"):
    config_lib.model_card("tiny", attention_block=48)
  fa._check_block(128, 64, "tpu"), fa._check_block(64, 64, "gpu"), fa._check_block(16, 8, None)
  with pytest.raises(ValueError, match="attention_block=64"):
    fa._check_block(64, 64, "tpu")
  with pytest.raises(ValueError, match="head size 48"):
    fa._check_block(64, 48, "gpu")
