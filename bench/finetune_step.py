"""Our CTC fine-tuning step against transformers' `WavLMForCTC`, side by side on this machine: the same
model config, padded batch, masks, dropouts and LayerDrop, forward + CTC + backward + Adam, the CNN
frozen on both sides, the encoder training (the phase after `freeze_steps`).

    .venv/bin/python bench/finetune_step.py [--model wavlm_base] [--seconds 4,3] [--steps 3]

Ours: `wavlm_jax.finetune`'s loss and `training.optim.finetune_optimizer` through `train.build` on a
one-device mesh (the code a fine-tuning run executes). Theirs: `WavLMForCTC` in train mode with
`freeze_feature_encoder()`, `torch.optim.Adam`, `ctc_loss_reduction="sum"`, attention_mask for the
padding. Prints seconds per step (median) and the ratio; writes bench/results/finetune_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VOCAB = 32
OVERRIDES = dict(mask_prob=0.65, mask_length=10, mask_channel_prob=0.5, mask_channel_length=64, layerdrop=0.1,
                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.1, dropout_input=0.0, final_dropout=0.0,
                 feature_grad_mult=0.0, num_label_classes=0, vocab_size=VOCAB)


def batch(seconds: list[float]):
  import numpy as np

  rng = np.random.default_rng(0)
  n = int(max(seconds) * 16000)
  audio = rng.standard_normal((len(seconds), n)).astype(np.float32)
  pad = np.arange(n)[None] >= (np.array(seconds) * 16000).astype(int)[:, None]
  audio[pad] = 0
  slots = n // 320
  labels = np.full((len(seconds), slots), -1, np.int32)
  lengths = (np.array(seconds) * 12).astype(int)  # ~12 letters per second
  for i, k in enumerate(lengths):
    labels[i, :k] = rng.integers(4, VOCAB, k)
  return audio, pad, labels, lengths.astype(np.int32)


def ours(model_name, seconds, steps):
  import jax
  import numpy as np

  from configs.finetune.common import finetune_config
  from wavlm_jax import finetune, train
  from wavlm_jax.models import config as config_lib
  from wavlm_jax.training import mesh as mesh_lib, optim

  cfg = finetune_config(total_steps=1000)
  cfg.optim.freeze_steps = 0
  model_cfg = config_lib.for_platform(config_lib.model_card(model_name, **OVERRIDES), "cpu")
  mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  rules = mesh_lib.rules_for("dp")
  run = train.build(cfg, mesh, rules, model_cfg=model_cfg, batch_keys=finetune.BATCH_KEYS,
                    optimizer=lambda: optim.finetune_optimizer(cfg.optim, 1000, finetune.parameter_group(model_cfg)),
                    loss_fns=lambda b: {"full": finetune.make_loss_fn(b, cfg, frozen=False)})
  audio, pad, labels, lengths = batch(seconds)
  host = {"audio": audio, "padding_mask": pad, "labels": labels, "label_length": lengths}
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh_lib.BATCH))
  data = {k: jax.device_put(v, sharding) for k, v in host.items()}
  state = run.init()
  step = run.steps["full"].lower(run.abstract_state, {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
                                                        for k, v in host.items()}).compile()
  state, m = step(state, data)
  jax.block_until_ready(m["loss"])
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, data)
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t0)
  assert np.isfinite(float(m["loss"]))
  return statistics.median(times)


def theirs(model_name, seconds, steps, threads):
  import torch
  import transformers

  from wavlm_jax.convert import formats
  from wavlm_jax.models import config as config_lib

  torch.set_num_threads(threads)
  kw = formats.hf_config_dict(config_lib.model_card(model_name, **{k: v for k, v in OVERRIDES.items()
                                                                      if k != "scan_layers"}))
  kind = kw.pop("model_type")
  cls = transformers.WavLMConfig if kind == "wavlm" else transformers.HubertConfig
  arch = transformers.WavLMForCTC if kind == "wavlm" else transformers.HubertForCTC
  config = cls(**kw, ctc_loss_reduction="sum", ctc_zero_infinity=True, pad_token_id=0)
  config.mask_feature_min_masks = 0  # read by channel masking but missing from WavLMConfig (transformers 5.24)
  model = arch(config)
  model.freeze_feature_encoder()
  model.train()
  opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-5, betas=(0.9, 0.98), eps=1e-8)
  audio, pad, labels, _ = batch(seconds)
  x, mask = torch.from_numpy(audio), torch.from_numpy(~pad).long()
  y = torch.from_numpy(labels).long().masked_fill(torch.from_numpy(labels) < 0, -100)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(x, attention_mask=mask, labels=y).loss
    loss.backward()
    opt.step()
    return loss

  step()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="wavlm_base")
  p.add_argument("--seconds", default="4,3", help="utterance lengths of the padded batch")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--layerdrop", type=float, default=0.1, help="both sides (base_10h: 0.1)")
  p.add_argument("--scan-layers", choices=("true", "false"), default="true", help="ours: layer stack under lax.scan")
  p.add_argument("--out", default="bench/results/finetune_step.json")
  args = p.parse_args()
  OVERRIDES["layerdrop"] = args.layerdrop
  OVERRIDES["scan_layers"] = args.scan_layers == "true"
  seconds = [float(s) for s in args.seconds.split(",")]
  jax_s = ours(args.model, seconds, args.steps)
  torch_s = theirs(args.model, seconds, args.steps, args.threads)
  audio = sum(seconds)
  rows = [("wavlm_jax (finetune step)", jax_s), ("transformers WavLMForCTC", torch_s)]
  print(f"{args.model}, batch {seconds} s padded to {max(seconds)} s, {args.steps} timed steps, "
        f"{args.threads} threads, layerdrop {args.layerdrop}, scan_layers {args.scan_layers}")
  print(f"{'':28s} {'s/step':>8s} {'audio-s/s':>10s}")
  for name, s in rows:
    print(f"{name:28s} {s:8.3f} {audio / s:10.2f}")
  print(f"ratio (transformers / ours): {torch_s / jax_s:.2f}x")
  result = {"model": args.model, "seconds": seconds, "steps": args.steps, "threads": args.threads,
            "layerdrop": args.layerdrop, "scan_layers": args.scan_layers == "true",
            "jax_seconds_per_step": jax_s, "torch_seconds_per_step": torch_s, "ratio": torch_s / jax_s}
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
