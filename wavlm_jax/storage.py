"""Where the programs read and write: every path may be a local path or a URL (`gs://bucket/...`).

Paths go through `etils.epath`, the path abstraction Orbax and TFDS use, and never through
`os.path`/`pathlib` string surgery (which turns `gs://b/x` into `./gs:/b/x` on local disk). The clients
behind a `gs://` path, and how each finds the service:

    small files (JSON, metrics, model configs)  epath -> fsspec/gcsfs      $STORAGE_EMULATOR_HOST
    checkpoint and model arrays (Orbax)         tensorstore's GCS driver   $TENSORSTORE_GCS_HTTP_URL
    ArrayRecord readers (datasets, labels)      google-cloud-cpp in array_record  $CLOUD_STORAGE_EMULATOR_ENDPOINT

On GCS all three use the machine's default credentials. Pointing `STORAGE_EMULATOR_HOST` at a GCS
emulator (the tests run fake-gcs-server) points the other two at it as well, unless they are set.

epath would use TensorFlow's GCS file system for `gs://` when TensorFlow is installed; that client has no
endpoint setting and cannot be tested without a cloud, so this module makes epath use gcsfs
(`EPATH_USE_TF=false`, unless the environment says otherwise).

Object stores have no rename and no append. Directories that must appear whole (model directories,
label stores) are assembled in a local temporary directory and uploaded with their marker file last
(`staged_directory`); readers treat a directory without its marker as absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

URL_PREFIXES = ("gs://", "s3://")


def _configure_clients() -> None:
  os.environ.setdefault("EPATH_USE_TF", "false")
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator:
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
    os.environ.setdefault("CLOUD_STORAGE_EMULATOR_ENDPOINT", emulator)
  # gcsfs warns on every bucket it cannot classify without the storage-control API (emulators, plain
  # buckets without that permission) and falls back to the plain client, which is what we use.
  logging.getLogger("gcsfs").setLevel(logging.ERROR)


_configure_clients()

from etils import epath  # noqa: E402  (after EPATH_USE_TF is set)


def is_url(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(URL_PREFIXES)


def path(p: str | os.PathLike) -> epath.Path:
  """`p` as an epath.Path: a URL unchanged, a local path made absolute (`~` expanded)."""
  text = os.fspath(p)
  if is_url(text):
    return epath.Path(text.rstrip("/"))
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def as_str(p: str | os.PathLike) -> str:
  """The string form of `path(p)`, for libraries that take strings (keeps the `gs://` prefix)."""
  return os.fspath(path(p))


def files_under(p: str | os.PathLike) -> list[epath.Path]:
  """Every file below `p`, sorted: local or on a bucket (epath's glob refuses `**`, which on a bucket
  would list without bound)."""
  out, pending = [], [path(p)]
  while pending:
    for child in pending.pop().iterdir():
      (pending if child.is_dir() else out).append(child)
  return sorted(out)


def remove_tree(p: str | os.PathLike) -> None:
  target = path(p)
  if target.exists():
    target.rmtree()


def upload_file(local: str | os.PathLike, dest: str | os.PathLike) -> None:
  """Copies one local file to `dest` (a URL or a local path)."""
  dest = path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  with open(local, "rb") as src, dest.open("wb") as dst:
    shutil.copyfileobj(src, dst, length=16 << 20)


def upload_tree(local: str | os.PathLike, dest: str | os.PathLike, *, last: str | None = None) -> None:
  """Copies every file under `local` to the same relative path under `dest`; `last` (a relative path),
  if given, is copied after all the others (the marker that says the directory is complete)."""
  local = Path(local)
  files = sorted(f for f in local.rglob("*") if f.is_file())
  files.sort(key=lambda f: f.relative_to(local).as_posix() == last)  # stable: the marker moves to the end
  for f in files:
    upload_file(f, path(dest) / f.relative_to(local).as_posix())


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike, *, marker: str, overwrite: bool = False) -> Iterator[Path]:
  """Yields a local directory to fill; on success `final` holds exactly its files, and never part of them
  under the marker file's name.

  Local `final`: the directory is a temporary sibling, renamed into place (atomic on one file system).
  URL `final`: a local temporary directory, uploaded with `marker` last, after the old directory's marker
  and then its other objects are removed (a reader sees either the old directory, none, or the new one).
  On an exception nothing is changed at `final`.
  """
  target = path(final)
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f"{target} exists and is not empty (pass overwrite=True / --overwrite)")
  if is_url(target):
    with tempfile.TemporaryDirectory(prefix="wavlm_jax-stage-") as tmp:
      yield Path(tmp)
      if (target / marker).exists():
        (target / marker).unlink()
      remove_tree(target)
      upload_tree(tmp, target, last=marker)
    return
  local = Path(os.fspath(target))
  local.parent.mkdir(parents=True, exist_ok=True)
  tmp = local.parent / f".{local.name}.tmp-{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  try:
    yield tmp
    if local.exists():
      shutil.rmtree(local)
    os.replace(tmp, local)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)


class Mirror:
  """A local directory whose files are copied to `dest` by `sync()`, for writers that append (TensorBoard
  event files, metrics.jsonl), which an object store cannot do. `resume` files already at `dest` are
  copied down first, so that a resumed run appends to them. A file that grew since its last upload sends
  only its new bytes (`append_file`: on a bucket, a small object composed onto the end of the copy there),
  so the bytes uploaded per sync stay those written since the last one however long the run; a file that
  shrank or was rewritten is uploaded whole. At most every `every_seconds`; `close()` uploads the rest and
  removes the copy. An upload that fails (the store unreachable for longer than its client retries) is
  logged and tried again at the next sync: logs never stop a run. `bytes_uploaded` counts what was sent."""

  def __init__(self, dest: str | os.PathLike, *, resume: tuple[str, ...] = (), every_seconds: float = 60.0):
    self.dest = path(dest)
    self.local = Path(tempfile.mkdtemp(prefix="wavlm_jax-mirror-"))
    self.every_seconds = every_seconds
    self.bytes_uploaded = 0
    self._uploaded: dict[str, tuple[int, int]] = {}  # name -> (size, mtime) of the copy at dest
    self._last = time.monotonic()
    for name in resume:
      if (self.dest / name).is_file():
        with (self.dest / name).open("rb") as src, open(self.local / name, "wb") as dst:
          shutil.copyfileobj(src, dst)
        st = (self.local / name).stat()
        self._uploaded[name] = (st.st_size, st.st_mtime_ns)

  def due(self) -> bool:
    return time.monotonic() - self._last >= self.every_seconds

  def sync(self) -> bool:
    """Uploads what changed; False (after logging why) when an upload failed."""
    ok = True
    for f in sorted(self.local.rglob("*")):
      if f.is_file():
        name, st = f.relative_to(self.local).as_posix(), f.stat()
        before = self._uploaded.get(name)
        if before == (st.st_size, st.st_mtime_ns):
          continue
        try:
          if before is not None and 0 < before[0] < st.st_size:  # grown: an append-only writer's new bytes
            with open(f, "rb") as src:
              src.seek(before[0])
              tail = src.read(st.st_size - before[0])
            append_file(tail, self.dest / name)
            self.bytes_uploaded += len(tail)
          else:
            upload_file(f, self.dest / name)
            self.bytes_uploaded += st.st_size
        except Exception as e:  # noqa: BLE001 - any client error: keep the local copy, retry next time
          logging.getLogger(__name__).warning("could not upload %s to %s (%r); retrying at the next sync",
                                              f, self.dest / name, e)
          ok = False
          continue
        self._uploaded[name] = (st.st_size, st.st_mtime_ns)
    self._last = time.monotonic()
    return ok

  def close(self) -> None:
    if self.sync():
      shutil.rmtree(self.local, ignore_errors=True)
    else:
      logging.getLogger(__name__).warning("kept %s: some files could not be uploaded to %s", self.local, self.dest)


def append_file(data: bytes, dest: str | os.PathLike) -> None:
  """Appends `data` to the file at `dest`: on local disk in place; on a bucket by writing it as an object
  of its own and composing the two into `dest` (GCS compose, through gcsfs's `merge`), so that only `data`
  travels. The temporary object is removed."""
  dest = path(dest)
  if not is_url(dest):
    with open(os.fspath(dest), "ab") as out:
      out.write(data)
    return
  import fsspec

  fs = fsspec.filesystem(os.fspath(dest).split("://", 1)[0])
  target = os.fspath(dest)
  part = f"{target}.append-{uuid.uuid4().hex}"
  fs.pipe_file(part, data)
  try:
    fs.merge(target, [target, part])
  finally:
    fs.rm_file(part)


def run_status(workdir: str | os.PathLike, *, tries: int = 4, wait_seconds: float = 10.0) -> str:
  """The `status` in a run's summary.json ("finished" or "preempted"; a diverging run stops with an error
  instead), or "none" when the run has written none yet. Any other failure to read it (the store unreachable, no permission) is retried,
  then raised: a launcher must not take "cannot tell" for "not finished"."""
  import json

  summary = path(workdir) / "summary.json"
  for attempt in range(tries):
    try:
      return str(json.loads(summary.read_text()).get("status", "none"))
    except FileNotFoundError:
      return "none"
    except ValueError as e:  # a summary that is not JSON: say so, it will not get better
      raise ValueError(f"{summary}: not a run summary ({e})") from None
    except Exception:  # noqa: BLE001 - any client error
      if attempt == tries - 1:
        raise
      time.sleep(wait_seconds)
  raise AssertionError("unreachable")


if __name__ == "__main__":  # python -m wavlm_jax.storage status WORKDIR: what the launchers' restart logic reads
  import sys

  if len(sys.argv) != 3 or sys.argv[1] != "status":
    sys.exit("usage: python -m wavlm_jax.storage status WORKDIR  (a local path or gs://...)")
  try:
    print(run_status(sys.argv[2]))
  except Exception as e:  # noqa: BLE001
    sys.exit(f"error: cannot read {sys.argv[2]}/summary.json: {e!r}")
