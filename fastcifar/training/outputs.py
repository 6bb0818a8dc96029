"""Atomic output writes: a reader sees the old file or the new, never half.

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
from typing import Callable, Iterator, TYPE_CHECKING

from fastcifar.errors import UsageError

if TYPE_CHECKING:  # the model's type only: importing Keras is slow
  import keras


def _create_fresh(folder: str, prefix: str, suffix: str,
                  create: Callable[[str], None]) -> str:
  """`create(path)` for a fresh path in `folder`; returns the path.

  `create` must fail with FileExistsError when the path exists, so the path
  is never another's.
  """
  for _ in range(100):
    path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
    try:
      create(path)
      return path
    except FileExistsError:
      continue
  raise FileExistsError(f"no free temporary name in {folder}")


def new_temp_file(folder: str, prefix: str, suffix: str = "") -> str:
  """Creates an empty file of a fresh name in `folder`; returns its path.

  As `tempfile.mkstemp` (exclusive creation, so never another's file), but
  with mode `0666 & ~umask`, as `open` gives.
  """
  return _create_fresh(folder, prefix, suffix, lambda path: os.close(
      os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def new_temp_folder(folder: str, prefix: str) -> str:
  """Creates an empty folder of a fresh name in `folder`; returns its path.

  As `tempfile.mkdtemp`, but with mode `0777 & ~umask`, as `mkdir` gives:
  mkdtemp's 0700 survives the rename and keeps others out of a folder whose
  files they may read.
  """
  return _create_fresh(folder, prefix, "", os.mkdir)


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


# Beside model.keras: the run's config and data (`sources.data_record`), so
# the commands after training need no data flag repeated.
RUN_RECORD = "run.json"


def read_run_record(model_path: str) -> dict | None:
  """The record `fastcifar.train` wrote beside `model_path`, if any.

  Args:
    model_path: a `.keras` file.

  Returns:
    The run's config, its `data` among it; None beside a model saved by
    other means (or by a fastcifar that wrote no record).

  Raises:
    UsageError: the record is there but unreadable.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                      RUN_RECORD)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
    if not isinstance(record.get("data"), dict):
      raise ValueError("no data record")
  except (OSError, ValueError, AttributeError) as e:
    raise UsageError(f"{path} is damaged ({e}); delete it and pass the data "
                     "flags the model was trained with") from e
  return record
