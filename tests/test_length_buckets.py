"""Duration batching plans (`wavlm_jax.data.buckets`): the chosen crop lengths lose the least audio (a brute
force over all choices agrees), rows per batch keep the audio per step and divide over devices, epochs
are permutations without repeats, small buckets hand their utterances down, and every host count
computes the same plan."""

import itertools
import pickle

import numpy as np
import pytest

from wavlm_jax import data
from wavlm_jax.data import buckets

FRAME = buckets.FRAME


def _lost(lengths, chosen, lo, hi):
  frames = np.minimum(lengths // FRAME, hi)
  frames = frames[frames >= lo]
  edges = np.asarray(chosen)
  return int(np.sum(frames - edges[np.searchsorted(edges, frames, side="right") - 1]))


def test_chosen_lengths_are_optimal():
  rng = np.random.default_rng(0)
  lengths = (rng.gamma(4.0, 1.0, 400) * 16000).astype(np.int64)
  lo, hi = 16000 // FRAME, 8 * 16000 // FRAME  # 1 s .. 8 s: 350 candidate lengths, too many to brute force
  lengths_coarse = lengths // (10 * FRAME) * (10 * FRAME)  # so restrict to 10-frame steps for the check
  chosen = [c // FRAME for c in buckets.choose_lengths(lengths_coarse, 4, lo * FRAME, hi * FRAME)]
  assert chosen[0] == lo and chosen[-1] == hi and len(chosen) == 4
  best = min(_lost(lengths_coarse, [lo, *mid, hi], lo, hi)
             for mid in itertools.combinations(range(lo + 1, hi), 2))
  assert _lost(lengths_coarse, chosen, lo, hi) == best


def test_rows_keep_audio_per_step_and_divide_over_devices():
  lengths = np.random.default_rng(1).integers(2 * 16000, 20 * 16000, 3000)
  cfg = data.data_config(crop_seconds=15.6, min_seconds=2.0, batch_size=32, num_buckets=6)
  plan = buckets.make_plan(lengths, cfg, batch_multiple=8)
  target = 32 * 15.6 * 16000
  for b in plan.buckets:
    assert b.rows % 8 == 0 and b.samples % FRAME == 0
    assert b.rows * b.samples <= target and (b.rows + 8) * b.samples > target  # as many rows as fit
  assert plan.buckets[-1].samples == int(15.6 * 16000) // FRAME * FRAME


def test_epochs_are_permutations_and_plans_are_deterministic():
  lengths = np.random.default_rng(2).integers(1 * 16000, 12 * 16000, 500)
  cfg = data.data_config(crop_seconds=10.0, min_seconds=1.5, batch_size=8, num_buckets=4, seed=3)
  plan = buckets.make_plan(lengths, cfg, batch_multiple=2)
  again = buckets.make_plan(lengths, cfg, batch_multiple=2)
  n = plan.batches_per_epoch
  for epoch in range(2):
    rows = [plan.batch(epoch * n + j) for j in range(n)]
    ids = np.concatenate([r for _, r in rows])
    assert len(ids) == len(set(ids.tolist()))  # no utterance twice in an epoch
    for bucket, r in rows:
      assert np.all(lengths[r] >= bucket.samples) and np.all(lengths[r] >= 1.5 * 16000)
  assert [plan.batch(j)[1].tolist() for j in range(n)] == [again.batch(j)[1].tolist() for j in range(n)]
  copy = pickle.loads(pickle.dumps(plan))  # for worker processes: the lock and the epoch cache stay behind
  assert copy.fingerprint() == plan.fingerprint() and copy.batch(n + 3)[1].tolist() == plan.batch(n + 3)[1].tolist()
  assert [plan.batch(j)[1].tolist() for j in range(n)] != [plan.batch(n + j)[1].tolist() for j in range(n)]


def test_a_bucket_too_small_for_one_batch_hands_its_utterances_down():
  lengths = np.array([3 * 16000] * 40 + [5 * 16000] * 3 + [8 * 16000] * 40)
  cfg = data.data_config(crop_seconds=8.0, min_seconds=3.0, batch_size=4, bucket_seconds=(3.0, 5.0, 8.0))
  plan = buckets.make_plan(lengths, cfg, batch_multiple=1)
  assert [b.samples for b in plan.buckets] == [3 * 16000, 8 * 16000]  # 5 s: 3 utterances for 6 rows
  assert len(plan.members[0]) == 43
  assert plan.stats()["cropped_share"] == pytest.approx(3 * 2 / (40 * 3 + 3 * 5 + 40 * 8))


def test_no_full_batch_is_a_clear_error():
  cfg = data.data_config(crop_seconds=4.0, min_seconds=2.0, batch_size=64)
  with pytest.raises(ValueError, match="no bucket fills one global batch.*Lower data.batch_size"):
    buckets.make_plan(np.full(10, 3 * 16000), cfg, batch_multiple=1)
