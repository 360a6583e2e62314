"""Label stores: frame-level unit labels (k-means clusters, phones) keyed by utterance id.

A store is a directory:
    labels.array_record   one record per utterance: little-endian int32 labels
    index.json            {"ids": [...]} in record order
    meta.json             {"label_rate": 50 or 100, "num_classes": k, "provenance": {...}}
written under a temporary name and renamed into place when complete (on a bucket, gs://..., uploaded
with meta.json last: see `storage.staged_directory`). The data pipeline joins a store
by id and checks every label sequence against its audio (fairseq's tolerance: 0.1 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Iterable

import numpy as np

from wavlm_jax import storage
from wavlm_jax.audio import SAMPLE_RATE

LENGTH_TOLERANCE_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What a step needs to know of its labels: their rate (50 or 100 Hz) and how many classes there are."""
  rate: float
  num_classes: int


def utterance_id(value) -> str:
  """An utterance id as stored by TFDS (bytes) or given (str): the key of label stores."""
  return value.decode() if isinstance(value, bytes) else str(value)


class LabelLengthError(ValueError):
  """Labels and audio of an utterance disagree in duration at the store's label rate."""


def check_length(uid: str, num_labels: int, num_samples: int, label_rate: float, sample_rate: int = SAMPLE_RATE,
                 tolerance: float = LENGTH_TOLERANCE_SECONDS) -> None:
  labels_seconds, audio_seconds = num_labels / label_rate, num_samples / sample_rate
  if abs(labels_seconds - audio_seconds) > tolerance:
    raise LabelLengthError(
        f"utterance {uid!r}: {num_labels} labels at {label_rate} Hz = {labels_seconds:.3f} s, but the audio has "
        f"{num_samples} samples = {audio_seconds:.3f} s (tolerance {tolerance} s); wrong label rate or store?")


class LabelStoreWriter:
  """Writes a store; use as a context manager. Nothing appears at `directory` until `close()`."""

  def __init__(self, directory: str | os.PathLike, *, label_rate: float, num_classes: int,
               provenance: dict[str, Any] | None = None, overwrite: bool = False):
    from array_record.python import array_record_module

    self.directory = storage.path(directory)
    if self.directory.exists() and not overwrite:
      raise FileExistsError(f"{self.directory} exists")
    # written locally (ArrayRecord writes local files only), then moved or uploaded whole, meta.json last
    self._stage = contextlib.ExitStack()
    self._tmp = self._stage.enter_context(storage.staged_directory(self.directory, marker="meta.json",
                                                                   overwrite=True))
    self._writer = array_record_module.ArrayRecordWriter(str(self._tmp / "labels.array_record"), "group_size:1")
    self._ids: list[str] = []
    self._seen: set[str] = set()
    self._meta = {"label_rate": label_rate, "num_classes": int(num_classes), "provenance": provenance or {}}

  def add(self, uid: str, labels: Iterable[int]) -> None:
    if uid in self._seen:
      raise ValueError(f"utterance {uid!r} added twice")
    labels = np.asarray(labels)
    if labels.ndim != 1:
      raise ValueError(f"utterance {uid!r}: labels must be 1-D, got shape {labels.shape}")
    self._writer.write(labels.astype("<i4").tobytes())
    self._ids.append(uid)
    self._seen.add(uid)

  def close(self) -> os.PathLike:
    self._writer.close()
    (self._tmp / "index.json").write_text(json.dumps({"ids": self._ids}))
    (self._tmp / "meta.json").write_text(json.dumps({**self._meta, "num_utterances": len(self._ids)}, indent=2))
    self._stage.close()
    return self.directory

  def abort(self) -> None:
    try:
      self._writer.close()
    finally:
      self._stage.__exit__(RuntimeError, RuntimeError("label store aborted"), None)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is None:
      self.close()
    else:
      self.abort()


class LabelStore:
  """Random access to a store by utterance id."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = storage.path(directory)
    for name in ("labels.array_record", "index.json", "meta.json"):
      if not (self.directory / name).is_file():
        raise FileNotFoundError(f"{self.directory / name}: missing; is {directory} a label store?")
    meta = json.loads((self.directory / "meta.json").read_text())
    self.label_rate = float(meta["label_rate"])
    self.num_classes = int(meta["num_classes"])
    self.provenance = meta.get("provenance", {})
    self._row = {uid: i for i, uid in enumerate(json.loads((self.directory / "index.json").read_text())["ids"])}
    self._reader = None

  @property
  def spec(self) -> LabelSpec:
    return LabelSpec(self.label_rate, self.num_classes)

  def __getstate__(self):  # picklable for Grain worker processes: reopen lazily
    return {**self.__dict__, "_reader": None}

  def _open(self):
    if self._reader is None:
      from array_record.python import array_record_module
      self._reader = array_record_module.ArrayRecordReader(os.fspath(self.directory / "labels.array_record"))
    return self._reader

  def __len__(self) -> int:
    return len(self._row)

  def __contains__(self, uid: str) -> bool:
    return uid in self._row

  def ids(self) -> list[str]:
    return list(self._row)

  def __getitem__(self, uid: str) -> np.ndarray:
    if uid not in self._row:
      raise KeyError(f"utterance {uid!r} has no labels in {self.directory}")
    return np.frombuffer(self._open().read([self._row[uid]])[0], "<i4").astype(np.int32)


def merge_stores(parts, directory: str | os.PathLike, **meta) -> os.PathLike:
  """One store at `directory` from part stores (e.g. one per host), in the order given; `meta` as for
  LabelStoreWriter. An utterance in two parts is an error."""
  with LabelStoreWriter(directory, overwrite=True, **meta) as writer:
    for part in parts:
      store = LabelStore(part)
      for uid in store.ids():
        writer.add(uid, store[uid])
  return storage.path(directory)
