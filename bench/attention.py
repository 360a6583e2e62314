"""Attention with the gated relative position bias, forward + backward, per `model.attention_impl`, side by
side in one run: step time and the compiled program's temporary memory (XLA's memory analysis).

    .venv/bin/python bench/attention.py [--shapes 2x780,8x250] [--heads 12] [--steps 5] \
        [--impls xla,chunked,pallas] [--out bench/results/attention.json]

A shape BxT is B utterances of T frames (780 = a 15.6 s crop at 50 Hz), WavLM Base's 12 heads of 64,
fp32, gated bias, padded keys, attention dropout 0.1 (the pre-training setting). On CPU the Pallas
kernels run interpreted (their time is not the kernel's; their memory is the tiled algorithm's); this is
the benchmark behind "auto" choosing "xla" on CPU. On a GPU or TPU the same script times the compiled
kernels against the XLA path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def measure(impl: str, batch: int, length: int, heads: int, steps: int, block: int) -> dict:
  import jax
  import jax.numpy as jnp

  from wavlm_jax.models import fused_attention as fa

  ks = jax.random.split(jax.random.key(0), 6)
  q, k, v = (jax.random.normal(kk, (batch, length, heads, 64)) * 0.125 for kk in ks[:3])
  table = 0.02 * jax.random.normal(ks[3], (320, heads))
  gate = 2 * jax.nn.sigmoid(jax.random.normal(ks[4], (batch, heads, length)))
  valid = jnp.arange(length)[None] < (length - jnp.arange(batch) * (length // (2 * batch)))[:, None]

  def loss(q, k, v, gate, table):
    bias = fa.position_bias_for(impl, table, length, 320, 800, block)
    out = fa.attend(impl, q, k, v, gate, bias, valid, rate=0.1, key=ks[5], block=block)
    return jnp.sum(out * out)

  step = jax.jit(jax.grad(loss, argnums=range(5)))
  start = time.perf_counter()
  compiled = step.lower(q, k, v, gate, table).compile()
  compile_s = time.perf_counter() - start
  temp = compiled.memory_analysis().temp_size_in_bytes
  jax.block_until_ready(compiled(q, k, v, gate, table))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(q, k, v, gate, table))
    times.append(time.perf_counter() - start)
  return {"impl": impl, "batch": batch, "frames": length, "heads": heads, "block": block,
          "platform": jax.default_backend(), "interpreted": impl == "pallas" and jax.default_backend() == "cpu",
          "median_ms": 1e3 * statistics.median(times), "temp_mib": temp / 2 ** 20,
          "compile_seconds": round(compile_s, 1),
          "bhtt_fp32_mib": batch * heads * length * length * 4 / 2 ** 20}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shapes", default="2x780,8x250")
  p.add_argument("--heads", type=int, default=12)
  p.add_argument("--impls", default="xla,chunked,pallas")
  p.add_argument("--block", type=int, default=0, help="tile frames; 0: the platform's (128; 64 on GPU)")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--out", default="bench/results/attention.json")
  args = p.parse_args()
  if not args.block:
    import jax

    from wavlm_jax.models import config as config_lib
    args.block = config_lib.attention_block_for(jax.default_backend())

  rows = []
  for shape in args.shapes.split(","):
    batch, length = (int(x) for x in shape.split("x"))
    for impl in args.impls.split(","):
      row = measure(impl, batch, length, args.heads, args.steps, args.block)
      rows.append(row)
      print(f"{shape:>7} {impl:<8} {row['median_ms']:9.1f} ms  temp {row['temp_mib']:8.1f} MiB", flush=True)

  print(f"\n{'shape':>7} {'impl':<8} {'fwd+bwd ms':>10} {'vs xla':>7} {'temp MiB':>9} {'vs xla':>7} "
        f"{'(B,H,T,T) fp32 MiB':>18}")
  for row in rows:
    base = next((r for r in rows if r["impl"] == "xla" and (r["frames"], r["batch"]) == (row["frames"], row["batch"])),
                None)
    ratio = lambda key: f"{row[key] / max(base[key], 1e-9):>7.2f}" if base else f"{'-':>7}"
    note = " (interpreted)" if row["interpreted"] else ""
    print(f"{row['batch']}x{row['frames']:<5} {row['impl']:<8} {row['median_ms']:>10.1f} {ratio('median_ms')} "
          f"{row['temp_mib']:>9.1f} {ratio('temp_mib')} {row['bhtt_fp32_mib']:>18.1f}{note}")
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(rows, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
