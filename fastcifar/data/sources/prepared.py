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
# What `keras.datasets.cifar10.load_data()` returns, as `np.savez` names it;
# its labels are `(N, 1)` and there are no class names.
_KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")


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

  Keras's layout (`x_train`, `y_train`, `x_test`, `y_test`, as
  `keras.datasets.*.load_data()` returns them, saved with `np.savez`) is read
  too; its classes are named by their numbers unless the file also holds
  `class_names`.

  Args:
    path: the `.npz` file.

  Returns:
    The `ImageDataset`, named after the file (`fastcifar-NAME.npz`).
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      required = _KERAS_KEYS if _KERAS_KEYS[0] in npz.files else _KEYS
      missing = [k for k in required if k not in npz.files]
      if missing:
        raise UsageError(
            f"{path}: no '{missing[0]}' array; expected the arrays of "
            f"tools/prepare_data.py ({', '.join(_KEYS)}) or of keras.datasets "
            f"({', '.join(_KERAS_KEYS)}, saved with np.savez)")
      arrays = [npz[k] for k in required[:4]]
      class_names = (npz["class_names"] if "class_names" in npz.files
                     else _numbered(arrays[1], arrays[3]))
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UsageError(f"{path}: unreadable ({e}); prepare it again with "
                     "tools/prepare_data.py") from e
  name = os.path.basename(path)[:-len(".npz")]
  name = name[len("fastcifar-"):] if name.startswith("fastcifar-") else name
  return make_dataset(name, *arrays, class_names, origin=path)


def _numbered(*labels: np.ndarray) -> list[str]:
  """Class names "0", "1", ... up to the largest label of any split."""
  largest = max((int(np.max(y)) for y in labels if np.size(y)), default=-1)
  return [str(c) for c in range(largest + 1)]
