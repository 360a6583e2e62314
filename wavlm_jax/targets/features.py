"""Frame features for k-means targets (docs/targets.md#k-means-targets).

MFCC: 13 cepstra + deltas + delta-deltas = 39 dims at 100 Hz, computed as Kaldi's `compute-mfcc-feats`
with the defaults fairseq's HuBERT recipe uses (via torchaudio.compliance.kaldi.mfcc): 25 ms frames,
10 ms hop, snip_edges, per-frame DC removal, pre-emphasis 0.97, Povey window, 512-point FFT power
spectrum, 23 triangular mel bins (Kaldi's mel scale 1127 ln(1 + f/700), 20 Hz to Nyquist), log with a
float32-epsilon floor, orthonormal DCT-II, cepstral lifter 22, no energy, no dither. Deltas: window 5
(torchaudio compute_deltas, edges replicated). This is a NumPy implementation of that algorithm; the
mel filters are Kaldi's, not librosa's (librosa's Slaney filters differ in spacing and normalisation).

Hidden units: the un-normalised output of layer l (1-based, docs/model.md#layer-outputs) of any model directory, at
50 Hz, computed by the jitted encoder with the batch sharded over all local devices; long utterances
are cut into chunks of at most `max_chunk` samples (fairseq: 1,600,000) encoded independently.
Utterances are batched with padding, and the encoder runs padding-invariant (GroupNorm statistics over
valid frames), so each utterance's features equal those of encoding it alone, as fairseq does.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator

import numpy as np
import scipy.fft

from wavlm_jax import audio
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.audio import SAMPLE_RATE
MFCC_RATE = 100
HIDDEN_RATE = 50
_FRAME, _HOP, _FFT = 400, 160, 512


@functools.lru_cache(maxsize=4)
def _kaldi_mel_banks(num_bins: int = 23, low: float = 20.0, high: float = 0.0) -> np.ndarray:
  """(num_bins, FFT/2) triangular filters in Kaldi's mel scale (Nyquist bin excluded, as Kaldi)."""
  high = SAMPLE_RATE / 2 + high if high <= 0 else high
  mel = lambda f: 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)
  lo, hi = mel(low), mel(high)
  delta = (hi - lo) / (num_bins + 1)
  bins = mel(np.arange(_FFT // 2) * SAMPLE_RATE / _FFT)
  left = lo + np.arange(num_bins)[:, None] * delta
  centre, right = left + delta, left + 2 * delta
  up = (bins[None, :] - left) / (centre - left)
  down = (right - bins[None, :]) / (right - centre)
  weights = np.where((bins > left) & (bins <= centre), up, 0.0) + np.where((bins > centre) & (bins < right), down, 0.0)
  return weights.astype(np.float64)


def num_mfcc_frames(num_samples: int) -> int:
  return max(0, (num_samples - _FRAME) // _HOP + 1)


def deltas(x: np.ndarray, window: int = 5) -> np.ndarray:
  """Regression deltas over time (axis 0), edges replicated (torchaudio compute_deltas)."""
  n = (window - 1) // 2
  padded = np.pad(x, ((n, n), (0, 0)), mode="edge")
  denom = n * (n + 1) * (2 * n + 1) / 3.0
  t = len(x)
  return sum(k * (padded[n + k:n + k + t] - padded[n - k:n - k + t]) for k in range(1, n + 1)) / denom


def mfcc(waveform: np.ndarray, num_ceps: int = 13, num_mel_bins: int = 23, with_deltas: bool = True) -> np.ndarray:
  """(frames, 39) float32 MFCC + deltas of a float waveform in [-1, 1] at 16 kHz."""
  x = np.asarray(waveform, np.float64)
  t = num_mfcc_frames(len(x))
  if t == 0:
    return np.zeros((0, num_ceps * (3 if with_deltas else 1)), np.float32)
  frames = np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_HOP][:t].copy()
  frames -= frames.mean(axis=1, keepdims=True)
  frames[:, 1:] -= 0.97 * frames[:, :-1]
  frames[:, 0] *= 1.0 - 0.97
  window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / (_FRAME - 1))) ** 0.85
  power = np.abs(np.fft.rfft(frames * window, _FFT)) ** 2
  mel = power[:, :_FFT // 2] @ _kaldi_mel_banks(num_mel_bins).T
  logmel = np.log(np.maximum(mel, np.finfo(np.float32).eps))
  ceps = scipy.fft.dct(logmel, type=2, norm="ortho", axis=1)[:, :num_ceps]
  lifter = 1.0 + 11.0 * np.sin(np.pi * np.arange(num_ceps) / 22.0)  # 1 + L/2 sin(pi i / L), L = 22
  ceps = ceps * lifter
  if with_deltas:
    d = deltas(ceps)
    ceps = np.concatenate([ceps, d, deltas(d)], axis=1)
  return ceps.astype(np.float32)


class HiddenFeatures:
  """Layer-l outputs of a model directory; `__call__(waveforms)` maps a list of float waveforms to a
  list of (frames, E) arrays. Utterances are grouped by padded length to limit recompilation.
  `layer=None` with a fine-tuned CTC model gives its CTC log-probabilities (frames, V) instead."""

  def __init__(self, model_dir, layer: int | None, *, max_chunk: int = 1_600_000, batch_size: int = 8,
               pad_multiple: int = SAMPLE_RATE):  # pad to whole seconds: few shapes
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from wavlm_jax.models import directory

    model = directory.load_model(model_dir)
    if layer is None:
      if model.config.vocab_size <= 0:
        raise ValueError(f"{model_dir} has no CTC head (vocab_size 0): CTC posteriors need a fine-tuned model")
      self.dim = model.config.vocab_size
    elif not 1 <= layer <= model.config.num_layers:
      raise ValueError(f"layer {layer} is out of range 1..{model.config.num_layers} for {model_dir}")
    else:
      self.dim = model.config.embed_dim
    self.config, self.layer, self.max_chunk = model.config, layer, max_chunk
    self.pad_multiple = pad_multiple
    devices = jax.local_devices()
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    mesh = Mesh(np.array(devices), ("data",))
    self._sharding = NamedSharding(mesh, P("data"))
    graphdef, state = nnx.split(model)
    normalize = model.config.normalize_waveform

    def encode(state, waveforms, padding_mask):
      m = nnx.merge(graphdef, state)
      if normalize:
        waveforms = audio.normalize_waveform(waveforms, padding_mask, xp=jnp)
      out = m(waveforms, padding_mask, padding_invariant=True)
      if layer is None:
        return jax.nn.log_softmax(m.ctc_logits(out).astype(jnp.float32), axis=-1)
      return out.layer_outputs[layer]

    self._encode = jax.jit(encode)
    self._state = jax.device_put(state, NamedSharding(mesh, P()))

  def _chunks(self, waveforms: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """Pieces of at most max_chunk samples that overlap by the conv stack's receptive field less one
    stride, so that their frames follow one another exactly: the frames of a long utterance are the
    frames of the whole (as many, at the same times), only the attention context ends at a piece."""
    from wavlm_jax.models.config import conv_output_length

    stride = int(np.prod(self.config.conv_stride))
    step = int(conv_output_length(self.max_chunk, self.config)) * stride  # a whole piece's frames, in samples
    out = []
    for i, w in enumerate(waveforms):
      for start in range(0, len(w), step):
        out.append((i, w[start:start + self.max_chunk]))
        if start + self.max_chunk >= len(w):
          break
    return out

  def __call__(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
    import jax

    from wavlm_jax.models.config import conv_output_length

    pieces = self._chunks([np.asarray(w, np.float32) for w in waveforms])
    results: list[list[np.ndarray]] = [[] for _ in waveforms]
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][1]))
    encoded = {}
    for g in range(0, len(order), self.batch_size):
      group = order[g:g + self.batch_size]
      longest = max(len(pieces[j][1]) for j in group)
      n = -(-max(longest, 400) // self.pad_multiple) * self.pad_multiple
      audio = np.zeros((self.batch_size, n), np.float32)
      pad = np.ones((self.batch_size, n), bool)
      for row, j in enumerate(group):
        w = pieces[j][1]
        audio[row, :len(w)], pad[row, :len(w)] = w, False
      feats = np.asarray(self._encode(self._state, jax.device_put(audio, self._sharding),
                                      jax.device_put(pad, self._sharding)))
      for row, j in enumerate(group):
        encoded[j] = feats[row, :max(0, int(conv_output_length(len(pieces[j][1]), self.config)))]
    for j, (i, _) in enumerate(pieces):
      results[i].append(encoded[j])
    return [np.concatenate(r, axis=0) if r else np.zeros((0, self.dim), np.float32) for r in results]


def mfcc_batch(waveforms: Iterable[np.ndarray]) -> list[np.ndarray]:
  return [mfcc(w) for w in waveforms]


def iterate_utterances(source, indices: Iterable[int], audio_key: str = "audio", id_key: str = "id"
                       ) -> Iterator[tuple[str, np.ndarray]]:
  """(id, float waveform) of the given records of a TFDS data source, in order."""
  for i in indices:
    ex = source[int(i)]
    uid = ex[id_key]
    yield labels_lib.utterance_id(uid), audio.to_float(ex[audio_key])
