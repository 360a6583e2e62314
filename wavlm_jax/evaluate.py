"""Decode and score a fine-tuned CTC model on a prepared dataset split.

    python -m wavlm_jax.evaluate --model runs/ft_tiny_letters/best --dataset espeak_speech/small --split test
    python -m wavlm_jax.decoding.ngram --dataset espeak_speech/small --split train --order 4 --output runs/lm4.arpa
    python -m wavlm_jax.evaluate --model runs/ft_tiny_letters/best --dataset espeak_speech/small --split test \
        --lm runs/lm4.arpa --lm-weight 2.0 --word-score -1.0

Greedy CTC decoding by default; with `--lm`, beam search through flashlight-text (decoding/beam.py): for a
letter vocabulary constrained to a lexicon (the word LM's words, or `--lexicon FILE`, one word per line),
for a phoneme vocabulary lexicon-free with a phone n-gram (`python -m wavlm_jax.decoding.ngram --field
phonemes`); `--beam` alone: beam search without a lexicon or LM. WER and CER (letters) or PER (phonemes) with jiwer.
Writes OUTPUT/hypotheses.txt and OUTPUT/references.txt (`id<TAB>text`, one utterance per line),
OUTPUT/utterances.jsonl (id, hypothesis, reference, frames and confidence: the mean over frames of the
top CTC posterior, in log space, as a probability), OUTPUT/scores.json, and prints the score table.
OUTPUT defaults to MODEL/eval-DATASET-SPLIT. `--no-references` decodes without reading the split's
transcripts (unlabelled audio; noisy student's pseudo-labels): nothing is scored.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def evaluate(args) -> dict:
  import jax

  from wavlm_jax import recognize, storage
  from wavlm_jax.data import pipeline
  from wavlm_jax.data.config import data_config
  from wavlm_jax.data.vocab import Vocabulary
  from wavlm_jax.decoding import beam
  from wavlm_jax.models import config as config_lib, directory, params as params_lib, wavlm
  from wavlm_jax.training import mesh as mesh_lib

  vocab = Vocabulary.load(args.model)
  model_cfg = config_lib.for_platform(directory.load_config(args.model), jax.devices()[0].platform)
  if model_cfg.vocab_size != len(vocab):
    raise ValueError(f"{args.model}: the CTC head has {model_cfg.vocab_size} outputs but ctc_vocab.json has "
                     f"{len(vocab)} tokens")
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = mesh_lib.rules_for("dp")
  binder = params_lib.Binder(wavlm.abstract(model_cfg))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = jax.device_put(params_lib.nest(directory.load_flat_params(args.model, model_cfg)), replicated)
  forward = recognize.make_forward(binder, mesh, rules, replicated)

  cfg = data_config(dataset=args.dataset, split=args.split, data_dir=args.data_dir, batching="padded",
                    crop_seconds=args.batch_seconds, batch_size=args.batch_size, num_buckets=args.num_buckets,
                    normalize=bool(model_cfg.normalize_waveform), transcript_key=args.transcript_key,
                    audio_key=args.audio_key)
  decoder = None
  if args.lm or args.beam or args.lexicon:
    words = []
    if args.lexicon:
      words = [w for line in Path(args.lexicon).read_text(encoding="utf-8").splitlines() for w in line.split()[:1]]
    elif args.lm and vocab.kind == "letters":  # a word LM: its words are the lexicon
      words = beam.lm_words(args.lm)
    decoder = beam.BeamDecoder(vocab, words, lm_path=args.lm or None, lm_weight=args.lm_weight,
                               word_score=args.word_score, beam_size=args.beam_size)
  t0 = time.perf_counter()
  batches = pipeline.eval_batches(cfg, vocab, batch_multiple=mesh_lib.batch_devices(mesh),
                                  max_utterances=args.max_utterances, references=not args.no_references)
  result = recognize.transcribe(forward, params, batches, vocab, mesh, decoder=decoder)
  seconds = time.perf_counter() - t0

  # beside the model by default; the model and the output may be gs:// (small text files, written whole)
  out = storage.path(args.output or storage.path(args.model) / f"eval-{args.dataset.replace('/', '_')}-{args.split}")
  out.mkdir(parents=True, exist_ok=True)
  clean = lambda t: " ".join(t.split())
  (out / "hypotheses.txt").write_text("".join(f"{r['id']}\t{clean(r['hypothesis'])}\n" for r in result.records),
                                      encoding="utf-8")
  (out / "utterances.jsonl").write_text("".join(json.dumps({**r, "hypothesis": clean(r["hypothesis"])},
                                                          ensure_ascii=False) + "\n" for r in result.records),
                                      encoding="utf-8")
  if not args.no_references:
    (out / "references.txt").write_text("".join(f"{r['id']}\t{clean(r['reference'])}\n" for r in result.records),
                                        encoding="utf-8")
  decoding = "greedy" if decoder is None else ("beam+lexicon+lm" if args.lm and decoder.lexicon_size else
                                               "beam+lm" if args.lm else "beam+lexicon" if args.lexicon else "beam")
  scores = {"model": str(args.model), "dataset": args.dataset, "split": args.split, "vocabulary": vocab.kind,
            "decoding": decoding, **(result.scores if not args.no_references else {"utterances": len(result.records),
                                                                                  "references": False}),
            "seconds": seconds}
  if decoder is not None and not args.no_references:
    from wavlm_jax.decoding import score
    greedy_scores = score.error_rates([r["reference"] for r in result.records], [r["greedy"] for r in result.records],
                                      vocab.kind)
    scores["greedy"] = {k: v for k, v in greedy_scores.items() if k in ("wer", "cer", "per")}
  if decoder is not None:
    scores |= {"lm": args.lm, "lm_weight": args.lm_weight, "beam_size": args.beam_size,
               "lexicon_words": decoder.lexicon_size}
    if decoder.lexicon_size:  # the word score applies to lexicon words only
      scores["word_score"] = args.word_score
  (out / "scores.json").write_text(json.dumps(scores, indent=2))
  rows = [(k, scores[k]) for k in ("wer", "cer", "per") if k in scores]
  print(f"{args.model} on {args.dataset}:{args.split} ({scores.get('utterances', 0)} utterances, {decoding}, "
        f"{seconds:.1f} s)")
  for name, value in rows:
    extra = f"   (greedy {scores['greedy'][name]:.2%})" if decoder is not None else ""
    print(f"  {name.upper():<4} {value:8.2%}{extra}")
  print(f"  written to {out}")
  return scores


def parse(argv):
  p = argparse.ArgumentParser(prog="python -m wavlm_jax.evaluate", description=__doc__.split("\n\n")[0])
  p.add_argument("--model", required=True, help="a fine-tuned model directory (with ctc_vocab.json)")
  p.add_argument("--dataset", required=True, help="a prepared TFDS dataset, e.g. espeak_speech/small")
  p.add_argument("--split", default="test")
  p.add_argument("--data-dir", default="", help="default: $WAVLM_DATA_DIR, $TFDS_DATA_DIR, ~/tensorflow_datasets")
  p.add_argument("--lm", default="", help="an n-gram LM for beam search: a word LM for letters (ARPA; a KenLM "
                 "binary with --lexicon), a phone LM (ARPA or binary) for phonemes")
  p.add_argument("--lexicon", default="", help="words allowed by the beam search (one per line; default: the ARPA "
                 "file's unigrams)")
  p.add_argument("--beam", action="store_true", help="beam search without a language model")
  p.add_argument("--lm-weight", type=float, default=2.0)
  p.add_argument("--word-score", type=float, default=-1.0)
  p.add_argument("--beam-size", type=int, default=50)
  p.add_argument("--max-utterances", type=int, default=0, help="score only the first N (0: all)")
  p.add_argument("--batch-size", type=int, default=8, help="rows at --batch-seconds of audio per batch")
  p.add_argument("--batch-seconds", type=float, default=16.0)
  p.add_argument("--num-buckets", type=int, default=8)
  p.add_argument("--transcript-key", default="", help="the transcript field (default: the vocabulary's)")
  p.add_argument("--audio-key", default="audio")
  p.add_argument("--output", default="")
  p.add_argument("--no-references", action="store_true",
                 help="never read the transcripts: decode only (unlabelled audio), no scores")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  try:
    evaluate(args)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
