"""SUPERB-style probing of a frozen model: a learned weighted sum of all its hidden states (or one layer)
and a small task head, trained on cached features (docs/probing.md).

  python -m wavlm_jax.probe --task pr  --model DIR                      # phoneme recognition, PER
  python -m wavlm_jax.probe --task sid --model DIR --lr-sweep 1e-1,1e-2,1e-3,1e-4
  python -m wavlm_jax.probe --task asr,sd --model DIR --dataset espeak_speech/small
  python -m wavlm_jax.probe --task sid --model DIR --layer 6 --layer-norm
  python -m wavlm_jax.probe --task asr --model DIR --dataset librispeech_dir/NAME --test-split train[95%:] ...

Tasks: pr (phoneme recognition, CTC, PER), sid (speaker identification, accuracy), asr (letters, BLSTM +
CTC, WER), sd (speaker diarization on two-speaker mixtures with overlap, DER), lid (language
identification, accuracy: needs a corpus with several languages, e.g. espeak_speech/small), phone
(frame-level phone classification on the corpus' alignment, accuracy).

Hidden states of every layer are extracted once per (model, dataset, split) into WORKDIR/features and
reused. Learning rates default to SUPERB's per task (tuned there for 100k-200k steps); steps default
to CPU-sized runs. With --lr-sweep, the learning rate with the best validation result is chosen and its
test result reported (SUPERB changes only the learning rate). Outputs in WORKDIR (default
runs/probe/<model dir name>): results.json (every task run there so far), layer_weights.png (the learned
softmax weights per task), and a printed table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from wavlm_jax.data import paths

DEFAULT_DATASET = "espeak_speech/tiny"


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m wavlm_jax.probe", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", required=True, help="one task or a comma-separated list: pr, sid, asr, sd, lid, phone")
  p.add_argument("--model", required=True, help="a wavlm_jax model directory")
  p.add_argument("--dataset", default=DEFAULT_DATASET, help="a prepared TFDS dataset (default %(default)s)")
  p.add_argument("--data-dir", default="", help="TFDS data dir (default: $WAVLM_DATA_DIR, $TFDS_DATA_DIR, ~/tensorflow_datasets)")
  p.add_argument("--workdir", default="", help="results and feature cache (default runs/probe/<model dir name>)")
  p.add_argument("--train-split", default="train")
  p.add_argument("--valid-split", default="validation")
  p.add_argument("--test-split", default="test")
  p.add_argument("--lr", type=float, default=None, help="learning rate (default: SUPERB's for the task)")
  p.add_argument("--lr-sweep", default="", help="comma-separated learning rates; the best on validation is kept")
  p.add_argument("--steps", type=int, default=None, help="training steps (default: per task, CPU-sized)")
  p.add_argument("--batch-size", type=int, default=8, help="rows per step (rounded up to a multiple of --train-devices)")
  p.add_argument("--eval-every", type=int, default=0, help="validate every N steps and keep the best (0: at the end)")
  p.add_argument("--layer", type=int, default=None, help="use hidden state N only (0 = input of layer 1)")
  p.add_argument("--layer-norm", action="store_true", help="non-affine LayerNorm on each hidden state first")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--train-devices", type=int, default=1,
                 help="devices the probe trains on, rows sharded (0: all; extraction always uses all)")
  head = p.add_argument_group("heads (defaults: SUPERB's)")
  head.add_argument("--project-dim", type=int, default=None, help="projector width (pr/sid/lid 256, asr 1024; 0: none)")
  head.add_argument("--rnn-hidden", type=int, default=None, help="LSTM units per direction (asr 1024, sd 512)")
  head.add_argument("--rnn-layers", type=int, default=None, help="LSTM layers (asr 2, sd 1)")
  data = p.add_argument_group("dataset fields")
  data.add_argument("--audio-field", default="audio")
  data.add_argument("--text-field", default="text", help="asr transcripts")
  data.add_argument("--phoneme-field", default="phonemes", help="pr transcripts (space-separated phones)")
  data.add_argument("--speaker-field", default="speaker", help="sid classes, sd voices")
  data.add_argument("--language-field", default="language", help="lid classes")
  data.add_argument("--alignment-field", default="phone_alignment", help="phone: one phone id per label")
  data.add_argument("--label-rate", type=float, default=100.0, help="alignment labels per second")
  ext = p.add_argument_group("feature extraction")
  ext.add_argument("--extract-batch-size", type=int, default=8)
  ext.add_argument("--length-levels", type=int, default=4,
                   help="padded lengths per split (each one compilation; fewer: more padding)")
  ext.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32")
  ext.add_argument("--max-seconds", type=float, default=60.0, help="skip (and count) longer utterances")
  ext.add_argument("--max-utterances", type=int, default=0, help="use the first N utterances of each split")
  ext.add_argument("--sd-mixtures", type=int, default=0, help="mixtures per split (default: one per utterance)")
  return p


def _lrs(args, task) -> list[float]:
  if args.lr_sweep:
    try:
      return [float(v) for v in args.lr_sweep.split(",") if v.strip()]
    except ValueError:
      raise SystemExit(f"--lr-sweep {args.lr_sweep!r}: expected comma-separated numbers like 1e-2,1e-3") from None
  return [args.lr if args.lr is not None else task.lr]


# ================================================================================================
# Features
# ================================================================================================
def split_features(args, task, extractor, split: str, workdir: Path):
  """The cached hidden states of one split (for sd: of two-speaker mixtures made from it)."""
  from wavlm_jax.probing import features, tasks

  common = {"dtype": args.cache_dtype, "max_seconds": args.max_seconds, "max_utterances": args.max_utterances}
  if task.kind != tasks.ACTIVITY:
    return features.dataset_features(extractor, args.dataset, split, workdir, data_dir=args.data_dir,
                                     audio_field=args.audio_field, **common)
  source = features.open_split(args.dataset, split, args.data_dir)
  mixtures = tasks.Mixtures(source, speaker_field=args.speaker_field, count=args.sd_mixtures, seed=args.seed,
                            split=split, config=extractor.config, audio_field=args.audio_field, name=args.dataset)
  key = {"dataset": args.dataset, "data_dir": str(Path(paths.data_dir(args.data_dir)).absolute()), "split": split,
         "mixtures": len(mixtures), "seed": args.seed, "speaker_field": args.speaker_field}
  folder = workdir / "features" / features.slug(args.dataset) / (features.slug(split) + "-sd_mixtures")
  return features.extract(extractor, mixtures, folder, key, **common)


# ================================================================================================
# One task
# ================================================================================================
def run_task(args, task, extractor, workdir: Path) -> dict:
  """Extracts (or reuses) the features, trains one probe per learning rate, tests the best."""
  from wavlm_jax import audio
  from wavlm_jax.probing import tasks

  names = {"train": args.train_split, "validation": args.valid_split, "test": args.test_split}
  feats = {role: split_features(args, task, extractor, split, workdir) for role, split in names.items()}
  fields = tasks.Fields(args.text_field, args.phoneme_field, args.speaker_field, args.language_field,
                        args.alignment_field, args.label_rate)
  data = tasks.build(task, feats, fields, audio.frame_rate(extractor.config.conv_stride))
  rows = tasks.rows_for(args.batch_size, args.train_devices)
  layers = slice(None) if args.layer is None else args.layer
  for role, split in names.items():
    if not data.keep[role]:
      raise ValueError(f"{task.name}: no usable utterance in {args.dataset} split {split!r} ({role}); "
                       + "; ".join(data.notes))
  batches = {"train": tasks.Batches(task.kind, feats["train"], data, "train", rows, layers, count=args.length_levels)}
  for role in ("validation", "test"):
    batches[role] = tasks.Batches(task.kind, feats[role], data, role, rows, layers, batches["train"].levels)
  options = {"project_dim": args.project_dim, "rnn_hidden": args.rnn_hidden, "rnn_layers": args.rnn_layers}
  steps = args.steps if args.steps is not None else task.steps
  runs, best = [], None
  for lr in _lrs(args, task):
    probe = tasks.build_probe(task, extractor.num_states, feats["train"].dim, data.classes, options,
                              layer=args.layer, layer_norm=args.layer_norm, seed=args.seed)
    result = tasks.fit(task, data, probe, batches["train"], batches["validation"], lr=lr, steps=steps,
                       eval_every=args.eval_every, seed=args.seed, devices=args.train_devices)
    runs.append({"lr": lr, "validation": result.validation, "best_step": result.best_step,
                 "seconds": round(result.seconds, 1), "history": result.history, "diverged": result.diverged})
    if result.diverged:
      continue
    if best is None or tasks.better(task, result.validation[task.metric], best.validation[task.metric]):
      best = result
  if best is None:
    tried = ", ".join(f"{r['lr']:g}" for r in runs)
    raise ValueError(f"{task.name}: the loss went non-finite at every learning rate tried ({tried}); try "
                     "smaller ones (--lr / --lr-sweep)")
  test = tasks.evaluate(task, data, "test", tasks.predict(best.probe, batches["test"], args.train_devices))
  return {
      "task": task.name, "title": task.title, "metric": task.metric, "higher_is_better": task.higher_is_better,
      "dataset": args.dataset, "splits": names, "steps": steps, "batch_size": rows, "best_lr": best.lr,
      "validation": best.validation, "test": test, "layer": args.layer, "layer_norm": args.layer_norm,
      "layer_weights": best.layer_weights, "classes": data.classes, "runs": runs, "notes": data.notes,
      "utterances": {role: len(batches[role]) for role in names},
      "superb": {"lr": task.lr, "steps": task.superb_steps}, "head": {**task.head, **{k: v for k, v in options.items() if v is not None}},
  }


def table(results: dict) -> str:
  lines = [f"{'task':<6} {'metric':<9} {'lr':>8} {'validation':>11} {'test':>8}  layer weights (0..L)"]
  for name, r in results.items():
    weights = " ".join(f"{w:.2f}" for w in r["layer_weights"])
    lines.append(f"{name:<6} {r['metric']:<9} {r['best_lr']:>8.0e} {r['validation'][r['metric']]:>11.4f} "
                 f"{r['test'].get(r['metric'], float('nan')):>8.4f}  {weights}")
  return "\n".join(lines)


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from wavlm_jax import cli, storage
  cli.use_cpu_without_accelerators()

  from wavlm_jax.probing import features, plots, tasks

  try:
    chosen = [tasks.get(t.strip()) for t in args.task.split(",") if t.strip()]
  except KeyError as e:
    print(f"error: --task: {e.args[0]}", file=sys.stderr)
    return 2
  model = storage.path(args.model)  # may be gs://; the workdir is local (plots, caches)
  problem = features.usage_error(model, {"--steps": args.steps, "--batch-size": args.batch_size,
                                         "--length-levels": args.length_levels})
  if problem is None and args.workdir and storage.is_url(args.workdir):
    problem = f"--workdir {args.workdir}: a local directory (feature caches and plots are written there)"
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  workdir = Path(args.workdir or Path("runs/probe") / features.model_name(model))
  workdir.mkdir(parents=True, exist_ok=True)
  out = workdir / "results.json"
  results = json.loads(out.read_text()) if out.is_file() else {}
  extractor = features.Extractor(model, batch_size=args.extract_batch_size, levels=args.length_levels)
  if args.layer is not None and not 0 <= args.layer < extractor.num_states:
    print(f"error: --layer {args.layer}: {model} has hidden states 0..{extractor.num_states - 1}", file=sys.stderr)
    return 2
  start = time.time()
  this_run = {}
  for task in chosen:
    print(f"== {task.name}: {task.title} on {args.dataset}")
    try:
      this_run[task.name] = run_task(args, task, extractor, workdir)
    except (KeyError, ValueError, FileNotFoundError) as e:
      print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
      return 2
    results[task.name] = {**this_run[task.name], "model": str(model.absolute())}
    out.write_text(json.dumps(results, indent=1))
  plots.layer_weights({k: v["layer_weights"] for k, v in results.items()}, workdir / "layer_weights.png",
                      title=f"learned layer weights: {features.model_name(model)} on {args.dataset}")
  print(table(this_run))
  print(f"results: {out}; plot: {workdir / 'layer_weights.png'} ({time.time() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
