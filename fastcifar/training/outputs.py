"""Writing outputs atomically: a reader sees the old file or the new, never half.

Each writer writes a temporary file in the destination folder (same file
system, so the rename is atomic), flushes it to disk, then renames it over
the destination. The file gets the mode any new file gets, `0666 & ~umask`
(`tempfile.mkstemp`'s 0600 would survive the rename and keep TensorBoard
under another account, other workers and shared data folders out).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Iterator, TYPE_CHECKING

from fastcifar.errors import UsageError

if TYPE_CHECKING:  # the model's type only: importing Keras is slow
  import keras


def new_temp_file(folder: str, prefix: str, suffix: str = "") -> str:
  """Creates an empty file of a fresh name in `folder`; returns its path.

  As `tempfile.mkstemp` (exclusive creation, so never another's file), but
  with mode `0666 & ~umask`, as `open` gives.
  """
  for _ in range(100):
    path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
    try:
      os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
      return path
    except FileExistsError:
      continue
  raise FileExistsError(f"no free temporary name in {folder}")


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
    tmp = new_temp_file(folder, f".{base}.", suffix)
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    raise UsageError(f"could not write {path} ({e.strerror or e}); free disk "
                     "space, then rerun the command without --restart to "
                     "resume (or choose another --output_dir)") from e
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
