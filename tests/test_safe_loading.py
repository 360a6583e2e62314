"""Torch files are read without executing anything they carry: crafted pickles in the legacy format
(a sequence of plain pickles) and in the zip format are refused by `load_torch_file` and by the command
line, naming the global they need; TorchScript archives and the pre-1.0 tar format are refused; genuine
legacy-format checkpoints still load, with tensors identical to the zip format's."""

import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from wavlm_jax.models import directory
from wavlm_jax.convert import torch_io
from wavlm_jax.convert.__main__ import main as convert
from wavlm_jax.models import config as config_lib
from wavlm_jax.models import params, wavlm

REPO = Path(__file__).resolve().parents[1]


class _System:
  """Unpickles into os.system("touch MARKER") (pickled as the global posix.system)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class _Open:
  """Unpickles into open(MARKER, "w"), which creates the file (pickled as the global io.open)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (str(self.marker), "w"))


def _legacy_first_pickle_system(path, marker):
  # The whole file is one pickle: torch's legacy reader unpickles it as the "magic number".
  path.write_bytes(pickle.dumps(_System(marker), protocol=2))


def _legacy_first_pickle_open(path, marker):
  # Protocol 0, written by hand: GLOBAL builtins.open, MARK, two strings, TUPLE, REDUCE, STOP.
  path.write_bytes(f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode())


def _legacy_object(path, marker):
  # A genuine legacy container (magic, protocol, sys info are fine) with the payload in the object.
  torch.save({"cfg": {"x": _Open(marker)}, "model": {"w": torch.ones(2)}}, path,
             _use_new_zipfile_serialization=False)


def _zip_object(path, marker):
  torch.save({"cfg": {"x": _System(marker)}, "model": {"w": torch.ones(2)}}, path)


CRAFTED = {
    "legacy_first_pickle_system": (_legacy_first_pickle_system, "posix.system"),
    "legacy_first_pickle_open": (_legacy_first_pickle_open, "builtins.open"),
    "legacy_object_open": (_legacy_object, "io.open"),
    "zip_object_system": (_zip_object, "posix.system"),
}


def _cli(*args):
  """`python -m wavlm_jax.convert ARGS` in a fresh interpreter, as a user runs it."""
  return subprocess.run([sys.executable, "-m", "wavlm_jax.convert", *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_pickle_is_refused_and_nothing_runs(kind, tmp_path):
  write, global_name = CRAFTED[kind]
  marker, src, dst = tmp_path / "pwned", tmp_path / "evil.pt", tmp_path / "out"
  write(src, marker)
  assert not marker.exists()  # writing the fixture ran nothing

  with pytest.raises(torch_io.UnsafeCheckpointError, match=f"needs the global '{global_name}'"):
    torch_io.load_torch_file(src)
  assert not marker.exists()

  result = _cli("--from", "unilm", "--src", src, "--dst", dst)
  assert result.returncode == 1, result.stdout + result.stderr
  assert f"'{global_name}'" in result.stderr and "refusing to load" in result.stderr and str(src) in result.stderr
  assert not marker.exists() and not dst.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def _torchscript_archive(path):
  torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))


def _zip_with_code_entry(path):
  # A plain torch.save archive plus a code/ entry, without constants.pkl.
  torch.save({"model": {"w": torch.ones(2)}}, path)
  with zipfile.ZipFile(path, "a") as z:
    archive = z.namelist()[0].split("/")[0]
    z.writestr(f"{archive}/code/__torch__/evil.py", "import os\n")


@pytest.mark.parametrize("make", [_torchscript_archive, _zip_with_code_entry], ids=["jit_save", "code_entry"])
def test_torchscript_archive_is_refused(make, tmp_path, capsys):
  src, dst = tmp_path / "scripted.pt", tmp_path / "out"
  make(src)
  with pytest.raises(torch_io.UnsafeCheckpointError, match="TorchScript is not supported; nothing was executed"):
    torch_io.load_torch_file(src)
  assert convert(["--from", "unilm", "--src", str(src), "--dst", str(dst)]) == 1
  err = capsys.readouterr().err
  assert "TorchScript archive" in err and str(src) in err
  assert not dst.exists()


def test_tar_format_is_refused_before_extraction(tmp_path):
  marker, src = tmp_path / "pwned", tmp_path / "old.pt"
  payload = pickle.dumps(_System(marker), protocol=2)
  with tarfile.open(src, "w") as tar:
    for name in ("sys_info", "storages", "tensors", "pickle"):
      info = tarfile.TarInfo(name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  with pytest.raises(torch_io.UnsafeCheckpointError, match="tar checkpoint format is not supported"):
    torch_io.load_torch_file(src)
  assert not marker.exists()


def test_genuine_legacy_format_loads_identically(tmp_path):
  base = torch.randn(6, 4)
  state = {"w": base, "view": base[2:4], "half": torch.randn(3).half(), "bf16": torch.randn(2).bfloat16(),
           "int": torch.arange(5), "bool": torch.tensor([True, False])}
  obj = {"cfg": {"encoder_layers": 2, "conv_feature_layers": "[(16,10,5)]"}, "model": state}
  torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
  torch.save(obj, tmp_path / "zip.pt")
  assert not zipfile.is_zipfile(tmp_path / "legacy.pt") and zipfile.is_zipfile(tmp_path / "zip.pt")
  for name in ("legacy.pt", "zip.pt"):
    loaded = torch_io.load_torch_file(tmp_path / name)
    assert loaded["cfg"] == obj["cfg"] and loaded["model"].keys() == state.keys()
    for key, tensor in state.items():
      assert loaded["model"][key].dtype == tensor.dtype and torch.equal(loaded["model"][key], tensor), (name, key)


def test_legacy_format_unilm_checkpoint_converts(tmp_path):
  config = config_lib.model_card("tiny", scan_layers=False)
  flat = params.get_params(wavlm.build(config, seed=5))
  directory.save_model(tmp_path / "ours", flat, config)
  assert convert(["--to", "unilm", "--src", str(tmp_path / "ours"), "--dst", str(tmp_path / "zip.pt")]) == 0
  ckpt = torch.load(tmp_path / "zip.pt", weights_only=True)
  torch.save(ckpt, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
  assert convert(["--from", "unilm", "--src", str(tmp_path / "legacy.pt"), "--dst", str(tmp_path / "again"),
                  "--scan-layers", "false"]) == 0
  again = directory.load_flat_params(tmp_path / "again")
  assert again.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], again[k], err_msg=k)
