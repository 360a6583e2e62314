"""Preparing a corpus as an Apache Beam pipeline (TFDS Beam datasets): the same readers as the in-process
build (`wavlm_jax/data/corpora.py`), with recordings spread over Beam's workers.

    python -m wavlm_jax.data.prepare librilight_dir /data/librilight --subset small \
        --beam-options runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing

Each recording is one element (listed in a JSON-lines file beside the dataset): a worker cuts it into examples, which TFDS's Beam writer shuffles by key
and writes as ArrayRecord shards, so the dataset is the one the in-process build writes (same ids, audio
and durations). What a worker leaves out is counted (Beam metrics `wavlm_jax/examples`, `skipped`,
`audio_milliseconds`) and listed, as JSON lines that the build merges into `skipped.json`.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from wavlm_jax.data import corpora

NAMESPACE = "wavlm_jax"


def pipeline_options(spec: str) -> PipelineOptions:
  """`key=value,key=value` (the form `tfds build --beam_pipeline_options` takes) as PipelineOptions."""
  flags = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    key, sep, value = part.partition("=")
    if not sep or not key:
      raise ValueError(f"--beam-options {spec!r}: {part!r} is not key=value")
    flags.append(f"--{key.lstrip('-')}={value}")
  return PipelineOptions(flags)


LOCAL_RUNNERS = ("", "DirectRunner", "PrismRunner")  # workers on this machine: they share its disk


def check_data_dir(spec: str, data_dir: str) -> None:
  """A runner whose workers are elsewhere needs a data dir they all write: TFDS's ArrayRecord writer writes
  local files only, so a gs:// data dir works with local runners alone (built here, then uploaded)."""
  from apache_beam.options.pipeline_options import StandardOptions

  runner = pipeline_options(spec).view_as(StandardOptions).runner or ""
  if runner.lower() in ("direct", "prism"):
    runner = f"{runner.capitalize()}Runner"
  if runner not in LOCAL_RUNNERS and "://" in str(data_dir):
    raise ValueError(f"--beam-options runner={runner} with data dir {data_dir}: ArrayRecord shards are written as "
                     "local files, so the workers need a data dir on a file system they all mount (NFS, or the "
                     "bucket mounted with gcsfuse: pass the mount's path); docs/data.md#preparing-at-scale-with-apache-beam")


class _Cut(beam.DoFn):
  """One recording -> its examples; what cannot be used goes to the `skipped` output as a JSON line."""

  def __init__(self, reader: corpora.Reader):
    self.reader = reader
    self.examples = beam.metrics.Metrics.counter(NAMESPACE, "examples")
    self.skipped = beam.metrics.Metrics.counter(NAMESPACE, "skipped")
    self.milliseconds = beam.metrics.Metrics.counter(NAMESPACE, "audio_milliseconds")

  def process(self, item):
    for piece in self.reader.pieces(item):
      if isinstance(piece, corpora.Skipped):
        self.skipped.inc()
        yield beam.pvalue.TaggedOutput("skipped", json.dumps({"file": piece.where, "reason": piece.reason}))
      else:
        self.examples.inc()
        self.milliseconds.inc(int(round(1000 * float(piece[1]["duration"]))))
        yield piece


def cut(reader: corpora.Reader, split: str, items: list, work_dir: str) -> beam.PTransform:
  """The PTransform TFDS applies to its pipeline for `split`: the items, spread over the workers, cut.
  The items travel as a JSON-lines file in `work_dir` (beside the dataset, where every worker reads),
  not inside the job: GigaSpeech XL's are millions of segments."""
  from pathlib import Path

  listing = Path(work_dir) / f"{split}.items.jsonl"
  listing.write_text("".join(json.dumps(item) + "\n" for item in items))

  @beam.ptransform_fn
  def expand(root):
    out = (root
           | f"{split}/recordings" >> beam.io.ReadFromText(str(listing))
           | f"{split}/parse" >> beam.Map(json.loads)
           | f"{split}/spread" >> beam.Reshuffle()
           | f"{split}/cut" >> beam.ParDo(_Cut(reader)).with_outputs("skipped", main="examples"))
    _ = out.skipped | f"{split}/list_skipped" >> beam.io.WriteToText(f"{work_dir}/{split}.skipped",
                                                                     file_name_suffix=".jsonl")
    return out.examples

  return expand()


def read_skipped(skipped_dir) -> list[tuple[str, str]]:
  """The (file, reason) records the workers wrote, in a stable order."""
  from pathlib import Path

  rows = []
  for path in sorted(Path(skipped_dir).glob("*.skipped*.jsonl")):
    rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return sorted((r["file"], r["reason"]) for r in rows)
