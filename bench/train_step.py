"""A WavLM training step in JAX against transformers' PyTorch WavLMModel on this CPU: forward + backward
+ AdamW on the same config, batch and crop, with the same threads; and MFU: the model's FLOPs per step
(analytic, docs/sharding.md#compute-anchors) per second over the measured matmul peak of this machine.

    .venv/bin/python bench/train_step.py [--model wavlm_base] [--batch 2] [--seconds 4] [--steps 5]
                                         [--dtype bfloat16]

Both sides: dropout, LayerDrop and masking off (they are not comparable work), loss = mean square of
the last hidden state, fp32 (or `--dtype bfloat16`: JAX's bf16 compute dtype against PyTorch autocast).
JAX is timed with the layer stack under lax.scan (the default, quick to compile for deep models and
pods) and unrolled (`scan_layers=False`, faster on CPU). Also printed: the floor that the step's matmul
FLOPs set at the measured peak, and the share of that peak a 1.5x-over-PyTorch step would need.
Target (issue 5): JAX >= 1.5x faster than PyTorch for WavLM Base at 2 x 4 s, and >= 60 % of the
measured matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def jax_step(model_name, batch, samples, steps, scan_layers=True, dtype="float32"):
  """Median seconds per step and XLA's FLOP count."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from wavlm_jax.training import flops as flops_lib
  from wavlm_jax.models import config as config_lib, params as params_lib, wavlm

  cfg = config_lib.model_card(model_name, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                              dropout_input=0.0, layerdrop=0.0, num_label_classes=0, feature_grad_mult=1.0,
                              scan_layers=scan_layers, dtype=dtype)
  model = wavlm.build(cfg)
  binder = params_lib.Binder(model)
  params = binder.tree(model)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)
  opt = tx.init(params)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, samples)).astype(np.float32))

  def loss_fn(p):
    return jnp.mean(jnp.square(binder.model(p)(x, collect=False).last_hidden_state.astype(jnp.float32)))

  def step(params, opt, x):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, x).compile()
  flops = flops_lib.compiled_flops(compiled)
  params, opt, loss = compiled(params, opt, x)
  jax.block_until_ready(loss)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    params, opt, loss = compiled(params, opt, x)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  return statistics.median(times), flops


def torch_step(model_name, batch, samples, steps, threads, dtype="float32"):
  import contextlib

  import numpy as np
  import torch
  import transformers

  from wavlm_jax.convert import formats
  from wavlm_jax.models import config as config_lib

  torch.set_num_threads(threads)
  cfg = config_lib.model_card(model_name, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                              dropout_input=0.0, layerdrop=0.0, num_label_classes=0, mask_prob=0.0)
  kw = formats.hf_config_dict(cfg)
  cls = transformers.WavLMConfig if kw.pop("model_type") == "wavlm" else transformers.HubertConfig
  model = (transformers.WavLMModel if cls is transformers.WavLMConfig else transformers.HubertModel)(cls(**kw))
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
  x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, samples)).astype(np.float32))
  # bf16: autocast, PyTorch's mixed precision (fp32 weights, bf16 matmuls and convolutions), as the JAX
  # model's compute dtype does.
  autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast():
      hidden = model(x).last_hidden_state
    loss = hidden.float().square().mean()
    loss.backward()
    opt.step()

  step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="wavlm_base")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype of both sides (bfloat16: JAX compute dtype, PyTorch autocast)")
  p.add_argument("--out", default="bench/results/train_step.json")
  args = p.parse_args()
  samples = int(args.seconds * 16000)

  import jax.numpy as jnp

  from wavlm_jax.training import flops as flops_lib
  from wavlm_jax.models import config as config_lib

  peak = flops_lib.measured_matmul_peak(dim=2048, dtype=jnp.dtype(args.dtype), repeats=10)
  t_scan, xla_flops = jax_step(args.model, args.batch, samples, args.steps, True, args.dtype)
  t_loop, _ = jax_step(args.model, args.batch, samples, args.steps, False, args.dtype)
  t_torch = torch_step(args.model, args.batch, samples, args.steps, args.threads, args.dtype)
  # Model FLOPs (analytic, docs/sharding.md#compute-anchors); XLA's cost analysis undercounts convolutions.
  flops = flops_lib.model_flops_per_audio_second(config_lib.model_card(args.model), args.seconds) * args.batch * args.seconds
  t_jax = min(t_scan, t_loop)
  mfu = flops / t_jax / peak
  bound = flops / peak  # the step's matmul FLOPs alone, at the measured peak
  target = t_torch / 1.5
  row = {"model": args.model, "batch": args.batch, "seconds": args.seconds, "threads": args.threads,
         "dtype": args.dtype, "jax_step_s": round(t_jax, 3), "jax_scanned_layers_step_s": round(t_scan, 3),
         "jax_unrolled_layers_step_s": round(t_loop, 3), "torch_step_s": round(t_torch, 3),
         "speedup": round(t_torch / t_jax, 2),
         "model_gflop_per_step": round(flops / 1e9, 1), "xla_cost_analysis_gflop": round(xla_flops / 1e9, 1),
         "matmul_peak_gflops": round(peak / 1e9, 1), "jax_mfu": round(mfu, 3),
         "torch_mfu": round(flops / t_torch / peak, 3), "audio_seconds_per_second_jax": round(args.batch * args.seconds / t_jax, 2),
         "matmul_bound_s": round(bound, 3),
         "target_1_5x_step_s": round(target, 3), "target_1_5x_fraction_of_peak": round(bound / target, 3)}
  print(f"\n{args.model}, {args.batch} x {args.seconds} s, {args.threads} threads, {args.dtype}, median of {args.steps} steps")
  print(f"  model FLOPs {flops / 1e9:.0f} GFLOP/step (XLA cost analysis {xla_flops / 1e9:.0f}); "
        f"measured {args.dtype} matmul peak {peak / 1e9:.0f} GFLOP/s")
  for name, t in (("JAX, layers under lax.scan (scan_layers=True)", t_scan),
                  ("JAX, layers unrolled (scan_layers=False)", t_loop), ("PyTorch (transformers)", t_torch)):
    print(f"  {name:<46} {t:7.3f} s/step   MFU {flops / t / peak:.1%}")
  print(f"  speedup of the faster JAX step over PyTorch: {t_torch / t_jax:.2f}x")
  print(f"  the matmul FLOPs alone at the measured peak: {bound:.3f} s; 1.5x PyTorch is {target:.3f} s/step, "
        f"i.e. {bound / target:.0%} of the peak for the whole step")
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(row, indent=2))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
