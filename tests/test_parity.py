"""Numerical parity with transformers (PyTorch, fp32): every hidden state, padded and unpadded, after
converting with the command line; CTC logits."""

import subprocess
import sys

import jax
import numpy as np
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


@pytest.mark.parametrize("variant", sorted(torch_models.VARIANTS))
def test_attention_probabilities_match_transformers(variant, tmp_path):
  """analysis.inside.look_inside's attention maps (the gated bias included) against transformers'
  `output_attentions`, padded batch: per head for HuBERT; WavLM's eager path returns the mean over heads
  (broadcast to every head), so the head mean is compared, and the per-head maps must not all be equal."""
  import torch

  from wavlm_jax.analysis.inside import look_inside

  model = torch_models.make(variant)
  model.set_attn_implementation("eager")  # sdpa returns no probabilities
  ours = look_inside(directory.load_model(_convert_hf(model, tmp_path)), *torch_models.waveforms())
  x, pad = torch_models.waveforms()
  with torch.no_grad():
    theirs = model(torch.from_numpy(x), attention_mask=torch.from_numpy(~pad).long(), output_attentions=True)
  layers = model.config.num_hidden_layers
  assert sorted(ours.attention) == list(range(1, layers + 1)) and len(theirs.attentions) == layers
  wavlm = variant.startswith("wavlm")
  for layer in range(1, layers + 1):
    a, b = ours.attention[layer], theirs.attentions[layer - 1].numpy()
    assert a.shape == b.shape
    if wavlm:
      assert torch_models.rel_err(a.mean(1), b[:, 0]) < TOL, f"layer {layer}"
      assert np.abs(a[:, 0] - a[:, 1]).max() > 1e-3
      assert ours.gates[layer].shape == a.shape[:3]
    else:
      assert torch_models.rel_err(a, b) < TOL, f"layer {layer}"
    assert np.all(a[-1][..., ~ours.frame_valid[-1]] == 0)  # padded keys of the padded utterance
  np.testing.assert_allclose(ours.attention[1].sum(-1), 1.0, atol=1e-5)
  assert (ours.position_bias is not None) == wavlm and (not ours.gates) == (not wavlm)
  hidden, _, _ = torch_models.reference(model, x, pad)
  assert torch_models.rel_err(ours.hidden_states[1], hidden[1]) < TOL
  with pytest.raises(ValueError, match=r"layers \[0, 4\] out of range"):
    look_inside(directory.load_model(tmp_path / "ours"), x, layers=(0, 1, 4))
  with pytest.raises(ValueError, match=r"mask_time has shape \(2, 3\); these waveforms have \(2, \d+\)"):
    look_inside(directory.load_model(tmp_path / "ours"), x, mask_time=np.zeros((2, 3), bool))
