"""The fused attention's GPU kernels compiled for an H100 / H200 (sm_90a) on any host, GPU or not: registers,
register spills, shared memory and resident programs per SM, per kernel, tile and warps.

    .venv/bin/python bench/triton_kernels.py --triton-python /tmp/triton/bin/python \
        [--blocks 64,128] [--warps 4,8] [--frames 780] [--out bench/results/triton_kernels.json]

The kernels are lowered for CUDA on this host as jit does for a GPU (Pallas to Triton IR; the pre-training
setting: bf16, head size 64, gated bias, padded keys, attention dropout 0.1, 15.6 s crops), then compiled
by the `triton` package (its own LLVM and ptxas) for sm_90a. triton is 1 GB and not a dependency: give the
interpreter of an environment that has it (`python3 -m venv /tmp/triton && /tmp/triton/bin/pip install
triton==3.9.0`), or omit --triton-python if this one has it. XLA compiles the same IR with the Triton it
pins, whose passes differ in detail: these are resource figures, not timings (bench/gpu_step.py times the
step on a GPU). A kernel that spills registers to local memory runs its inner loop through the cache;
`wavlm_jax.models.config.attention_block_for` and `fused_attention._GPU_WARPS` are chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

KERNELS = ("fwd", "dkdv", "dq", "dbias")
REGISTERS_PER_SM, SHARED_PER_SM, WARPS_PER_SM = 65536, 228 * 1024, 64  # sm_90


def lower(block: int, frames: int, heads: int, out_dir: Path) -> dict[str, Path]:
  """Triton IR text of the four kernels at `block`, lowered for CUDA on this host."""
  import jax
  import jax.numpy as jnp
  from jax._src.pallas.triton import pallas_call_registration as registration  # the IR jit would compile

  from wavlm_jax.models import fused_attention as fa

  modules = []
  build = registration.lowering.lower_jaxpr_to_triton_module

  def capture(*args, **kwargs):
    result = build(*args, **kwargs)
    modules.append(result.module.operation.get_asm(enable_debug_info=False))
    return result

  batch, dim = 2, 64

  def loss(q, k, v, gate, table, lengths, key):
    valid = jnp.arange(frames)[None] < lengths[:, None]
    tiles = fa.bias_tiles(table, frames, 320, 800, block)
    out = fa.attend_pallas(q, k, v, gate, tiles, valid, fa.row_seeds(key, batch, heads, frames), 0.1, block,
                           interpret=False)
    return jnp.sum(out.astype(jnp.float32) ** 2)

  qkv = jax.ShapeDtypeStruct((batch, frames, heads, dim), jnp.bfloat16)
  args = (qkv, qkv, qkv, jax.ShapeDtypeStruct((batch, heads, frames), jnp.float32),
          jax.ShapeDtypeStruct((320, heads), jnp.float32), jax.ShapeDtypeStruct((batch,), jnp.int32),
          jax.ShapeDtypeStruct((), jnp.int32))
  platform = fa.target_platform
  registration.lowering.lower_jaxpr_to_triton_module = capture
  fa.target_platform = lambda: "gpu"
  try:
    jax.jit(jax.grad(loss, argnums=range(5))).trace(*args).lower(lowering_platforms=("cuda",))
  finally:
    registration.lowering.lower_jaxpr_to_triton_module = build
    fa.target_platform = platform
  paths = {}
  for text in modules:
    name = re.search(r"tt\.func public @wavlm_attention_(\w+)", text).group(1)
    paths[name] = out_dir / f"block{block}_{name}.ttir"
    paths[name].write_text(text)
  if sorted(paths) != sorted(KERNELS):
    raise RuntimeError(f"expected the kernels {KERNELS}, lowered {sorted(paths)}")
  return paths


def compile_ir(paths: list[str], warps: int) -> list[dict]:
  """(Run under an interpreter with triton.) Compile each IR file for sm_90a; ptxas's resource usage."""
  import triton
  from triton.backends.compiler import GPUTarget

  bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
  # The PTX of triton >= 3.9 is newer than its bundled CUDA 12 ptxas reads; it ships CUDA 13's as well.
  ptxas = next(p for p in (bin_dir / "ptxas-blackwell", bin_dir / "ptxas") if p.exists())
  rows = []
  for path in paths:
    kernel = triton.compile(path, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 2})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
      f.write(kernel.asm["ptx"])
    report = subprocess.run([str(ptxas), "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                            capture_output=True, text=True, check=True).stderr
    os.unlink(f.name)
    number = lambda pattern: int(re.search(pattern, report).group(1))
    rows.append({"ir": path, "warps": warps, "registers": number(r"Used (\d+) registers"),
                 "spill_stores_bytes": number(r"(\d+) bytes spill stores"),
                 "spill_loads_bytes": number(r"(\d+) bytes spill loads"),
                 "shared_bytes": kernel.metadata.shared, "triton": triton.__version__})
  return rows


def resident(registers: int, warps: int, shared: int) -> int:
  """Programs one SM holds at once (registers allocated per thread in eights; shared memory; warp slots)."""
  by_registers = REGISTERS_PER_SM // (math.ceil(registers / 8) * 8 * 32 * warps)
  by_shared = SHARED_PER_SM // (shared + 1024) if shared else WARPS_PER_SM
  return min(by_registers, by_shared, WARPS_PER_SM // warps)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--triton-python", default=sys.executable, help="an interpreter that can import triton")
  p.add_argument("--blocks", default="64,128")
  p.add_argument("--warps", default="4,8")
  p.add_argument("--frames", type=int, default=780, help="frames per utterance (780: a 15.6 s crop)")
  p.add_argument("--heads", type=int, default=12)
  p.add_argument("--out", default="bench/results/triton_kernels.json")
  p.add_argument("--compile", nargs="+", help=argparse.SUPPRESS)  # internal: the triton side
  args = p.parse_args()
  if args.compile:
    print(json.dumps(compile_ir(args.compile, int(args.warps))))
    return

  import jax

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for block in (int(b) for b in args.blocks.split(",")):
      paths = lower(block, args.frames, args.heads, Path(tmp))
      for warps in (int(w) for w in args.warps.split(",")):
        run = subprocess.run([args.triton_python, __file__, "--warps", str(warps), "--compile",
                              *(str(paths[k]) for k in KERNELS)], capture_output=True, text=True)
        if run.returncode:
          sys.exit(f"compiling with {args.triton_python} failed (does it have triton?):\n{run.stderr[-3000:]}")
        for kernel, row in zip(KERNELS, json.loads(run.stdout.strip().splitlines()[-1])):
          del row["ir"]
          row.update(kernel=kernel, block=block, frames=args.frames, jax=jax.__version__,
                     programs_per_sm=resident(row["registers"], warps, row["shared_bytes"]))
          rows.append(row)
          print(f"block {block:>3} warps {warps} {kernel:<6} {row['registers']:>3} registers, spills "
                f"{row['spill_stores_bytes']:>5} B, shared {row['shared_bytes'] / 1024:6.1f} KiB, "
                f"{row['programs_per_sm']} per SM", flush=True)

  print(f"\n{'kernel':<7}" + "".join(f"{f'{b} / {w} warps':>24}" for b in args.blocks.split(",")
                                  for w in args.warps.split(",")))
  print(f"{'':<7}" + "".join(f"{'regs spill shared/SM':>24}" for _ in args.blocks.split(",") for _ in
                             args.warps.split(",")))
  for kernel in KERNELS:
    cells = [r for r in rows if r["kernel"] == kernel]
    print(f"{kernel:<7}" + "".join(f"{r['registers']:>11} {r['spill_stores_bytes']:>5} "
                                   f"{r['shared_bytes'] // 1024:>3}K/{r['programs_per_sm']}" for r in cells))
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(rows, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
