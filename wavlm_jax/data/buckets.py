"""Batches by duration from a few crop lengths: pretraining batches without padding and with static shapes.

fairseq's HuBERT/WavLM pretraining forms batches of at most `max_tokens` samples from length-sorted
utterances and crops every batch to its shortest utterance, so no batch carries padding, at the price of
a new shape (a recompile, under jit) for nearly every batch. Here the crop lengths come from a small
fixed set (the buckets), so only a handful of shapes ever exist and each compiles once, ahead of the loop:

  - every utterance of at least the smallest bucket goes to the largest bucket not longer than it, and
    is randomly cropped to that length (utterances longer than the largest bucket, to the largest); a
    bucket too small to fill one batch passes its utterances down to the next shorter bucket;
  - the longest bucket has `batch_size` rows (rounded up to a multiple of `batch_multiple`: the
    data-parallel devices, and the hosts); a shorter bucket of L seconds has as many rows as keep
    rows x L within that audio per step, a multiple of `batch_multiple`, at least one multiple;
  - each epoch (seeded by (seed, epoch)) shuffles every bucket, cuts it into full batches (the last,
    partial batch of a bucket waits for the next epoch's shuffle), and shuffles the order of all batches;
  - bucket lengths, unless given, are chosen from the corpus' own length histogram to lose the least
    audio to cropping (an exact dynamic programme over 20 ms steps).

Fine-tuning (`make_padded_plan`, `data.batching="padded"`) never crops (a transcript covers the whole
utterance): every utterance goes to the shortest bucket at least as long and is zero-padded to it, the
bucket lengths are quantiles of the corpus' lengths, and utterances longer than `crop_seconds` are left
out (counted). A bucket too small for one batch passes its utterances up to the next longer one.

Everything is a pure function of (lengths, config, batch_multiple, epoch), so every host computes the
same plan, and a run over the same number of data-parallel devices reads the same global batches
whatever the number of hosts, each host its own rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading

import numpy as np

from wavlm_jax.audio import SAMPLE_RATE

FRAME = 320  # samples per encoder frame at 16 kHz (the conv frontend's total stride): bucket granularity


@dataclasses.dataclass(frozen=True)
class Bucket:
  samples: int  # crop length
  rows: int  # utterances per global batch


def choose_lengths(lengths: np.ndarray, num_buckets: int, min_samples: int, max_samples: int) -> list[int]:
  """`num_buckets` crop lengths (samples, multiples of FRAME) from min to max that minimise the audio
  cropped away from `lengths` (each utterance cropped to the largest length not above it)."""
  lo, hi = -(-min_samples // FRAME), max_samples // FRAME  # in frames; the smallest rounds up
  if hi < lo:
    raise ValueError(f"data.crop_seconds ({max_samples / SAMPLE_RATE:g} s) is shorter than data.min_seconds "
                     f"({min_samples / SAMPLE_RATE:g} s)")
  if num_buckets <= 1 or hi == lo:
    return [hi * FRAME]
  frames = np.minimum(np.asarray(lengths) // FRAME, hi)
  frames = frames[frames >= lo] - lo
  n = hi - lo + 1  # candidate lengths lo..hi
  count = np.bincount(frames, minlength=n).astype(np.float64)
  mass = np.bincount(frames, weights=frames, minlength=n)
  c0, c1 = np.concatenate([[0], np.cumsum(count)]), np.concatenate([[0], np.cumsum(mass)])

  def loss(a, b):  # utterances with frames in [a, b) cropped to a
    return (c1[b] - c1[a]) - a * (c0[b] - c0[a])

  k = min(num_buckets, n)
  # best[j][b]: least loss over utterances below b with j buckets, the smallest at 0 and the last at a < b.
  starts = np.arange(n)
  best = np.full((k + 1, n + 1), np.inf)
  arg = np.zeros((k + 1, n + 1), np.int64)
  for b in range(1, n + 1):
    best[1, b] = loss(0, b)
  for j in range(2, k + 1):
    for b in range(j, n + 1):
      a = starts[j - 1:b]  # the last bucket starts at a (a >= j - 1 leaves room for the others)
      total = best[j - 1, a] + loss(a, b)
      i = int(np.argmin(total))
      best[j, b], arg[j, b] = total[i], a[i]
  # The largest bucket is always the maximum crop: utterances at or above it lose only the crop.
  # Pick the split of the rest (below hi) into k - 1 buckets, then add hi.
  cuts, b, j = [], n - 1, k - 1
  while j >= 2:
    a = int(arg[j, b])
    cuts.append(a)
    b, j = a, j - 1
  chosen = sorted({0, *cuts, n - 1})
  return [int(lo + c) * FRAME for c in chosen]


def bucket_rows(samples: list[int], audio_samples_per_batch: float, multiple: int) -> list[int]:
  """Global rows per bucket: audio per step near the target, a multiple of `multiple`, at least one."""
  return [max(multiple, int(audio_samples_per_batch / s) // multiple * multiple) for s in samples]


class Plan:
  """Which utterances (and at which crop) form global batch i, for every i: epoch by epoch."""

  def __init__(self, lengths: np.ndarray, buckets: list[Bucket], *, seed: int, min_samples: int,
               pad: bool = False, exclude: np.ndarray | None = None):
    self.lengths = np.asarray(lengths, np.int64)
    self.buckets = sorted(buckets, key=lambda b: b.samples)
    self.seed, self._min_samples, self.pad = seed, min_samples, pad
    # Utterances left out whatever their length (fine-tuning: those without a transcript).
    self.excluded = np.zeros(len(self.lengths), bool) if exclude is None else np.asarray(exclude, bool)
    sizes = np.array([b.samples for b in self.buckets])
    if pad:  # to the shortest bucket at least as long; longer than the longest: left out
      eligible = (self.lengths >= min_samples) & (self.lengths <= sizes[-1])
      which = np.searchsorted(sizes, self.lengths, side="left")
    else:  # cropped to the longest bucket not longer
      eligible = self.lengths >= max(min_samples, sizes[0])
      which = np.searchsorted(sizes, self.lengths, side="right") - 1
    eligible &= ~self.excluded
    members = [np.flatnonzero(eligible & (which == i)) for i in range(len(self.buckets))]
    # A bucket with too few utterances for one batch would leave them unused every epoch (and its shape
    # compiled for nothing): its utterances go to the next shorter bucket that is kept (cropped shorter),
    # or, when padding, to the next longer one.
    kept: list[tuple[Bucket, np.ndarray]] = []
    for bucket, m in (zip(self.buckets[::-1], members[::-1]) if pad else zip(self.buckets, members)):
      if len(m) >= bucket.rows or not kept:
        kept.append((bucket, m))
      else:
        kept[-1] = (kept[-1][0], np.sort(np.concatenate([kept[-1][1], m])))
    kept = kept[::-1] if pad else kept
    self.buckets, self.members = [b for b, _ in kept], [m for _, m in kept]
    self.batches_per_epoch = sum(len(m) // b.rows for m, b in zip(self.members, self.buckets))
    self.dropped = int(np.sum(~eligible))
    if self.batches_per_epoch == 0:
      described = ", ".join(f"{b.samples / SAMPLE_RATE:.2f} s: {len(m)} utterances for {b.rows} rows"
                            for b, m in zip(self.buckets, self.members))
      raise ValueError(f"no bucket fills one global batch ({described}); {self.dropped} of {len(self.lengths)} "
                       "utterances are shorter than data.min_seconds or the smallest bucket. Lower data.batch_size, "
                       "data.num_buckets or data.min_seconds, or use more data")
    digest = hashlib.sha256(self.lengths.tobytes())
    if self.excluded.any():  # (a plan without exclusions keeps the fingerprint it always had)
      digest.update(np.packbits(self.excluded).tobytes())
    self._digest = digest.hexdigest()[:16]  # once: asked for every step
    self._epochs: dict[int, list] = {}  # the two most recent epochs' plans (Grain reads from threads)
    self._lock = threading.Lock()

  def batch(self, index: int) -> tuple[Bucket, np.ndarray]:
    """(bucket, source indices of its rows) of global batch `index`; safe to call from several threads."""
    epoch, j = divmod(index, self.batches_per_epoch)
    with self._lock:
      batches = self._epochs.get(epoch)
      if batches is None:
        batches = self._epochs[epoch] = self._plan_epoch(epoch)
        for old in sorted(self._epochs)[:-2]:
          del self._epochs[old]
    return batches[j]

  def _filled(self) -> list[tuple[Bucket, np.ndarray]]:
    """The buckets with at least one full batch (only the smallest, or when padding the longest, can
    lack one), with their members."""
    return [(b, m) for b, m in zip(self.buckets, self.members) if len(m) >= b.rows]

  def shapes(self) -> list[tuple[int, int]]:
    """Every (global rows, samples) a batch of this plan has, shortest crop first."""
    return [(b.rows, b.samples) for b, _ in self._filled()]

  def fingerprint(self) -> dict:
    """What a saved batch index means: restoring it under another plan would read other batches."""
    out = {"buckets": [[b.samples, b.rows] for b in self.buckets], "seed": self.seed,
           "batches_per_epoch": self.batches_per_epoch, "lengths_sha256": self._digest}
    return out | ({"padded": True} if self.pad else {})

  def __getstate__(self):  # picklable (Grain worker processes): the lock and the epoch cache stay behind
    state = dict(self.__dict__)
    del state["_lock"], state["_epochs"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._epochs, self._lock = {}, threading.Lock()

  def _plan_epoch(self, epoch: int) -> list[tuple[Bucket, np.ndarray]]:
    rng = np.random.default_rng([self.seed, epoch, 0xB0C])
    batches = []
    for bucket, members in zip(self.buckets, self.members):
      order = rng.permutation(members)
      full = len(order) // bucket.rows * bucket.rows
      batches += [(bucket, order[i:i + bucket.rows]) for i in range(0, full, bucket.rows)]
    return [batches[i] for i in rng.permutation(len(batches))]

  def stats(self) -> dict:
    """Per-bucket counts, and the share of the audio of all utterances of at least min_seconds that the
    batches never see: cropped away, or in a bucket too small to fill one batch."""
    usable = int(np.sum(self.lengths[self.lengths >= self._min_samples]))
    if self.pad:
      audio = sum(int(np.sum(self.lengths[m])) for _, m in self._filled())
      padded = sum(b.samples * len(m) for b, m in self._filled())
      return {"buckets_seconds": [b.samples / SAMPLE_RATE for b in self.buckets], "rows": [b.rows for b in self.buckets],
              "utterances": [len(m) for m in self.members], "dropped_short": int(np.sum(self.lengths < self._min_samples)),
              "dropped_long": int(np.sum(self.lengths > self.buckets[-1].samples)),
              "dropped_no_transcript": int(np.sum(self.excluded)),
              "batches_per_epoch": self.batches_per_epoch, "padding_share": 1.0 - audio / max(padded, 1),
              "unused_share": 1.0 - audio / max(usable, 1)}
    seen = sum(b.samples * len(m) for b, m in self._filled())
    return {"buckets_seconds": [b.samples / SAMPLE_RATE for b in self.buckets], "rows": [b.rows for b in self.buckets],
            "utterances": [len(m) for m in self.members], "dropped_short": self.dropped,
            "batches_per_epoch": self.batches_per_epoch, "cropped_share": 1.0 - seen / max(usable, 1)}


def make_plan(lengths: np.ndarray, cfg, *, batch_multiple: int, sample_rate: int = SAMPLE_RATE,
              exclude: np.ndarray | None = None, samples: list[int] | None = None) -> Plan:
  """The plan for a `data` config block (crop_seconds, min_seconds, batch_size, num_buckets or
  bucket_seconds, seed) over the split's utterance lengths (samples), leaving out `exclude`d ones;
  `samples`: these bucket lengths instead of choosing (a mixture's components share theirs)."""
  crop = int(round(cfg.crop_seconds * sample_rate))
  min_samples = int(round(cfg.min_seconds * sample_rate))
  if samples is not None:
    samples = sorted(samples)
  elif cfg.bucket_seconds:
    samples = sorted({int(round(s * sample_rate)) // FRAME * FRAME for s in cfg.bucket_seconds})
    if samples[0] < FRAME:
      raise ValueError(f"data.bucket_seconds {tuple(cfg.bucket_seconds)}: every length must be at least 0.02 s")
    if samples[-1] > crop:
      raise ValueError(f"data.bucket_seconds {tuple(cfg.bucket_seconds)} has a length above data.crop_seconds="
                       f"{cfg.crop_seconds}")
  else:
    samples = choose_lengths(lengths, cfg.num_buckets, max(min_samples, FRAME), crop)
  # The longest bucket has batch_size rows (rounded up to the multiple, as ahead-of-time planning does);
  # shorter buckets carry at most that much audio in more rows.
  top = -(-cfg.batch_size // batch_multiple) * batch_multiple
  rows = bucket_rows(samples, top * samples[-1], batch_multiple)
  return Plan(lengths, [Bucket(s, r) for s, r in zip(samples, rows)], seed=cfg.seed, min_samples=min_samples,
              exclude=exclude)


def padded_lengths(lengths: np.ndarray, num_buckets: int, min_samples: int, max_samples: int) -> list[int]:
  """Bucket lengths for padded batches: the k/num_buckets quantiles of the utterances' lengths (within
  [min, max]), rounded up to whole frames; the last covers the longest kept utterance."""
  kept = np.asarray(lengths)[(np.asarray(lengths) >= min_samples) & (np.asarray(lengths) <= max_samples)]
  if len(kept) == 0:
    raise ValueError(f"no utterance between data.min_seconds ({min_samples / SAMPLE_RATE:g} s) and "
                     f"data.crop_seconds ({max_samples / SAMPLE_RATE:g} s)")
  qs = np.quantile(kept, np.arange(1, max(num_buckets, 1) + 1) / max(num_buckets, 1), method="higher")
  return sorted({int(-(-q // FRAME) * FRAME) for q in qs})


def make_padded_plan(lengths: np.ndarray, cfg, *, batch_multiple: int, sample_rate: int = SAMPLE_RATE,
                     exclude: np.ndarray | None = None) -> Plan:
  """The fine-tuning plan: whole utterances (min_seconds to crop_seconds, not `exclude`d) padded to the
  shortest bucket that holds them; `bucket_seconds` (if given) or `num_buckets` quantile lengths of the
  kept utterances; rows per bucket keep the (padded) audio per step near batch_size x the longest bucket."""
  max_samples = int(round(cfg.crop_seconds * sample_rate))
  min_samples = int(round(cfg.min_seconds * sample_rate))
  if cfg.bucket_seconds:
    samples = sorted({-(-int(round(s * sample_rate)) // FRAME) * FRAME for s in cfg.bucket_seconds})
  else:
    kept = np.asarray(lengths) if exclude is None else np.asarray(lengths)[~np.asarray(exclude, bool)]
    samples = padded_lengths(kept, cfg.num_buckets, min_samples, max_samples)
  top = -(-cfg.batch_size // batch_multiple) * batch_multiple
  rows = bucket_rows(samples, top * samples[-1], batch_multiple)
  return Plan(lengths, [Bucket(s, r) for s, r in zip(samples, rows)], seed=cfg.seed, min_samples=min_samples,
              pad=True, exclude=exclude)


def lcm(*values: int) -> int:
  out = 1
  for v in values:
    out = out * v // math.gcd(out, v)
  return out
