"""Supervision-guided codebooks in miniature (Wang et al. 2022, issue 13): four target codebooks for the
same pre-training, each arm pre-trained with the same budget from the same initialisation, then
fine-tuned with CTC on the same small labelled subset and scored on held-out voices.

    .venv/bin/python bench/codebooks.py [--workdir runs/bench_codebooks] [--out bench/results/codebooks.json]

On the embedded corpus (`espeak_speech/small`: 640 train utterances, ~48 min; the first --labelled of
them, ~6 min, are the labelled subset; the rest is used as unlabelled audio, the labelled part too, as
LibriSpeech 100 h sits inside 960 h):

1. MFCC k-means (k = --k) of the train split; the MFCC arm pre-trains on it (HuBERT iteration 1). Its
   model is the teacher of the later arms, as in the papers.
2. A phoneme recognizer: the MFCC arm's model fine-tuned with CTC on the labelled subset only.
3. Three more codebooks: k-means of the MFCC model's layer 1 (hidden units, HuBERT iteration 2),
   k-means of the recognizer's top layer (CTC clustering) and the recognizer's aligned phonemes (PBERT).
   Each is scored against the true phone alignment (validation split): PNMI, phone and cluster purity.
4. The other three arms pre-train like the first (same recipe, seed and steps: the same initial
   parameters), then every arm is fine-tuned on the labelled subset (same recipe and steps) and its best
   checkpoint (validation PER) scored with greedy decoding: PER on `test` (the training voices, unseen
   sentences) and `test_unseen` (held-out voices).
5. The paper's combination: --noisy-rounds noisy-student rounds (python -m wavlm_jax.noisy_student) on the
   PBERT arm, its fine-tuned model the teacher, the rest of the train split the unlabelled audio.

Every stage runs the project's command lines as a user would (logs in WORKDIR/logs) and is skipped when
its output exists, so an interrupted run continues. Prints a table and writes --out (JSON). The tiny
model (2 layers, width 64) and the budgets (defaults: 600 pre-training steps per arm, 500 fine-tuning
steps, 600 for the recognizer) keep the whole run within an hour on 2 CPU cores; the README section
"Supervision-guided codebooks in miniature" has the measured table and what it does and does not show.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = "espeak_speech/small"
ARMS = ("mfcc", "hidden", "ctc", "pbert")
NAMES = {"mfcc": "MFCC k-means", "hidden": "hidden units (it. 2)", "ctc": "CTC clustering", "pbert": "PBERT phonemes"}


class Bench:

  def __init__(self, args):
    self.args = args
    self.work = Path(args.workdir).resolve()
    (self.work / "logs").mkdir(parents=True, exist_ok=True)
    self.env = dict(os.environ, PYTHONPATH=str(REPO), WAVLM_DATA_DIR=str(self.work / "data"))
    self._times = self.work / "stage_seconds.json"  # kept across invocations: a resumed run's total
    self.seconds: dict[str, float] = json.loads(self._times.read_text()) if self._times.is_file() else {}

  def run(self, stage: str, done: Path, args: list[str]) -> None:
    """Runs `python -m args...` unless `done` exists; its output goes to logs/<stage>.log."""
    if done.exists():
      print(f"[{stage}] done before ({done})", flush=True)
      return
    print(f"[{stage}] python -m {' '.join(args)}", flush=True)
    start = time.perf_counter()
    with open(self.work / "logs" / f"{stage}.log", "w") as log:
      code = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=self.env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    self.seconds[stage] = time.perf_counter() - start
    self._times.write_text(json.dumps(self.seconds, indent=2))
    if code != 0:
      raise SystemExit(f"[{stage}] failed ({code}); see {self.work / 'logs' / (stage + '.log')}")
    print(f"[{stage}] {self.seconds[stage] / 60:.1f} min", flush=True)

  def tokenize(self, arm: str, config: str, *flags: str) -> Path:
    workdir = self.work / "tokenizer" / arm
    self.run(f"tokenize_{arm}", workdir / "report_validation.json",
             ["wavlm_jax.targets.tokenize", "--config", f"configs/{config}:small", f"--config.workdir={workdir}",
              "--config.n_init=1", *flags])
    return workdir

  def pretrain(self, arm: str, labels: Path) -> Path:
    workdir = self.work / "pretrain" / arm
    a = self.args
    self.run(f"pretrain_{arm}", workdir / "model" / "config.json",
             ["wavlm_jax.train", "--config", "configs/tiny.py", "--workdir", str(workdir),
              f"--config.data.dataset={DATASET}", f"--config.data.labels={labels / 'labels' / 'train'}",
              "--config.model.num_label_classes=100", f"--config.total_steps={a.pretrain_steps}",
              f"--config.checkpoint.every_steps={a.pretrain_steps}", "--config.log_every=50",
              "--config.audio_every=0"])
    return workdir / "model"

  def finetune(self, name: str, init: Path, steps: int) -> Path:
    workdir = self.work / "finetune" / name
    self.run(f"finetune_{name}", workdir / "summary.json",
             ["wavlm_jax.finetune", "--config", "configs/finetune/tiny.py:phonemes", "--workdir", str(workdir),
              f"--config.init_from={init}", f"--config.data.split=train[:{self.args.labelled}]",
              f"--config.total_steps={steps}", f"--config.checkpoint.every_steps={steps}"])
    return workdir / "best"

  def noisy_student(self, name: str, teacher: Path, init: Path) -> Path:
    workdir = self.work / "noisy_student" / name
    a = self.args
    self.run(f"noisy_student_{name}", workdir / "summary.json",
             ["wavlm_jax.noisy_student", "--config", "configs/finetune/tiny.py:phonemes,noisy", "--workdir",
              str(workdir), f"--rounds={a.noisy_rounds}", f"--config.noisy_student.teacher={teacher}",
              f"--config.init_from={init}", f"--config.data.split=train[:{a.labelled}]",
              f"--config.noisy_student.unlabelled_split=train[{a.labelled}:]",
              f"--config.total_steps={a.finetune_steps}", f"--config.checkpoint.every_steps={a.finetune_steps}"])
    return workdir / f"round{a.noisy_rounds}" / "student" / "best"

  def evaluate(self, name: str, model: Path, split: str) -> dict:
    out = self.work / "eval" / f"{name}-{split}"
    self.run(f"eval_{name}_{split}", out / "scores.json",
             ["wavlm_jax.evaluate", "--model", str(model), "--dataset", DATASET, "--split", split,
              "--output", str(out)])
    return json.loads((out / "scores.json").read_text())


def _quality(workdir: Path) -> dict:
  r = json.loads((workdir / "report_validation.json").read_text())
  return {k: r[k] for k in ("pnmi", "phone_purity", "cluster_purity", "clusters_used", "num_clusters")}


def _per(scores: dict) -> float:
  return float(scores["per"])


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/bench_codebooks")
  p.add_argument("--out", default="bench/results/codebooks.json")
  p.add_argument("--labelled", type=int, default=80, help="labelled subset: the first N train utterances")
  p.add_argument("--k", type=int, default=50, help="clusters of every k-means codebook")
  p.add_argument("--pretrain-steps", type=int, default=600)
  p.add_argument("--finetune-steps", type=int, default=500)
  p.add_argument("--recognizer-steps", type=int, default=600)
  p.add_argument("--noisy-rounds", type=int, default=1,
                 help="noisy-student rounds after fine-tuning the PBERT arm (0: none)")
  args = p.parse_args()
  start = time.perf_counter()
  b = Bench(args)
  k = f"--config.k={args.k}"

  books = {"mfcc": b.tokenize("mfcc", "tokenize_mfcc.py", k)}
  models = {"mfcc": b.pretrain("mfcc", books["mfcc"])}
  recognizer = b.finetune("recognizer", models["mfcc"], args.recognizer_steps)
  books["hidden"] = b.tokenize("hidden", "tokenize_hidden.py", k, f"--config.checkpoint={models['mfcc']}",
                               "--config.layer=1")
  books["ctc"] = b.tokenize("ctc", "tokenize_ctc.py", k, f"--config.checkpoint={recognizer}", "--config.layer=2")
  books["pbert"] = b.tokenize("pbert", "tokenize_pbert.py", f"--config.checkpoint={recognizer}")
  for arm in ARMS[1:]:
    models[arm] = b.pretrain(arm, books[arm])
  rows = []
  for arm in ARMS:
    best = b.finetune(arm, models[arm], args.finetune_steps)
    scores = {split: b.evaluate(arm, best, split) for split in ("test", "test_unseen")}
    pre = json.loads((b.work / "pretrain" / arm / "summary.json").read_text())
    rows.append({"arm": arm, "name": NAMES[arm], **_quality(books[arm]),
                 "pretrain_final_acc_masked": pre.get("final_acc_masked"),
                 "pretrain_chance": pre.get("chance_accuracy"),
                 "per_test": _per(scores["test"]), "per_test_unseen": _per(scores["test_unseen"])})
  if args.noisy_rounds:  # the paper's combination: the supervised codebook, then noisy student
    best = b.noisy_student("pbert", b.work / "finetune" / "pbert" / "best", models["pbert"])
    scores = {split: b.evaluate("pbert_ns", best, split) for split in ("test", "test_unseen")}
    ns = json.loads((b.work / "noisy_student" / "pbert" / "summary.json").read_text())
    last = ns["rounds"][-1]["pseudo_labels"]
    rows.append({**rows[-1], "arm": "pbert_ns", "name": f"PBERT + NS ({args.noisy_rounds} round)",
                 "per_test": _per(scores["test"]), "per_test_unseen": _per(scores["test_unseen"]),
                 "pseudo_labels_kept": last["kept"], "pseudo_label_per": last["scores"]["kept"].get("per")})
  recognizer_scores = b.evaluate("recognizer", recognizer, "test_unseen")

  print(f"\n{DATASET}: labelled subset train[:{args.labelled}], k = {args.k}, pre-training "
        f"{args.pretrain_steps} steps per arm, fine-tuning {args.finetune_steps} steps")
  print(f"{'codebook':22s} {'PNMI':>6s} {'ph.pur':>7s} {'cl.pur':>7s} {'units':>6s} {'acc_m':>6s} "
        f"{'PER test':>9s} {'PER unseen':>11s}")
  for r in rows:
    print(f"{r['name']:22s} {r['pnmi']:6.3f} {r['phone_purity']:7.3f} {r['cluster_purity']:7.3f} "
          f"{r['clusters_used']:6d} {r['pretrain_final_acc_masked'] or 0:6.3f} {r['per_test']:9.3f} "
          f"{r['per_test_unseen']:11.3f}")
  print(f"the recognizer itself (labelled subset only, greedy): PER unseen {_per(recognizer_scores):.3f}")
  minutes = (time.perf_counter() - start) / 60
  total = sum(b.seconds.values()) / 60
  print(f"{total:.1f} min in all stages ({minutes:.1f} min in this invocation)")
  result = {"dataset": DATASET, "labelled": f"train[:{args.labelled}]", "k": args.k,
            "pretrain_steps": args.pretrain_steps, "finetune_steps": args.finetune_steps,
            "recognizer_steps": args.recognizer_steps, "rows": rows,
            "recognizer_per_test_unseen": _per(recognizer_scores),
            "noisy_rounds": args.noisy_rounds,
            "stage_minutes": {k: round(v / 60, 2) for k, v in b.seconds.items()}, "minutes": round(total, 1)}
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2))
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
