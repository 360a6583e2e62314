"""Span masking: statistics match fairseq's original algorithm (a NumPy transcription of
docs/model.md#original-algorithm serves as the reference), spans have the configured length, counts are equalised among full-length rows,
a row's masked fraction never depends on the other rows' lengths, padding is never masked, and masks are
deterministic given the key and compiled once per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavlm_jax.models import masking


def fairseq_reference(rng, batch, length, p, span, min_masks, sizes=None, equalize=True):
  """The original compute_mask_indices (static spans, overlap allowed, equalised counts unless
  `equalize=False`)."""
  all_num = max(min_masks, int(p * length / span + rng.random()))
  rows = []
  for i in range(batch):
    if sizes is not None:
      sz = sizes[i]
      num = max(min_masks, int(p * sz / span + rng.random()))
    else:
      sz, num = length, all_num
    min_len = span
    if sz - min_len <= num:
      min_len = sz - num - 1
    starts = rng.choice(sz - min_len, num, replace=False)
    idx = np.unique([s + o for s in starts for o in range(span) if s + o < sz])
    rows.append(idx)
  min_cnt = min(len(r) for r in rows)
  mask = np.zeros((batch, length), bool)
  for i, idx in enumerate(rows):
    if equalize and len(idx) > min_cnt:
      idx = rng.choice(idx, min_cnt, replace=False)
    mask[i, idx] = True
  return mask


def runs(row):
  """Lengths of the runs of True in a boolean row."""
  padded = np.concatenate([[0], row.astype(int), [0]])
  d = np.diff(padded)
  return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


@pytest.mark.parametrize("length", [49, 250, 781])
def test_coverage_matches_fairseq(length):
  batch, trials = 8, 40
  rng = np.random.default_rng(0)
  ref = np.mean([fairseq_reference(rng, batch, length, 0.8, 10, 2).mean() for _ in range(trials)])
  fn = jax.jit(lambda k: masking.span_mask(k, (batch, length), 0.8, 10, 2))
  ours = np.mean([np.asarray(fn(jax.random.key(t))).mean() for t in range(trials)])
  assert abs(ours - ref) < 0.02, (ours, ref)
  if length >= 250:
    assert 0.45 < ours < 0.56  # ~1 - exp(-0.8) before equalisation, a little less after


def test_spans_have_the_configured_length_before_equalisation():
  mask = np.asarray(masking.span_mask(jax.random.key(0), (16, 500), 0.8, 10, 2, equalize=False))
  for row in mask:
    lengths = runs(row)
    assert len(lengths) > 0 and lengths.min() >= 10  # overlapping spans merge into longer runs
  # Span count: floor(0.8 * 500 / 10 + U) = 40 spans of 10 frames; overlaps only shrink the coverage.
  assert np.all(mask.sum(-1) <= 400)


def test_counts_are_equalised_among_full_rows_and_padding_never_masked():
  length = 300
  sizes = np.array([300, 300, 250, 120, 300, 60])
  valid = jnp.arange(length)[None, :] < jnp.asarray(sizes)[:, None]
  for seed in range(10):
    mask = np.asarray(masking.span_mask(jax.random.key(seed), (6, length), 0.8, 10, 2, valid))
    counts = mask.sum(-1)
    full = sizes == length
    assert np.all(counts[full] == counts[full][0]) and counts[0] > 0
    assert not np.any(mask & ~np.asarray(valid))


def test_masked_fraction_of_a_row_does_not_depend_on_the_rest_of_the_batch():
  # fairseq's equalisation trims every row to the batch minimum: one 99-frame row in a batch of 780-frame
  # rows would leave the full rows ~8 % masked instead of ~50 %. Ours: the same fraction either way.
  length, trials = 780, 30
  alone = np.full(4, length)
  with_short = np.array([length, length, length, 99])
  def fraction(sizes):
    valid = jnp.arange(length)[None, :] < jnp.asarray(sizes)[:, None]
    fn = jax.jit(lambda k: masking.span_mask(k, (4, length), 0.8, 10, 2, valid))
    return np.mean([np.asarray(fn(jax.random.key(t)))[0].mean() for t in range(trials)])
  a, b = fraction(alone), fraction(with_short)
  assert 0.45 < a < 0.56 and abs(a - b) < 0.02, (a, b)


def test_padding_aware_span_count_matches_fairseq():
  # Padded rows keep their own count: fairseq's per-row draw for the row's valid length.
  length, sizes = 400, np.array([400, 300, 200, 100])
  valid = jnp.arange(length)[None, :] < jnp.asarray(sizes)[:, None]
  ours = np.mean([np.asarray(masking.span_mask(jax.random.key(s), (4, length), 0.8, 10, 2, valid)).mean(axis=1)
                  for s in range(40)], axis=0)
  rng = np.random.default_rng(1)
  ref = np.mean([fairseq_reference(rng, 4, length, 0.8, 10, 2, sizes, equalize=False).mean(axis=1)
                 for _ in range(40)], axis=0)
  np.testing.assert_allclose(ours[1:], ref[1:], atol=0.02)


def test_short_rows_and_min_masks():
  # 12 frames, p small: min_masks = 2 spans; fairseq shrinks the start range so distinct starts exist.
  mask = np.asarray(masking.span_mask(jax.random.key(0), (3, 12), 0.05, 10, 2, equalize=False))
  assert np.all(mask.sum(-1) >= 10)
  channel = np.asarray(masking.span_mask(jax.random.key(0), (3, 64), 0.0, 8, 0))
  assert not channel.any()  # p = 0 and min_masks = 0: nothing masked


def test_deterministic_and_traced_once_for_any_padding():
  # Static shapes: the span count's bound is static, so masks for new keys and new padding patterns of
  # the same shape reuse one trace (a Python value depending on the data would retrace or fail).
  traces = []

  def masks(key, valid):
    traces.append(1)
    return masking.span_mask(key, (4, 200), 0.8, 10, 2, valid)

  fn = jax.jit(masks)
  full = jnp.ones((4, 200), bool)
  a, b = fn(jax.random.key(7), full), fn(jax.random.key(7), full)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, fn(jax.random.key(8), full))
  for sizes in ([200, 150, 90, 20], [37, 200, 200, 199]):
    valid = jnp.arange(200)[None, :] < jnp.asarray(sizes)[:, None]
    assert not np.any(np.asarray(fn(jax.random.key(9), valid)) & ~np.asarray(valid))
  assert len(traces) == 1


def test_apply_masks():
  x = jnp.ones((2, 5, 3))
  emb = jnp.array([7.0, 8.0, 9.0])
  m = jnp.array([[True, False, False, False, True], [False] * 5])
  y = masking.apply_time_mask(x, m, emb)
  np.testing.assert_array_equal(y[0, 0], emb)
  np.testing.assert_array_equal(y[0, 1], jnp.ones(3))
  c = masking.apply_channel_mask(x, jnp.array([[True, False, False], [False, False, True]]))
  assert float(c[0, :, 0].sum()) == 0 and float(c[1, :, 2].sum()) == 0 and float(c[0, :, 1].sum()) == 5
