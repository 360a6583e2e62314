"""Reading and writing PyTorch checkpoints without executing pickled code.

`.pt`/`.bin` files are unpickled by `torch.load` with a restricted unpickler: only tensor rebuilding,
plain containers and `argparse.Namespace` resolve to real objects; fairseq's omegaconf/dataclass config
objects resolve to inert stand-ins whose state is read as plain data. Any other global (a function or
class that could run code) refuses the whole file with the name of that global. This holds for both
container formats torch.save writes: the zip archive and the legacy format (a sequence of pickles:
magic number, protocol, sys info, the object, storage keys, then raw storage bytes), every pickle of
which goes through the same unpickler. TorchScript archives and the pre-1.0 tar format are refused
before torch sees them. `.safetensors` files need no unpickling at all.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import collections
import copyreg
import os
import pickle
import tarfile
import types
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The file needs a global outside the allow-list; nothing from it was executed."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
  import torch
  import torch._utils

  allowed = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("collections", "defaultdict"): collections.defaultdict,  # its factory passes this same check
      ("argparse", "Namespace"): argparse.Namespace,
      ("copyreg", "_reconstructor"): copyreg._reconstructor,
      ("torch", "Size"): torch.Size,
      ("torch", "device"): torch.device,
  }
  for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
               "_rebuild_parameter_with_state"):
    if hasattr(torch._utils, name):
      allowed[("torch._utils", name)] = getattr(torch._utils, name)
  for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"):
    allowed[("torch", name)] = getattr(torch, name)
  for name in ("set", "frozenset", "slice", "complex", "dict", "list", "tuple", "int", "float", "str", "bool",
               "bytes", "bytearray", "object"):
    allowed[("builtins", name)] = getattr(builtins, name)
  # NumPy arrays and scalars inside configs (both module spellings: NumPy 1 and 2).
  from numpy._core import multiarray
  for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    allowed[(module, "_reconstruct")] = multiarray._reconstruct
    allowed[(module, "scalar")] = multiarray.scalar
  allowed[("numpy", "ndarray")] = np.ndarray
  allowed[("numpy", "dtype")] = np.dtype
  return allowed


# Config objects of fairseq checkpoints: read as data, never imported.
_STAND_IN_MODULES = ("omegaconf", "fairseq", "typing", "enum")


class StandIn:
  """Inert replacement for a config class of a checkpoint (omegaconf, fairseq dataclasses, enums)."""
  qualified_name = "?"

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"<stand-in {self.qualified_name}>"


_stand_in_classes: dict[str, type] = {}


def _stand_in(module: str, name: str) -> type:
  key = f"{module}.{name}"
  if key not in _stand_in_classes:
    _stand_in_classes[key] = type(name, (StandIn,), {"qualified_name": key, "args": (), "kwargs": {},
                                                     "state": None})
  return _stand_in_classes[key]


class _RestrictedUnpickler(pickle.Unpickler):
  allowed: dict = {}
  source = "?"

  def find_class(self, module: str, name: str):
    # Python 2 spellings (__builtin__, copy_reg) that old pickles and protocol-2 objects use.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in self.allowed:
      return self.allowed[(module, name)]
    if module.split(".")[0] in _STAND_IN_MODULES:
      return _stand_in(module, name)
    raise UnsafeCheckpointError(
        f"{self.source}: refusing to load: it needs the global '{module}.{name}', which is not plain "
        "data (tensors, containers, config objects). The file may carry code; nothing was executed.")


def _restricted_pickle_module(source: str) -> types.SimpleNamespace:
  """A stand-in for the `pickle` module whose `Unpickler` and `load` both use the allow-list.

  torch.load reads zip archives with `Unpickler` but the legacy format with `load` (four plain pickles
  around the object), so both must be restricted: a `load` that is `pickle.load` runs any code in them.
  """
  unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": _allowed_globals(), "source": source})

  def load(file, **kwargs):
    return unpickler(file, **kwargs).load()

  return types.SimpleNamespace(Unpickler=unpickler, load=load, __name__="restricted_pickle")


_ZIP_MAGIC = b"PK\x03\x04"  # what torch.load tests (the first bytes only) to pick the zip reader


def _refuse_code_containers(f, source: str) -> None:
  """Refuses the containers torch.load would not unpickle with our module: TorchScript archives
  (handed to torch.jit.load, which runs their code) and the pre-1.0 tar format (extracted to disk and
  read with storage classes as globals). `f` is at offset 0 and is left there."""
  import torch

  head = f.read(len(_ZIP_MAGIC))
  f.seek(0)
  if head == _ZIP_MAGIC:
    try:
      records = torch._C.PyTorchFileReader(f).get_all_records()  # torch's own reader: the records it sees
    except RuntimeError as e:
      raise ValueError(f"{source}: not a readable torch zip archive: {e}") from None
    finally:
      f.seek(0)
    if "constants.pkl" in records or any(r.startswith("code/") for r in records):
      raise UnsafeCheckpointError(
          f"{source}: refusing to load: it is a TorchScript archive (code/ or constants.pkl entries), and "
          "TorchScript is not supported; nothing was executed. Save the model's state_dict() instead.")
    return
  try:
    tarfile.open(fileobj=f, mode="r:").close()  # the test torch's legacy loader makes before its tar path
    is_tar = True
  except tarfile.TarError:
    is_tar = False
  finally:
    f.seek(0)
  if is_tar:
    raise UnsafeCheckpointError(f"{source}: refusing to load: the pre-1.0 tar checkpoint format is not supported; "
                                "nothing was executed. Re-save it with a current torch.save.")


def load_torch_file(path: str | os.PathLike) -> Any:
  """torch.load of a .pt/.bin file (zip or legacy format) with the restricted unpickler, tensors on the CPU."""
  import torch

  path = Path(path)
  # One open file for the checks and the load, so that what was checked is what is loaded.
  with open(path, "rb") as f:
    _refuse_code_containers(f, str(path))
    try:
      return torch.load(f, map_location="cpu", pickle_module=_restricted_pickle_module(str(path)),
                        weights_only=False)
    except UnsafeCheckpointError:
      raise
    except pickle.UnpicklingError as e:
      raise UnsafeCheckpointError(f"{path}: cannot be unpickled safely: {e}") from None
    except (EOFError, RuntimeError, ValueError) as e:  # truncated or not a torch file; torch's message has no path
      raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def to_plain(obj: Any) -> Any:
  """Config objects -> plain dicts/lists/values (omegaconf stand-ins, Namespaces, enums)."""
  if isinstance(obj, argparse.Namespace):
    return {k: to_plain(v) for k, v in vars(obj).items()}
  if isinstance(obj, StandIn):
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
      state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
    if isinstance(state, dict):
      if "_content" in state:
        return to_plain(state["_content"])
      if "_val" in state:
        return to_plain(state["_val"])
      return {k: to_plain(v) for k, v in state.items() if not k.startswith("_")}
    if obj.args:
      return to_plain(obj.args[0])  # enums pickle their value
    return None
  if isinstance(obj, Mapping):
    return {k: to_plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_plain(v) for v in obj]
  return obj


def state_dict_to_numpy(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
  import torch

  out = {}
  for key, value in state.items():
    if isinstance(value, torch.Tensor):
      out[key] = value.detach().to(torch.float32).cpu().numpy() if value.is_floating_point() else value.numpy()
  return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Tensors of a .safetensors, .bin or .pt state-dict file as NumPy arrays."""
  path = Path(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    return {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v for k, v in load_file(str(path)).items()}
  obj = load_torch_file(path)
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return state_dict_to_numpy(obj)


def save_torch_file(obj: Any, path: str | os.PathLike) -> None:
  """torch.save with NumPy arrays turned into tensors (recursively), written atomically."""
  import torch

  def convert(x):
    if isinstance(x, np.ndarray):
      return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Mapping):
      return {k: convert(v) for k, v in x.items()}
    return x

  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  torch.save(convert(obj), tmp)
  os.replace(tmp, path)
