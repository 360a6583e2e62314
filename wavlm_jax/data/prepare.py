"""Command line: build a dataset as TFDS ArrayRecord in the data dir (the one data-dir rule: --data-dir,
else $WAVLM_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets).

  python -m wavlm_jax.data.prepare espeak_speech/tiny                       # the embedded corpus
  python -m wavlm_jax.data.prepare librispeech_dir /data/LibriSpeech --name ls960 --validation-fraction 0.01
  python -m wavlm_jax.data.prepare audio_dir /data/librilight/small --name librilight_small
  python -m wavlm_jax.data.prepare noise_dir /data/musan/noise --name musan
  python -m wavlm_jax.data.prepare librilight_dir /data/librilight --subset small        # -> librilight_dir/small
  python -m wavlm_jax.data.prepare gigaspeech_dir /data/GigaSpeech --subset XL           # -> gigaspeech_dir/xl
  python -m wavlm_jax.data.prepare voxpopuli_dir /data/voxpopuli/unlabelled_data --languages en --name en
  python -m wavlm_jax.data.prepare librilight_dir /data/librilight --subset small \
      --beam-options runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing

A folder dataset is then named KIND/NAME in configs (e.g. `--config.data.dataset=librispeech_dir/ls960`;
NAME defaults to the subset, else the folder's own name). Unreadable, empty, NaN, silent and too-short
files are skipped and listed with the reason (`skipped.json` beside the dataset); other sample rates are
resampled to 16 kHz and channels down-mixed. The corpora's layouts: docs/data.md.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
  from wavlm_jax.data import builders, paths

  p = argparse.ArgumentParser(prog="python -m wavlm_jax.data.prepare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  kinds = builders.folder_builders()
  p.add_argument("kind", help="espeak_speech/CONFIG, or a folder kind: " + ", ".join(sorted(kinds)))
  p.add_argument("path", nargs="?", help="the folder (folder kinds only)")
  p.add_argument("--name", default="", help="the dataset's config name: KIND/NAME (default: the subset, else the "
                 "folder's own name)")
  p.add_argument("--data-dir", default="")
  p.add_argument("--min-seconds", type=float, default=0.5, help="shorter files are skipped")
  p.add_argument("--validation-fraction", type=float, default=0.0,
                 help="held out as a 'validation' split by a stable hash of each file (0: train only)")
  p.add_argument("--subset", default="", help="librilight_dir: small,medium,large,duplicate (comma-separated; "
                 "default all present); gigaspeech_dir: XS, S, M, L or XL (default XL)")
  p.add_argument("--max-seconds", type=float, default=0.0,
                 help="librilight_dir, voxpopuli_dir: the longest piece cut from a recording (default 15.6)")
  p.add_argument("--languages", default="", help="voxpopuli_dir: languages kept, comma-separated (default all)")
  p.add_argument("--beam-options", default="", help="build as an Apache Beam pipeline (librilight_dir, gigaspeech_dir, "
                 "voxpopuli_dir) with these pipeline options, e.g. "
                 "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing (docs/data.md)")
  args = p.parse_args(argv)
  options = {"subset": args.subset, "max_seconds": args.max_seconds,
             "languages": tuple(s for s in args.languages.split(",") if s)}
  data_dir = paths.data_dir(args.data_dir)
  if args.kind in kinds:
    if not args.path:
      p.error(f"{args.kind} needs the folder to read")
    if args.path.startswith(("gs://", "s3://")):
      p.error(f"{args.path}: audio folders are read from local disk (or a gcsfuse mount); --data-dir may be a bucket")
    if not os.path.isdir(args.path):
      p.error(f"{args.path}: not a directory")
    name = args.name or builders.default_name(args.path, args.subset)
    try:
      builders.folder_config(args.kind, args.path, name=name, validation_fraction=args.validation_fraction,
                             **options)  # an option the kind does not read, a subset it lacks: usage errors
    except ValueError as e:
      p.error(str(e))
    if args.beam_options and not getattr(kinds[args.kind], "READER", None):
      p.error(f"--beam-options: {args.kind} is built in-process only (Beam: librilight_dir, gigaspeech_dir, "
              "voxpopuli_dir)")
    try:
      builder = builders.prepare_folder(args.kind, args.path, data_dir, name=name, min_seconds=args.min_seconds,
                                        validation_fraction=args.validation_fraction, beam_options=args.beam_options,
                                        **options)
    except FileNotFoundError as e:  # not the layout the kind reads (no transcripts, no GigaSpeech.json, ...)
      print(f"error: {e}", file=sys.stderr)
      return 2
    name = f"{args.kind}/{name}"
  else:
    if args.path:
      p.error(f"{args.kind} is a registered dataset and takes no folder")
    ignored = [f for f, v, d in (("--name", args.name, ""), ("--min-seconds", args.min_seconds, 0.5),
                                 ("--validation-fraction", args.validation_fraction, 0.0), ("--subset", args.subset, ""),
                                 ("--max-seconds", args.max_seconds, 0.0), ("--languages", args.languages, ""),
                                 ("--beam-options", args.beam_options, ""))
               if v != d]
    if ignored:
      p.error(f"{', '.join(ignored)}: for folder datasets only; {args.kind} has its own splits")
    builder = builders.prepare(args.kind, data_dir)
    name = args.kind
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"{name} in {data_dir}: " + ", ".join(f"{k} {n:,}" for k, n in splits.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
