"""Numerical parity with transformers (PyTorch, fp32): every hidden state, padded and unpadded, after
converting with the command line; CTC logits."""

import subprocess
import sys

import jax
import pytest

import wavlm_jax
from tests import torch_models
from wavlm_jax.models import directory
from wavlm_jax.convert.__main__ import main as convert

TOL = 1e-4


def _convert_hf(model, tmp_path, scan_layers="true"):
  src, dst = tmp_path / "hf", tmp_path / "ours"
  model.save_pretrained(src)
  assert convert(["--from", "hf", "--src", str(src), "--dst", str(dst), "--scan-layers", scan_layers]) == 0
  return dst


@pytest.mark.parametrize("variant", sorted(torch_models.VARIANTS))
@pytest.mark.parametrize("padded", [False, True])
def test_every_hidden_state_matches_transformers(variant, padded, tmp_path):
  model = torch_models.make(variant)
  encoder = wavlm_jax.load_encoder(_convert_hf(model, tmp_path))
  x, pad = torch_models.waveforms()
  pad = pad if padded else None
  ours = encoder.hidden_states(x, pad)
  theirs, last, _ = torch_models.reference(model, x, pad)
  assert len(ours) == len(theirs) == model.config.num_hidden_layers + 1
  for i in range(len(theirs) - 1):
    assert torch_models.rel_err(ours[i], theirs[i]) < TOL, f"hidden state {i}"
  # transformers >= 5 returns the un-normalised last layer output in hidden_states[-1]; our contract is
  # transformers' last_hidden_state there (final LayerNorm applied for pre-LN models).
  assert torch_models.rel_err(ours[-1], last) < TOL
  if not model.config.do_stable_layer_norm:
    assert torch_models.rel_err(ours[-1], theirs[-1]) < TOL


def test_pre_ln_layer_outputs_are_unnormalised(tmp_path):
  model = torch_models.make("wavlm_pre_ln_layer_norm_conv_bias")
  ours_model = directory.load_model(_convert_hf(model, tmp_path))
  x, _ = torch_models.waveforms()
  out = ours_model(jax.numpy.asarray(x))
  theirs, last, _ = torch_models.reference(model, x)
  assert torch_models.rel_err(out.layer_outputs[-1], theirs[-1]) < TOL
  assert torch_models.rel_err(out.last_hidden_state, last) < TOL
  assert torch_models.rel_err(out.layer_outputs[-1], last) > 1e-2  # the final LN really is different


@pytest.mark.parametrize("variant", ["wavlm_post_ln_group_norm", "hubert_post_ln"])
def test_ctc_logits_match_transformers(variant, tmp_path):
  model = torch_models.make(variant, ctc=True)
  ours_model = directory.load_model(_convert_hf(model, tmp_path, scan_layers="false"))
  assert ours_model.config.vocab_size == 12 and not ours_model.config.scan_layers
  x, _ = torch_models.waveforms()
  logits = ours_model.ctc_logits(ours_model(jax.numpy.asarray(x)))
  _, _, out = torch_models.reference(model, x)
  assert torch_models.rel_err(logits, out.logits.numpy()) < TOL


def test_command_line_entry_point(tmp_path):
  model = torch_models.make("hubert_post_ln")
  model.save_pretrained(tmp_path / "hf")
  result = subprocess.run([sys.executable, "-m", "wavlm_jax.convert", "--from", "hf", "--src", str(tmp_path / "hf"),
                           "--dst", str(tmp_path / "ours")], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "ours" / "config.json").is_file() and (tmp_path / "ours" / "params").is_dir()
  x, _ = torch_models.waveforms(batch=1)
  ours = wavlm_jax.load_encoder(tmp_path / "ours").hidden_states(x)
  theirs, _, _ = torch_models.reference(model, x)
  assert torch_models.rel_err(ours[-1], theirs[-1]) < TOL
