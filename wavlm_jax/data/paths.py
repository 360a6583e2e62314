"""The one data-dir rule every reader and writer of datasets follows (no TFDS import here).

    config value (data_dir)  >  $WAVLM_DATA_DIR  >  $TFDS_DATA_DIR  >  ~/tensorflow_datasets

The last two are TFDS's own default, so a dataset a user prepared with plain TFDS is found too.
"""

from __future__ import annotations

import os


def data_dir(configured: str | os.PathLike | None = "") -> str:
  """The TFDS data dir to read and write: `configured` if set, else the environment, else TFDS's default."""
  if configured:
    return os.fspath(configured)
  for var in ("WAVLM_DATA_DIR", "TFDS_DATA_DIR"):
    if os.environ.get(var):
      return os.environ[var]
  return os.path.expanduser("~/tensorflow_datasets")
