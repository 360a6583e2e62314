"""Noisy-student rounds for CTC fine-tuning (Park et al. 2020; the combination of Wang et al. 2022's
best rows): the fine-tuned model labels the unlabelled audio, the labels are filtered, and a student is
fine-tuned again on the labelled and pseudo-labelled utterances with fine-tuning's masking as the noise;
the student is the next round's teacher.

    python -m wavlm_jax.noisy_student --config configs/finetune/tiny.py:phonemes,noisy --workdir runs/ns_tiny --rounds 2
    python -m wavlm_jax.noisy_student --config configs/finetune/tiny.py:phonemes,noisy --workdir runs/ns_tiny \\
        --rounds 1 --config.noisy_student.teacher=runs/ft_tiny_phonemes/best

The config is a fine-tuning recipe's with its `noisy_student` block (configs/finetune/common.py): the
labelled subset is `data.split`, the unlabelled audio `noisy_student.unlabelled_split`, and both must lie
in `noisy_student.student_split` (e.g. `train[:80]`, `train[80:]` and `train`). Each round r writes
WORKDIR/round<r>/:
  decode/        the teacher's decoding of the unlabelled split (`python -m wavlm_jax.evaluate
                 --no-references`: greedy, or beam search with `noisy_student.lm`, a word LM for letters
                 (`noisy_student.lexicon`: its words) or a phone LM for phonemes); the unlabelled split's
                 transcripts are never read
  transcripts.jsonl   the labelled utterances with their transcripts and the kept pseudo-labels, which
                 the student trains on (`data.transcripts`)
  pseudo_labels.json  how many were kept and why the others were dropped
  student/       the student's fine-tuning run (its best/ is the next teacher)
Round 0 is the teacher: `noisy_student.teacher` (a fine-tuned model directory), else a fine-tuning run
on the labelled subset in WORKDIR/round0. WORKDIR/summary.json lists every round's validation error.
A finished round is not run again: rerunning the command continues (a preempted fine-tuning run resumes
from its checkpoint, a finished decode is reused), and a larger --rounds adds rounds.

Filtering (Park et al. 2020 filter by a normalised score and by length): a pseudo-label is dropped when
it is empty, when its tokens per second of audio differ from the labelled subset's median rate by more
than `length_tolerance` (relative), or when its confidence (the mean over frames of the top CTC
posterior) is below `min_confidence`; of the rest, the `keep_fraction` most confident are kept.
With `score_pseudo_labels` (default on), pseudo_labels.json also scores the pseudo-labels against the
unlabelled split's transcripts when it has them: a diagnostic read after the labels are made, never used
by them (it reads the unlabelled split a second time, audio included: turn it off for large splits).
"""

from __future__ import annotations

import json

import numpy as np

from wavlm_jax import audio, storage


def _finished(run_dir) -> bool:
  """Whether a fine-tuning run in run_dir ran to its last step (a preempted one writes its summary too)."""
  path = storage.path(run_dir) / "summary.json"
  return path.is_file() and json.loads(path.read_text()).get("status") == "finished"


def _finetune(cfg, run_dir, what: str) -> None:
  from wavlm_jax import finetune

  summary = finetune.finetune(cfg, str(run_dir))
  if summary.get("status") != "finished":
    raise SystemExit(f"{what} stopped at step {summary.get('step')} ({summary.get('status')}): rerun the same "
                     "command to continue it")


def log(msg: str) -> None:
  print(msg, flush=True)


def _split_rows(cfg, split: str, field: str):
  """(id, samples, transcript) of every utterance of `split` of the config's dataset."""
  from wavlm_jax.data import labels as labels_lib, pipeline

  d = cfg.data.copy_and_resolve_references()
  with d.unlocked():
    d.split, d.transcripts = split, ""
  source = pipeline.open_source(d)
  for i in range(len(source)):
    ex = source[i]
    if field not in ex:
      raise KeyError(f"dataset {d.dataset!r} split {split!r} has no transcript field {field!r}")
    value = ex[field]
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    yield labels_lib.utterance_id(ex[d.id_key]), len(ex[d.audio_key]), text


def decode(cfg, teacher: str, out) -> list[dict]:
  """The teacher's hypotheses for the unlabelled split, without reading its transcripts."""
  from wavlm_jax import evaluate

  ns = cfg.noisy_student
  done = storage.path(out) / "scores.json"  # written last: an earlier decode of this round is complete
  if not done.is_file():
    args = ["--model", str(teacher), "--dataset", cfg.data.dataset, "--split", ns.unlabelled_split,
            "--data-dir", cfg.data.data_dir, "--output", str(out), "--no-references",
            "--batch-size", str(cfg.data.batch_size), "--batch-seconds", str(cfg.data.crop_seconds),
            "--num-buckets", str(cfg.data.num_buckets), "--audio-key", cfg.data.audio_key]
    if ns.lm:
      args += ["--lm", ns.lm, "--lm-weight", str(ns.lm_weight), "--word-score", str(ns.word_score),
               "--beam-size", str(ns.beam_size)]
      if ns.lexicon:
        args += ["--lexicon", ns.lexicon]
    if cfg.data.transcript_key:
      args += ["--transcript-key", cfg.data.transcript_key]
    evaluate.evaluate(evaluate.parse(args))
  text = (storage.path(out) / "utterances.jsonl").read_text(encoding="utf-8")
  return [json.loads(line) for line in text.splitlines()]


def select(records: list[dict], vocab, median_rate: float, ns, frame_seconds: float) -> tuple[list[dict], dict]:
  """The pseudo-labels kept by the filter (module docstring), most confident first, and the counts;
  `frame_seconds`: the teacher's frame period (a record's `frames` are its CTC frames)."""
  counts = {"decoded": len(records), "empty": 0, "length_ratio": 0, "confidence": 0, "keep_fraction": 0}
  survivors = []
  for r in records:
    tokens = len(vocab.units(r["hypothesis"]))
    if tokens == 0:
      counts["empty"] += 1
      continue
    rate = tokens / max(r["frames"] * frame_seconds, 1e-6)
    if abs(rate / median_rate - 1.0) > ns.length_tolerance:
      counts["length_ratio"] += 1
      continue
    if r["confidence"] < ns.min_confidence:
      counts["confidence"] += 1
      continue
    survivors.append(r)
  survivors.sort(key=lambda r: -r["confidence"])
  keep = int(np.ceil(len(survivors) * ns.keep_fraction))
  counts["keep_fraction"] = len(survivors) - keep
  counts["kept"] = keep
  return survivors[:keep], counts


def _score(cfg, kept: list[dict], records: list[dict], field: str, vocab) -> dict:
  """Pseudo-label error rates against the unlabelled split's transcripts (a diagnostic)."""
  from wavlm_jax.decoding import score

  try:
    refs = {uid: text for uid, _, text in _split_rows(cfg, cfg.noisy_student.unlabelled_split, field)}
  except KeyError:
    return {"note": "the unlabelled split has no transcripts: not scored"}
  rate = lambda rs: score.error_rates([vocab.reference(refs[r["id"]]) for r in rs], [r["hypothesis"] for r in rs],
                                      vocab.kind) if rs else {}
  pick = lambda d: {k: v for k, v in d.items() if k in ("wer", "cer", "per", "utterances")}
  return {"all_decoded": pick(rate(records)), "kept": pick(rate(kept))}


def _validation(run_dir) -> dict | None:
  path = storage.path(run_dir) / "best.json"
  return json.loads(path.read_text()) if path.is_file() else None


def run(cfg, workdir: str, rounds: int) -> dict:
  from wavlm_jax.data.vocab import KINDS, Vocabulary
  from wavlm_jax.models import directory

  ns = cfg.noisy_student
  if not ns.unlabelled_split:
    raise ValueError("config.noisy_student.unlabelled_split is empty: name the unlabelled audio (e.g. train[80:])")
  if ns.student_init not in ("pretrained", "teacher"):
    raise ValueError(f"config.noisy_student.student_init={ns.student_init!r}: 'pretrained' or 'teacher'")
  root = storage.path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  field = cfg.data.transcript_key or KINDS[cfg.vocab.kind]
  history = []

  # ---- Round 0: the teacher -------------------------------------------------------------------
  if ns.teacher:
    teacher = storage.path(ns.teacher)
    history.append({"round": 0, "model": str(teacher), "validation": _validation(teacher.parent)})
  else:
    first = root / "round0"
    if not _finished(first):
      log(f"round 0: fine-tuning the teacher on {cfg.data.split} in {first}")
      _finetune(cfg, first, "round 0 (the teacher)")
    teacher = first / "best"
    history.append({"round": 0, "model": str(teacher), "validation": _validation(first)})
  vocab = Vocabulary.load(teacher)
  labelled = list(_split_rows(cfg, cfg.data.split, field))
  median_rate = float(np.median([len(vocab.units(t)) / (n / audio.SAMPLE_RATE) for _, n, t in labelled if t]))
  labelled_ids = {uid for uid, _, _ in labelled}
  frame_seconds = 1.0 / audio.frame_rate(directory.load_config(teacher).conv_stride)

  for r in range(1, rounds + 1):
    rdir = root / f"round{r}"
    student = rdir / "student"
    if not _finished(student):
      # ---- Pseudo-labels ----------------------------------------------------------------------
      log(f"round {r}: {teacher} labels {cfg.data.dataset} {ns.unlabelled_split}")
      records = decode(cfg, str(teacher), rdir / "decode")
      both = sorted(labelled_ids & {r["id"] for r in records})
      if both:
        raise ValueError(f"{len(both)} utterance(s) are in both config.data.split={cfg.data.split!r} and "
                         f"config.noisy_student.unlabelled_split={ns.unlabelled_split!r}, e.g. {both[:3]}")
      kept, counts = select(records, vocab, median_rate, ns, frame_seconds)
      stats = {"teacher": str(teacher), "labelled": len(labelled), "median_tokens_per_second": median_rate,
               **counts, "mean_confidence_kept": float(np.mean([k["confidence"] for k in kept])) if kept else None}
      if ns.score_pseudo_labels:
        stats["scores"] = _score(cfg, kept, records, field, vocab)
      (rdir / "pseudo_labels.json").write_text(json.dumps(stats, indent=2))
      lines = [{"id": uid, field: text} for uid, _, text in labelled]
      lines += [{"id": k["id"], field: k["hypothesis"]} for k in kept]
      (rdir / "transcripts.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                             encoding="utf-8")
      log(f"round {r}: kept {len(kept)} of {len(records)} pseudo-labels ({json.dumps(counts)}); student trains "
          f"on {len(lines)} utterances")
      # ---- The student ------------------------------------------------------------------------
      scfg = cfg.copy_and_resolve_references()
      with scfg.unlocked():
        scfg.data.split = ns.student_split
        scfg.data.transcripts = str(rdir / "transcripts.jsonl")
        if ns.student_init == "teacher":
          scfg.init_from = str(teacher)
      student.mkdir(parents=True, exist_ok=True)
      vocab.save(student)  # the teacher's vocabulary: the pseudo-labels are spelled in it
      _finetune(scfg, student, f"round {r}'s student")
    history.append({"round": r, "model": str(student / "best"), "validation": _validation(student),
                    "pseudo_labels": json.loads((rdir / "pseudo_labels.json").read_text(encoding="utf-8"))})
    teacher = student / "best"

  summary = {"workdir": str(root), "rounds": history}
  (root / "summary.json").write_text(json.dumps(summary, indent=2))
  for h in history:
    v = h["validation"] or {}
    kept = h.get("pseudo_labels", {}).get("kept")
    log(f"round {h['round']}: validation {v.get('metric', '?')} {v.get('value', float('nan')):.4f}"
        + (f", {kept} pseudo-labelled utterances" if kept is not None else ""))
  return summary


def main(argv):
  from absl import flags

  del argv
  run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.rounds)


if __name__ == "__main__":
  from absl import flags
  from ml_collections import config_flags

  from wavlm_jax import cli

  config_flags.DEFINE_config_file("config", None, "fine-tuning recipe (configs/finetune/*.py)", lock_config=True)
  flags.DEFINE_string("workdir", None, "the rounds go here")
  flags.DEFINE_integer("rounds", 1, "noisy-student rounds after the teacher (round 0)")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)
