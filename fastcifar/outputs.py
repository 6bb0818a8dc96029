"""Writing outputs atomically: a reader sees the old file or the new, never half.

Each writer writes a temporary file in the destination folder (same file
system, so the rename is atomic), flushes it to disk, then renames it over
the destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

import keras

from fastcifar.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write; renames it to `path` on success.

  On any failure the temporary file is removed and `path` is untouched; a
  failure of the file system (disk full, permissions) becomes a UsageError
  that names the file.
  """
  folder = os.path.dirname(os.path.abspath(path))
  base = os.path.basename(path)
  suffix = os.path.splitext(base)[1]  # keras insists on the .keras suffix
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=suffix)
    os.close(fd)
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    raise UsageError(f"could not write {path} ({e.strerror or e}); free disk "
                     "space or choose another --output_dir, then rerun the "
                     "same command to resume") from e
  finally:
    if tmp and os.path.exists(tmp):
      os.unlink(tmp)


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON to `path`, atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")


def save_model(model: keras.Model, path: str) -> None:
  """Saves a `.keras` model to `path`, atomically."""
  with atomic_path(path) as tmp:
    model.save(tmp)
