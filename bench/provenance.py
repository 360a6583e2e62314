"""What every artifact under bench/measured/ records about how it was made: the command line, the git
commit, the date, the machine and the versions of the packages that did the work."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO / "bench" / "measured"


def provenance(packages=("jax", "numpy", "tensorflow-datasets", "grain", "apache-beam", "soundfile")) -> dict:
  """The provenance block of a benchmark's JSON."""
  def git(*args):
    try:
      return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      return ""

  versions = {}
  for name in packages:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {
      "command": " ".join([Path(sys.executable).name, *sys.argv]),
      "commit": git("rev-parse", "HEAD"),
      "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                  "python": platform.python_version()},
      "packages": versions,
  }


def write(out: str | os.PathLike, result: dict) -> None:
  """`result` with its provenance block first, as indented JSON at `out` (folders made)."""
  import json

  Path(out).parent.mkdir(parents=True, exist_ok=True)
  Path(out).write_text(json.dumps({"provenance": provenance(), **result}, indent=2))
  print(f"wrote {out}")
