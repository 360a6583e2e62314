"""Layer-wise analysis of a frozen model: for every hidden state (0 = the input of the first Transformer
layer, then each layer's output), a linear phone probe (frame level, accuracy on the corpus' phone
alignment), a linear speaker probe (mean over the utterance's frames, accuracy), and with --pnmi the phone
PNMI of a k-means of that layer's frames (docs/probing.md#layer-wise-analysis).

  python -m wavlm_jax.analysis.layerwise --model DIR                       # espeak_speech/tiny
  python -m wavlm_jax.analysis.layerwise --model DIR --pnmi --clusters 100 --dataset espeak_speech/small
  python -m wavlm_jax.analysis.layerwise --model DIR --workdir runs/probe/NAME   # share the probe's cache

Probes train on --train-split, keep their best --valid-split result, and are scored on --test-split;
k-means is fitted on the train frames and PNMI measured on the test frames. Outputs in WORKDIR (default
runs/layerwise/<model dir name>): layerwise.json (one entry per hidden state), layerwise.png (every
curve over the layers), and a printed table. A dataset without the alignment field gets the speaker
probe only, and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m wavlm_jax.analysis.layerwise", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, help="a wavlm_jax model directory")
  p.add_argument("--dataset", default="espeak_speech/tiny")
  p.add_argument("--data-dir", default="")
  p.add_argument("--workdir", default="", help="results and feature cache (default runs/layerwise/<model dir name>)")
  p.add_argument("--train-split", default="train")
  p.add_argument("--valid-split", default="validation")
  p.add_argument("--test-split", default="test")
  p.add_argument("--steps", type=int, default=300, help="training steps of each linear probe")
  p.add_argument("--phone-lr", type=float, default=1e-2, help="Adam learning rate of the phone probes")
  p.add_argument("--speaker-lr", type=float, default=1e-1,
                 help="Adam learning rate of the speaker probes (utterance means vary little: a larger step)")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--pnmi", action="store_true", help="also k-means each layer and measure phone PNMI")
  p.add_argument("--clusters", type=int, default=50, help="k of the per-layer k-means (--pnmi)")
  p.add_argument("--speaker-field", default="speaker")
  p.add_argument("--alignment-field", default="phone_alignment")
  p.add_argument("--label-rate", type=float, default=100.0, help="alignment labels per second")
  p.add_argument("--audio-field", default="audio")
  p.add_argument("--extract-batch-size", type=int, default=8)
  p.add_argument("--length-levels", type=int, default=4, help="padded lengths per split (each one compilation)")
  p.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32")
  p.add_argument("--max-utterances", type=int, default=0, help="use the first N utterances of each split")
  p.add_argument("--train-devices", type=int, default=1, help="devices a probe trains on (0: all)")
  return p


def _probe_curve(task, data, feats, args, num_states, lr, log) -> list[float]:
  """Test accuracy of a linear probe on each hidden state alone."""
  from wavlm_jax.probing import tasks

  rows = tasks.rows_for(args.batch_size, args.train_devices)
  scores = []
  for layer in range(num_states):
    batches = {"train": tasks.Batches(task.kind, feats["train"], data, "train", rows, layer, count=args.length_levels)}
    for r in ("validation", "test"):
      batches[r] = tasks.Batches(task.kind, feats[r], data, r, rows, layer, batches["train"].levels)
    # Batches hold the one state; a one-state probe has the same structure for every layer: one compilation.
    probe = tasks.build_probe(task, 1, feats["train"].dim, data.classes, {"project_dim": 0}, layer=0,
                              seed=args.seed)
    fit = tasks.fit(task, data, probe, batches["train"], batches["validation"], lr=lr, steps=args.steps,
                    seed=args.seed, devices=args.train_devices, log=lambda _: None)
    test = tasks.evaluate(task, data, "test", tasks.predict(fit.probe, batches["test"], args.train_devices))
    scores.append(test["accuracy"])
    log(f"  {task.name} probe, hidden state {layer}: test accuracy {test['accuracy']:.4f}")
  return scores


def _pnmi_curve(data, feats, args, num_states, log) -> list[float]:
  """Phone PNMI of a k-means of each hidden state (fitted on train frames, measured on test frames)."""
  import numpy as np

  from wavlm_jax.targets import kmeans, quality

  ref = np.concatenate(data.targets["test"])
  scores = []
  for layer in range(num_states):
    km = kmeans.fit(feats["train"].layer(layer), args.clusters, seed=args.seed, max_iter=50)
    hyp = kmeans.assign(feats["test"].layer(layer), km.centroids)
    acc = quality.QualityAccumulator(data.classes, args.clusters)
    labelled = ref >= 0
    acc.add(ref[labelled], hyp[labelled])
    scores.append(acc.result().pnmi)
    log(f"  k-means ({args.clusters}), hidden state {layer}: PNMI {scores[-1]:.4f}")
  return scores


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from wavlm_jax import cli
  cli.use_cpu_without_accelerators()

  import numpy as np

  from wavlm_jax import audio, storage
  from wavlm_jax.probing import features, plots, tasks

  model = storage.path(args.model)  # may be gs://; the workdir is local (plots, caches)
  problem = features.usage_error(model, {"--steps": args.steps, "--batch-size": args.batch_size,
                                         "--clusters": args.clusters, "--length-levels": args.length_levels})
  if problem is None and args.workdir and storage.is_url(args.workdir):
    problem = f"--workdir {args.workdir}: a local directory (feature caches and plots are written there)"
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  workdir = Path(args.workdir or Path("runs/layerwise") / features.model_name(model))
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  extractor = features.Extractor(model, batch_size=args.extract_batch_size, levels=args.length_levels)
  splits = {"train": args.train_split, "validation": args.valid_split, "test": args.test_split}
  try:
    feats = {r: features.dataset_features(extractor, args.dataset, s, workdir, data_dir=args.data_dir,
                                          audio_field=args.audio_field, dtype=args.cache_dtype,
                                          max_utterances=args.max_utterances) for r, s in splits.items()}
  except (KeyError, ValueError, FileNotFoundError) as e:
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 2
  num_states = extractor.num_states
  fields = tasks.Fields(speaker=args.speaker_field, alignment=args.alignment_field, label_rate=args.label_rate)
  frame_rate = audio.frame_rate(extractor.config.conv_stride)
  curves, chance, notes = {}, {}, []

  if args.alignment_field in feats["train"].meta["fields"]:
    phone = tasks.get("phone")
    data = tasks.build(phone, feats, fields, frame_rate)
    print(f"== linear phone probe ({data.classes} phones) per hidden state")
    curves["phone accuracy"] = _probe_curve(phone, data, feats, args, num_states, args.phone_lr, print)
    counts = np.bincount(np.concatenate([t[t >= 0] for t in data.targets["test"]]), minlength=data.classes)
    chance["phone accuracy"] = float(counts.max() / max(counts.sum(), 1))  # always the most frequent phone
    if args.pnmi:
      print(f"== phone PNMI of k-means ({args.clusters} clusters) per hidden state")
      curves["phone PNMI"] = _pnmi_curve(data, feats, args, num_states, print)
  else:
    notes.append(f"{args.dataset} has no field {args.alignment_field!r} (--alignment-field): no phone probe "
                 f"or PNMI; its fields: {feats['train'].field_names}")
  try:
    sid = tasks.get("sid")
    data = tasks.build(sid, feats, fields, frame_rate)
    print(f"== linear speaker probe ({data.classes} speakers) per hidden state")
    curves["speaker accuracy"] = _probe_curve(sid, data, feats, args, num_states, args.speaker_lr, print)
    chance["speaker accuracy"] = 1.0 / data.classes
    notes += data.notes
  except (KeyError, ValueError) as e:
    notes.append(f"no speaker probe: {e.args[0]}")
  if not curves:
    print("error: nothing to measure: " + "; ".join(notes), file=sys.stderr)
    return 2

  entries = [{"hidden_state": i, **{name.replace(" ", "_"): values[i] for name, values in curves.items()}}
             for i in range(num_states)]
  result = {"model": str(model.absolute()), "dataset": args.dataset, "splits": splits, "steps": args.steps,
            "lr": {"phone": args.phone_lr, "speaker": args.speaker_lr}, "clusters": args.clusters if args.pnmi else None, "hidden_states": entries,
            "chance": chance, "notes": notes}
  (workdir / "layerwise.json").write_text(json.dumps(result, indent=1))
  plots.layer_curves(curves, workdir / "layerwise.png", title=f"{features.model_name(model)} on {args.dataset}",
                     chance=chance)
  names = list(curves)
  print(f"{'state':>5} " + " ".join(f"{n:>17}" for n in names))
  for e in entries:
    print(f"{e['hidden_state']:>5} " + " ".join(f"{e[n.replace(' ', '_')]:>17.4f}" for n in names))
  print("chance: " + ", ".join(f"{k} {v:.4f}" for k, v in chance.items()))
  for note in notes:
    print(f"note: {note}")
  print(f"results: {workdir / 'layerwise.json'}; plot: {workdir / 'layerwise.png'} ({time.time() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
