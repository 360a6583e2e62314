"""Ahead-of-time compilation of the training step: for a small TPU topology through libtpu (no TPU
needed) and for 8 fake CPU devices."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs import tiny
from wavlm_jax import aot
from wavlm_jax.training import mesh as mesh_lib

REPO = Path(__file__).resolve().parents[1]


def _tiny():
  cfg = tiny.get_config()
  cfg.data.batch_size, cfg.data.crop_seconds = 8, 1.0
  return cfg


def _libtpu_reason():
  try:
    from jax.experimental import topologies
    topologies.get_topology_desc("v5e:2x2", "tpu")
    return None
  except Exception as e:  # noqa: BLE001
    return f"libtpu cannot describe a TPU topology here ({type(e).__name__}: {str(e)[:120]}); install the [tpu] extra"


def test_aot_on_fake_cpu_devices():
  cfg = _tiny()
  report = aot.analyse(cfg, "tiny", "cpu x8", jax.devices("cpu")[:8], "cpu", label_rate=100.0)
  assert report.devices == 8 and report.batch == 8 and report.flops_per_step > 0
  assert report.argument_gib > 0 and report.fits is None


def _state_bytes(cfg) -> int:
  """fp32 parameters plus Adam's two moments of the config's model: the analytic size of the train state."""
  from wavlm_jax.models import params, wavlm

  return 3 * 4 * params.count(params.param_shapes(wavlm.abstract(cfg.model)))


def _fsdp(cfg, data: int, fsdp: int):
  with cfg.unlocked():
    cfg.sharding = "fsdp"
    cfg.mesh.data, cfg.mesh.fsdp = data, fsdp
  return cfg


def _batch_bytes(devices: int) -> int:
  """A device's rows of the tiny step's batch (8 x 1 s): audio f32 and padding mask, labels int32 at 100 Hz."""
  return 8 // devices * (16000 * (4 + 1) + 100 * 4)


def test_aot_memory_is_the_analytic_state_sharded():
  # The compiled step's per-device arguments are the train state (fp32 parameters and two Adam moments)
  # plus the device's rows of the batch: all of the state under dp, about half under fsdp over 2 devices.
  devices, state = jax.devices("cpu")[:8], _state_bytes(_tiny())
  dp = aot.analyse(_tiny(), "tiny", "cpu x8", devices, "cpu", label_rate=100.0)
  fsdp = aot.analyse(_fsdp(_tiny(), 4, 2), "tiny", "cpu x8", devices, "cpu", label_rate=100.0)
  dp_state = dp.argument_gib * 2 ** 30 - _batch_bytes(8)
  fsdp_state = fsdp.argument_gib * 2 ** 30 - _batch_bytes(8)
  assert state <= dp_state <= state * 1.01 + 4096, (dp_state, state)
  assert state / 2 <= fsdp_state <= state * 0.6, (fsdp_state, state)  # a few small tensors stay replicated


def test_aot_for_a_tpu_topology():
  reason = _libtpu_reason()
  if reason:
    pytest.skip(reason)
  devices, chip = aot.devices_for("v5e:2x2", None)
  report = aot.analyse(_fsdp(_tiny(), 2, 2), "tiny", "v5e:2x2", devices, chip, label_rate=100.0)
  assert report.devices == 4 and report.hbm_gib == 16 and report.fits is True
  # TPU layouts pad small arrays to (8, 128) tiles: the tiny model's 64-wide tensors take up to twice their
  # size, so the bound is looser than on CPU.
  arguments, state = report.argument_gib * 2 ** 30 - _batch_bytes(4), _state_bytes(_tiny())
  assert state / 2 <= arguments <= state * 2, (arguments, state)
  assert report.flops_per_step > 0 and report.roofline_step_seconds > 0


def test_meshes_for_tpu_topologies_with_two_devices_per_chip():
  # A v4 topology describes each chip's two TensorCores as two devices, which mesh_utils' physical
  # layout refuses; the mesh then takes the chips in order, a chip's two cores adjacent.
  reason = _libtpu_reason()
  if reason:
    pytest.skip(reason)
  devices, chip = aot.devices_for("v4:2x2x4", None)
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 16}, devices)
  assert chip == "v4" and dict(mesh.shape) == {"data": 2, "fsdp": 16, "tensor": 1}
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)
  pairs = mesh.devices.reshape(-1, 2)
  assert all(a.coords == b.coords and a.core_on_chip != b.core_on_chip for a, b in pairs)
  assert mesh_lib.make_mesh({"data": -1}, aot.devices_for("v5e:4x4", None)[0]).devices.size == 16


def test_positional_conv_auto_follows_the_devices_compiled_for():
  # "auto" is decided by the mesh's devices, not the host: a TPU step compiled ahead of time on a CPU
  # host gets the grouped convolution, a CPU step the per-group matmul.
  reason = _libtpu_reason()
  if reason:
    pytest.skip(reason)
  cfg = _tiny()
  grouped = f"feature_group_count = {cfg.model.conv_pos_groups}"
  for devices, expected in ((aot.devices_for("v5e:2x2", None)[0], True), (jax.devices("cpu")[:4], False)):
    lowered, _, _ = aot.lower_step(cfg, devices, label_rate=100.0)
    assert (grouped in lowered.as_text()) == expected, devices[0].platform


def test_aot_command_line_reports_memory_and_flops():
  out = subprocess.run([sys.executable, "-m", "wavlm_jax.aot", "--config", "configs/tiny.py", "--cpu_devices", "4",
                        "--config.data.batch_size=8", "--config.data.crop_seconds=1.0", "--label_rate=100"],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "per-device memory" in out.stdout and "TFLOP per step" in out.stdout and "4 devices" in out.stdout
