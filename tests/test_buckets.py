"""Relative position buckets: equal to transformers' for the lengths that matter, and the derived
facts of docs/model.md#bucketing."""

import numpy as np
import pytest
import torch
import transformers

from wavlm_jax.models.position import relative_position_buckets


@pytest.fixture(scope="module")
def reference_attention():
  return transformers.models.wavlm.modeling_wavlm.WavLMAttention(embed_dim=768, num_heads=12, num_buckets=320,
                                                                  max_distance=800)


@pytest.mark.parametrize("length", [49, 499, 781, 1500])
def test_bucket_matrix_equals_transformers(reference_attention, length):
  pos = torch.arange(length)
  rel = pos[None, :] - pos[:, None]
  theirs = reference_attention._relative_positions_bucket(rel).numpy()
  ours = relative_position_buckets(length, 320, 800)
  assert ours.shape == (length, length)
  np.testing.assert_array_equal(ours, theirs)


def test_bucket_facts():
  b = relative_position_buckets(1600, 320, 800)
  row = b[800]  # query 800: key offsets -800 .. +799
  at = lambda r: row[800 + r]
  assert at(0) == 0 and at(-1) == 1 and at(1) == 161
  assert at(-80) == 80 and at(80) == 240
  assert at(-778) == 159 and at(-777) == 158 and at(799) == 319
  assert 160 not in b  # r = 0 uses bucket 0, so 160 is never used
  log_bin_starts = sorted({int(np.argmax(row[800:] == k)) for k in range(240, 246)})
  assert log_bin_starts == [80, 83, 85, 88, 90, 93]
