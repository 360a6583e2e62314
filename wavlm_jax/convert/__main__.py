"""Command line:

  python -m wavlm_jax.convert --from hf      --src HF_DIR        --dst CKPT_DIR
  python -m wavlm_jax.convert --from unilm   --src WavLM-Base.pt --dst CKPT_DIR
  python -m wavlm_jax.convert --from fairseq --src hubert.pt     --dst CKPT_DIR
  python -m wavlm_jax.convert --to hf        --src CKPT_DIR      --dst HF_DIR   (a fine-tuned model: with its
                                                                    tokenizer, for transformers' ASR pipeline)
  python -m wavlm_jax.convert --to unilm     --src CKPT_DIR      --dst WavLM.pt

Everything is read and checked before anything is written; on error nothing appears at --dst.
Pre-training tensors that a fine-tuned fairseq checkpoint still carries (label_embs_concat, ...) are
listed on stderr and not converted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from wavlm_jax import storage
from wavlm_jax.models import directory
from wavlm_jax.convert import formats, torch_io

READERS = {"hf": formats.read_hf, "unilm": formats.read_unilm, "fairseq": formats.read_fairseq}


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m wavlm_jax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  direction = p.add_mutually_exclusive_group(required=True)
  direction.add_argument("--from", dest="src_format", choices=sorted(READERS), help="import a PyTorch checkpoint")
  direction.add_argument("--to", dest="dst_format", choices=["hf", "unilm"], help="export a wavlm_jax model")
  p.add_argument("--src", required=True)
  p.add_argument("--dst", required=True)
  p.add_argument("--scan-layers", choices=["true", "false"], default="true",
                 help="layer layout of an imported model (default: scanned)")
  p.add_argument("--weight-norm-keys", choices=["legacy", "parametrizations"], default="legacy",
                 help="--to hf: spelling of the positional conv weight norm (weight_g/v or original0/1)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
  return p


def _check_dst_free(dst: os.PathLike, overwrite: bool) -> None:
  if dst.exists() and not overwrite and (dst.is_file() or any(dst.iterdir())):
    raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.dst_format and storage.is_url(args.dst):
    print(f"error: --dst {args.dst}: PyTorch files are written locally; copy them to the bucket afterwards "
          "(gcloud storage cp -r)", file=sys.stderr)
    return 1
  if args.src_format and storage.is_url(args.src):
    print(f"error: --src {args.src}: PyTorch checkpoints are read locally; copy it here first "
          "(gcloud storage cp -r); --dst may be a bucket", file=sys.stderr)
    return 1
  dst = storage.path(args.dst) if args.src_format else Path(args.dst)  # a model directory may be gs://
  try:
    _check_dst_free(dst, args.overwrite)
    if args.src_format:
      dropped: list[tuple[str, tuple]] = []
      kwargs = {"dropped": dropped} if args.src_format == "fairseq" else {}
      config, flat = READERS[args.src_format](args.src, **kwargs)
      for name, shape in dropped:
        print(f"dropped {name} {shape}: a pre-training tensor the fine-tuned model does not use", file=sys.stderr)
      config.unlock()
      config.scan_layers = args.scan_layers == "true"
      config.lock()
      directory.save_model(dst, flat, config, overwrite=args.overwrite)
    else:
      config = directory.load_config(args.src)
      flat = directory.load_flat_params(args.src)
      if args.dst_format == "hf":
        # Written beside the destination, then moved into place whole.
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
          formats.write_hf(flat, config, tmp, weight_norm=args.weight_norm_keys)
          vocab = storage.path(args.src) / formats.CTC_VOCAB_FILE  # --src may be gs://
          if config.vocab_size > 0 and vocab.is_file():  # a fine-tuned model: its tokenizer too
            formats.write_hf_tokenizer(vocab, config, tmp)
          if dst.exists():
            shutil.rmtree(dst)
          shutil.move(tmp, dst)
          Path(tmp).mkdir()  # let TemporaryDirectory clean up its (now moved) folder
      else:
        formats.write_unilm(flat, config, dst)
  except (formats.ConversionError, torch_io.UnsafeCheckpointError, ValueError, FileExistsError,
          FileNotFoundError, NotImplementedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
