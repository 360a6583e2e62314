"""WavLM mixing: probabilities honoured, energy ratios in range, segments at most half the valid
length and inside it, no self-mixing or mixing of mixed audio by default (reference behaviour as an
option)."""

import numpy as np
import pytest

from wavlm_jax.data import mixing, noise


def _batch(rng, b=16, n=32000):
  audio = (rng.standard_normal((b, n)) * rng.uniform(0.05, 1.0, (b, 1))).astype(np.float32)
  pad = np.zeros((b, n), bool)
  for i in range(0, b, 3):
    pad[i, int(n * rng.uniform(0.6, 0.9)):] = True
  audio[pad] = 0
  return audio, pad


def _energy(x):
  return float(np.mean(np.square(x, dtype=np.float64)))


def test_utterance_mixing_statistics():
  rng = np.random.default_rng(0)
  mixed_frac, ratios = [], []
  for step in range(60):
    audio, pad = _batch(rng)
    out, info = mixing.mix_batch(audio, pad, np.random.default_rng(step), mix_prob=0.3)
    mixed_frac.append(info.mixed.mean())
    valid = (~pad).sum(1)
    assert not info.noise.any()
    for i in range(len(audio)):
      delta = out[i] - audio[i]
      if not info.mixed[i]:
        np.testing.assert_array_equal(out[i], audio[i])
        continue
      p = info.partner[i]
      assert p != i  # no self-mixing by default
      assert info.length[i] <= 0.5 * valid[i]
      changed = np.flatnonzero(delta)
      if len(changed):
        assert changed.min() >= info.start[i] and changed.max() < info.start[i] + info.length[i] <= valid[i]
      assert -5 <= info.snr_db[i] <= 5
      # The energy ratio of the whole primary to the whole (scaled) secondary is the drawn one.
      e_sec = _energy(audio[p, :valid[p]]) * info.scale[i] ** 2
      ratio = 10 * np.log10(_energy(audio[i, :valid[i]]) / e_sec)
      ratios.append(ratio)
      assert abs(ratio - info.snr_db[i]) < 1e-3
  assert abs(np.mean(mixed_frac) - 0.3) < 0.05
  assert min(ratios) < -3 and max(ratios) > 3  # spread over U(-5, 5)


def test_noise_mixing_probability_and_snr():
  rng = np.random.default_rng(1)
  clips = noise.synthetic_noises(kinds=("white", "pink", "brown"), clips_per_kind=2, seconds=3.0)
  noise_rows = mixed_rows = 0
  for step in range(60):
    audio, pad = _batch(rng)
    out, info = mixing.mix_batch(audio, pad, np.random.default_rng(step), mix_prob=1.0, noise_prob=0.25,
                                 noises=clips)
    mixed_rows += info.mixed.sum()
    noise_rows += info.noise.sum()
    for i in np.flatnonzero(info.noise):
      assert -5 <= info.snr_db[i] <= 20 and info.partner[i] == -1
  assert mixed_rows == 60 * 16
  assert abs(noise_rows / mixed_rows - 0.25) < 0.05


def test_secondaries_come_from_the_unmixed_batch():
  rng = np.random.default_rng(2)
  audio = np.zeros((4, 16000), np.float32)
  audio[0] = 1.0  # only row 0 has energy; its partners receive it, nothing is passed on further
  out, info = mixing.mix_batch(audio, None, rng, mix_prob=1.0, max_fraction=0.5)
  for i in range(1, 4):
    if info.partner[i] != 0:
      assert not out[i].any()


def test_reference_behaviour_allows_self_mixing():
  self_mixed = 0
  for step in range(50):
    rng = np.random.default_rng(step)
    audio, pad = _batch(rng, b=4)
    _, info = mixing.mix_batch(audio, pad, rng, mix_prob=1.0, reference_behaviour=True)
    self_mixed += int(np.sum(info.partner == np.arange(4)))
  assert self_mixed > 0


@pytest.mark.parametrize("kind", noise.KINDS)
def test_synthetic_noises(kind):
  (clip,) = noise.synthetic_noises(kinds=(kind,), clips_per_kind=1, seconds=2.0)
  assert clip.shape == (32000,) and np.isfinite(clip).all()
  assert abs(np.sqrt(np.mean(clip ** 2)) - 1.0) < 1e-3
  spectrum = np.abs(np.fft.rfft(clip)) ** 2
  low, high = spectrum[100:1000].mean(), spectrum[10000:15000].mean()
  if kind in ("pink", "brown", "babble"):
    assert low > 3 * high  # more energy at low frequencies than white noise has
  else:
    assert 0.5 < low / high < 2
