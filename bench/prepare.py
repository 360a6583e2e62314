"""Corpus preparation and mixing throughput (issue 27), side by side in one run on generated corpora in
the three pretraining layouts (Libri-Light FLAC + VAD json, GigaSpeech Opus + GigaSpeech.json, VoxPopuli
ogg): each built in-process and as a Beam pipeline (DirectRunner, 2 worker processes), each build in a
fresh process; then the mixture pipeline (the three, weighted 0.64 / 0.11 / 0.25) against a single
source, and the mixture's audio shares over 1,000 batches.

    .venv/bin/python bench/prepare.py [--hours 0.5] [--out bench/measured/prepare_cpu.json]

Prints a table; writes the JSON with provenance. Goals: Beam on 2 workers >= 1.7x the in-process
throughput; the mixture >= 95 % of a single source's audio-seconds/s; shares within +-2 % of the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import MEASURED, write  # noqa: E402

LAYOUTS = {"librilight": ("librilight_dir", {}), "gigaspeech": ("gigaspeech_dir", {"subset": "XL"}),
           "voxpopuli": ("voxpopuli_dir", {"languages": ("en",)})}
WEIGHTS = {"librilight": 0.64, "gigaspeech": 0.11, "voxpopuli": 0.25}
BEAM = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
RATE = 16000


def _pool(n: int = 40) -> list[np.ndarray]:
  """Distinct eSpeak utterances (float32, 16 kHz) that the generated recordings are made of."""
  from wavlm_jax.data import espeak, text

  engine = espeak.Espeak()
  out = []
  for i in range(n):
    rng = np.random.default_rng([7, i])
    voice = f"en-us+{espeak.VARIANTS[i % len(espeak.VARIANTS)]}"
    utt = engine.synthesize(text.sentence(rng, "en"), voice, rate=int(rng.integers(140, 200)))
    out.append(utt.audio.astype(np.float32) / 32768)
  return out


def _recording(pool, rng, seconds: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
  """Speech chunks from the pool separated by 0.3-1 s of faint noise, and the chunks' spans (seconds)."""
  parts, spans, t = [], [], 0.0
  while t < seconds:
    gap = (1e-3 * rng.standard_normal(int(rng.uniform(0.3, 1.0) * RATE))).astype(np.float32)
    chunk = pool[int(rng.integers(len(pool)))]
    parts += [gap, chunk]
    start = t + len(gap) / RATE
    spans.append((round(start, 3), round(start + len(chunk) / RATE, 3)))
    t = start + len(chunk) / RATE
  return np.concatenate(parts), spans


def generate(root: Path, hours: float) -> dict[str, Path]:
  """A corpus of `hours` in each layout under root; returns each one's folder."""
  import soundfile

  pool = _pool()
  rng = np.random.default_rng(0)
  made = {}
  # Libri-Light: 5-minute chapters with their voice activity.
  folder = root / "librilight" / "small"
  for i in range(max(1, int(hours * 3600 / 300))):
    audio, spans = _recording(pool, rng, 300.0)
    book = folder / str(100 + i % 7) / f"book_{i // 7:03d}"
    book.mkdir(parents=True, exist_ok=True)
    soundfile.write(book / f"chapter_{i:04d}.flac", audio, RATE)
    (book / f"chapter_{i:04d}.json").write_text(json.dumps(
        {"speaker": str(100 + i % 7), "book_meta": {"id": str(i // 7)}, "snr": 20.0, "voice_activity": spans}))
  made["librilight"] = root / "librilight"
  # GigaSpeech: 5-minute Opus files, each speech chunk a segment of XL.
  giga = root / "GigaSpeech"
  audios = []
  for i in range(max(1, int(hours * 3600 / 300))):
    audio, spans = _recording(pool, rng, 300.0)
    rel = f"audio/podcast/P{i // 10:04d}/POD{i:010d}.opus"
    (giga / rel).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(giga / rel, audio, RATE, format="OGG", subtype="OPUS")
    audios.append({"aid": f"POD{i:010d}", "path": rel, "source": "podcast", "segments": [
        {"sid": f"POD{i:010d}_S{j:07d}", "begin_time": s, "end_time": e, "text_tn": "SPEECH", "subsets": ["{XL}"]}
        for j, (s, e) in enumerate(spans)]})
  (giga / "GigaSpeech.json").write_text(json.dumps({"audios": audios}))
  made["gigaspeech"] = giga
  # VoxPopuli: one 4-20 s voice-activity segment per .ogg.
  vox = root / "voxpopuli" / "unlabelled_data" / "en" / "2019"
  vox.mkdir(parents=True)
  total, n = 0.0, 0
  while total < hours * 3600:
    audio, _ = _recording(pool, rng, float(rng.uniform(4, 20)))
    soundfile.write(vox / f"20190114-0900-PLENARY-{n // 50}_en_{n % 50}.ogg", audio, RATE, format="OGG",
                    subtype="VORBIS")
    total, n = total + len(audio) / RATE, n + 1
  made["voxpopuli"] = root / "voxpopuli" / "unlabelled_data"
  return made


def _build(kind: str, folder: str, data_dir: str, options: str, beam: str) -> dict:
  """One build in this (fresh) process: wall and CPU seconds (this process and its worker processes)."""
  from wavlm_jax.data import builders

  start, t0 = time.perf_counter(), os.times()
  builder = builders.prepare_folder(kind, folder, data_dir, name="bench", beam_options=beam, **json.loads(options))
  wall, t1 = time.perf_counter() - start, os.times()
  cpu = (t1.user - t0.user) + (t1.system - t0.system) + (t1.children_user - t0.children_user) + (
      t1.children_system - t0.children_system)
  files = list(Path(builder.data_dir).glob("*.array_record*"))
  import tensorflow_datasets as tfds

  seconds = 0.0
  for split in builder.info.splits:
    src = tfds.data_source(f"{kind}/bench", split=split, data_dir=data_dir)
    seconds += sum(float(src[i]["duration"]) for i in range(len(src)))
  return {"wall_seconds": wall, "cpu_seconds": cpu, "audio_hours": seconds / 3600,
          "examples": sum(s.num_examples for s in builder.info.splits.values()),
          "bytes": sum(f.stat().st_size for f in files)}


def build_in_fresh_process(kind, folder, data_dir, options, beam) -> dict:
  out = subprocess.run([sys.executable, __file__, "--_build", kind, str(folder), str(data_dir), json.dumps(options),
                        beam], capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f"build of {kind} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def mixture_throughput(data_dir: str, batches: int, share_batches: int) -> dict:
  """audio-seconds/s of the pipeline over one source and over the weighted mixture, and the mixture's
  audio shares over `share_batches` batches."""
  from wavlm_jax import data
  from wavlm_jax.data import pipeline

  common = dict(data_dir=data_dir, crop_seconds=15.6, min_seconds=2.0, batch_size=8, num_threads=4, prepare=False)
  single = data.data_config(dataset="librilight_dir/bench", **common)
  mixed = data.data_config(mixture=tuple((f"{LAYOUTS[n][0]}/bench", "train", w) for n, w in WEIGHTS.items()),
                           **common)

  def rate(cfg, n):
    it = pipeline.HostIterator(cfg, process_index=0, process_count=1)
    for _ in range(10):  # warm up: threads started, first reads done
      next(it)
    start, seconds = time.perf_counter(), 0.0
    for _ in range(n):
      seconds += next(it)["audio"].size / RATE
    return seconds / (time.perf_counter() - start)

  rates = {"single": [], "mixture": []}
  for _ in range(3):  # interleaved, so that a slow moment of the machine hits both
    rates["single"].append(rate(single, batches))
    rates["mixture"].append(rate(mixed, batches))
  it = pipeline.HostIterator(mixed, process_index=0, process_count=1)
  seconds = np.zeros(3)
  for _ in range(share_batches):
    batch = next(it)
    seconds[int(batch["component"][0])] += batch["audio"].size / RATE
  shares = dict(zip(WEIGHTS, (seconds / seconds.sum()).tolist()))
  return {"single_audio_seconds_per_second": float(np.median(rates["single"])),
          "mixture_audio_seconds_per_second": float(np.median(rates["mixture"])),
          "runs": rates, "weights": WEIGHTS, "shares": shares, "share_batches": share_batches,
          "max_share_error": max(abs(shares[n] - WEIGHTS[n]) for n in WEIGHTS)}


def main() -> int:
  if len(sys.argv) > 1 and sys.argv[1] == "--_build":
    print(json.dumps(_build(*sys.argv[2:7])))
    return 0
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hours", type=float, default=0.5, help="audio per layout")
  p.add_argument("--batches", type=int, default=100, help="batches per throughput run (3 runs each)")
  p.add_argument("--share-batches", type=int, default=1000)
  p.add_argument("--out", default=str(MEASURED / "prepare_cpu.json"))
  args = p.parse_args()
  with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
    tmp = Path(tmp)
    start = time.perf_counter()
    folders = generate(tmp / "corpora", args.hours)
    print(f"generated {args.hours} h in each layout in {time.perf_counter() - start:.0f} s")
    rows = {}
    for name, (kind, options) in LAYOUTS.items():
      inproc = build_in_fresh_process(kind, folders[name], tmp / "tfds", options, "")
      beam = build_in_fresh_process(kind, folders[name], tmp / "tfds_beam", options, BEAM)
      rows[name] = {"in_process": inproc, "beam_2_workers": beam}
      for r in rows[name].values():
        r["audio_hours_per_wall_hour"] = r["audio_hours"] / (r["wall_seconds"] / 3600)
        r["audio_hours_per_cpu_hour"] = r["audio_hours"] / (r["cpu_seconds"] / 3600)
        r["bytes_per_audio_hour"] = r["bytes"] / r["audio_hours"]
      rows[name]["beam_speedup"] = beam["audio_hours_per_wall_hour"] / inproc["audio_hours_per_wall_hour"]
      assert beam["examples"] == inproc["examples"], (name, beam["examples"], inproc["examples"])
    mix = mixture_throughput(str(tmp / "tfds"), args.batches, args.share_batches)
  mix["ratio"] = mix["mixture_audio_seconds_per_second"] / mix["single_audio_seconds_per_second"]
  print(f"\n{'layout':<12}{'audio h':>9}{'in-process h/h':>16}{'Beam x2 h/h':>13}{'speed-up':>10}"
        f"{'in-proc h/CPU-h':>17}{'Beam h/CPU-h':>14}{'MB per h':>10}")
  for name, r in rows.items():
    a, b = r["in_process"], r["beam_2_workers"]
    print(f"{name:<12}{a['audio_hours']:>9.2f}{a['audio_hours_per_wall_hour']:>16.0f}{b['audio_hours_per_wall_hour']:>13.0f}"
          f"{r['beam_speedup']:>9.2f}x{a['audio_hours_per_cpu_hour']:>17.0f}{b['audio_hours_per_cpu_hour']:>14.0f}"
          f"{a['bytes_per_audio_hour'] / 1e6:>10.1f}")
  print(f"\nmixture pipeline: {mix['mixture_audio_seconds_per_second']:.0f} audio-s/s vs single source "
        f"{mix['single_audio_seconds_per_second']:.0f} ({mix['ratio']:.1%}); shares over {args.share_batches} batches "
        + ", ".join(f"{n} {s:.3f} (weight {WEIGHTS[n]})" for n, s in mix["shares"].items()))
  write(args.out, {"hours_per_layout": args.hours, "beam_options": BEAM, "layouts": rows, "mixture": mix,
                   "goals": {"beam_speedup": 1.7, "mixture_ratio": 0.95, "max_share_error": 0.02}})
  return 0


if __name__ == "__main__":
  sys.exit(main())
