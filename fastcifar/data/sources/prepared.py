"""The fast-loading form: one `.npz` of uint8 arrays, read without pickle."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from fastcifar.training import outputs
from fastcifar.errors import UsageError
from fastcifar.data.sources.dataset import ImageDataset, make_dataset

_KEYS = ("train_images", "train_labels", "test_images", "test_labels",
         "class_names")


def prepared_path(data_dir: str, name: str) -> str:
  """Where `save_prepared` puts dataset `name` inside `data_dir`."""
  return os.path.join(data_dir, f"fastcifar-{name}.npz")


def save_prepared(dataset: ImageDataset, path: str) -> None:
  """Writes the dataset to `path` atomically (temporary file, then rename).

  Args:
    dataset: what to write.
    path: the `.npz` file to create or replace.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = outputs.new_temp_file(folder, ".fastcifar-", ".npz.tmp")
  try:
    with open(tmp, "wb") as f:
      np.savez(f, train_images=dataset.train_images,
               train_labels=dataset.train_labels,
               test_images=dataset.test_images,
               test_labels=dataset.test_labels,
               class_names=np.array(dataset.class_names, dtype=str))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load_prepared(path: str) -> ImageDataset:
  """Reads a file written by `save_prepared`; refuses pickled content.

  Args:
    path: the `.npz` file.

  Returns:
    The `ImageDataset`, named after the file (`fastcifar-NAME.npz`).
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in _KEYS if k not in npz.files]
      if missing:
        raise UsageError(f"{path}: no '{missing[0]}' array; not written by "
                         "tools/prepare_data.py, prepare it again")
      arrays = [npz[k] for k in _KEYS]
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UsageError(f"{path}: unreadable ({e}); prepare it again with "
                     "tools/prepare_data.py") from e
  name = os.path.basename(path)[:-len(".npz")]
  name = name[len("fastcifar-"):] if name.startswith("fastcifar-") else name
  return make_dataset(name, *arrays, origin=path)
