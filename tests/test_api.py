"""The public API: `wavlm_jax.load_encoder(DIR).hidden_states(...)` contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wavlm_jax
from wavlm_jax.models import directory
from wavlm_jax.training import checkpoint
from wavlm_jax.models import frontend, params, wavlm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  config = wavlm_jax.model_card("tiny", layer_norm_first=True, extractor_mode="layer_norm", normalize_waveform=True)
  root = tmp_path_factory.mktemp("tiny")
  directory.save_model(root / "model", params.get_params(wavlm.build(config, seed=5)), config)
  return root / "model"


def test_hidden_states_contract(model_dir):
  enc = wavlm_jax.load_encoder(model_dir)
  assert enc.config.num_layers == 2 and enc.config.embed_dim == 64
  x = np.random.RandomState(0).randn(3, 16000).astype(np.float32)
  hs = enc.hidden_states(x)
  assert len(hs) == enc.config.num_layers + 1
  assert all(h.shape == (3, 49, 64) for h in hs)
  last = np.asarray(hs[-1])  # pre-LN model: the final LayerNorm is applied (scale 1, bias 0 at init)
  np.testing.assert_allclose(last.mean(-1), 0, atol=1e-5)
  enc.hidden_states(x + 1.0)
  assert enc._forward._cache_size() == 1  # one compilation per input shape
  enc.hidden_states(x[:, :8000])
  assert enc._forward._cache_size() == 2


def test_normalisation_and_padding(model_dir):
  enc = wavlm_jax.load_encoder(model_dir)
  x = np.random.RandomState(1).randn(2, 12000).astype(np.float32)
  scaled = enc.hidden_states(3.0 * x + 0.5)  # normalize_waveform: invariant to gain and offset
  plain = enc.hidden_states(x)
  np.testing.assert_allclose(scaled[-1], plain[-1], atol=1e-4)
  raw = enc.hidden_states(3.0 * x + 0.5, normalize=False)
  assert not np.allclose(raw[-1], plain[-1], atol=1e-3)
  # A padded row gives the same valid frames as the same audio alone, for a layer-norm extractor.
  pad = np.zeros_like(x, bool)
  pad[1, 8000:] = True
  x_padded = x.copy()
  x_padded[1, 8000:] = 0
  padded = enc.hidden_states(x_padded, pad)
  alone = enc.hidden_states(x[1:, :8000])
  frames = alone[-1].shape[1]
  np.testing.assert_allclose(padded[-1][1, :frames], alone[-1][0], atol=1e-4)


def test_bad_inputs_are_reported(model_dir, tmp_path):
  enc = wavlm_jax.load_encoder(model_dir)
  with pytest.raises(ValueError, match="waveforms must be"):
    enc.hidden_states(np.zeros(16000, np.float32))
  with pytest.raises(ValueError, match="padding_mask shape"):
    enc.hidden_states(np.zeros((1, 16000), np.float32), np.zeros((1, 100), bool))
  with pytest.raises(FileNotFoundError, match="no model config"):
    wavlm_jax.load_encoder(tmp_path)


def test_frame_validity_follows_transformers():
  config = wavlm_jax.model_card("wavlm_base")
  pad = jnp.zeros((2, 32000), bool).at[1, 16000:].set(True)
  valid = frontend.frame_valid_mask(pad, 99, config)
  # fairseq would keep 50 (docs/model.md#padding-from-samples-to-frames)
  assert int(valid[0].sum()) == 99 and int(valid[1].sum()) == 49


def test_load_in_the_other_layer_layout(model_dir):
  scanned = wavlm_jax.load_encoder(model_dir)
  looped = wavlm_jax.load_encoder(model_dir, scan_layers=False)
  x = np.random.RandomState(2).randn(1, 8000).astype(np.float32)
  np.testing.assert_allclose(scanned.hidden_states(x)[-1], looped.hidden_states(x)[-1], atol=1e-5)


def test_interrupted_training_save_leaves_the_previous_checkpoint(tmp_path):
  """Orbax writes a step under a temporary name and renames it when complete: a leftover partial
  directory (a crash mid-save) is not taken for a checkpoint."""
  ckpt = checkpoint.TrainCheckpointer(tmp_path / "ckpt", every=1, keep=3, keep_period=None, asynchronous=False)
  state = {"w": jnp.arange(4.0)}
  ckpt.save(1, state, {"next": 1}, {"c": 1}, force=True)
  ckpt.wait()
  (tmp_path / "ckpt" / "2.orbax-checkpoint-tmp-1234").mkdir()  # what a crash during step 2's save leaves
  ckpt.close()
  again = checkpoint.TrainCheckpointer(tmp_path / "ckpt", every=1, keep=3, keep_period=None, asynchronous=False)
  assert again.latest_step() == 1
  restored, data_state = again.restore(1, {"w": jax.ShapeDtypeStruct((4,), jnp.float32)})
  np.testing.assert_array_equal(restored["w"], np.arange(4.0))
  assert data_state == {"next": 1}
  again.close()
