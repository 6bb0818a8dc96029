"""CIFAR-10/100 through tensorflow-datasets (TFDS)."""

from __future__ import annotations

import os
import socket

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.sources.dataset import IMAGE_SHAPE, ImageDataset, make_dataset

TFDS_NAMES = ("cifar10", "cifar100")
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)  # where TFDS fetches CIFAR from


def default_tfds_dir() -> str:
  """TFDS's own convention: `$TFDS_DATA_DIR`, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def is_tfds_dir(path: str, name: str) -> bool:
  """Whether `path` holds a prepared TFDS `name` (any version)."""
  root = os.path.join(path, name)
  if not os.path.isdir(root):
    return False
  for dirpath, _, filenames in os.walk(root):
    if "dataset_info.json" in filenames:
      return True
  return False


def offline_options() -> str:
  """What to do without a network: the options every offline error lists."""
  return ("point --data_dir at a CIFAR archive, extracted folder or image "
          "folder, prepare one with tools/prepare_data.py, or train on "
          "generated data with --dataset=synthetic")


def _check_network(name: str) -> None:
  try:
    socket.create_connection(DOWNLOAD_HOST, timeout=5).close()
  except OSError as e:
    raise UsageError(f"cannot download {name}: no network ({e}); "
                     + offline_options()) from None


def load_tfds(name: str, data_dir: str | None, download: bool) -> ImageDataset:
  """Loads a TFDS CIFAR dataset as arrays, downloading only when asked.

  Args:
    name: "cifar10" or "cifar100".
    data_dir: the TFDS data dir; None for TFDS's default.
    download: whether TFDS may download and prepare the data.

  Returns:
    The `ImageDataset`.

  Raises:
    UsageError: the data is not prepared and no download was asked for, or
      the network is unreachable.
  """
  data_dir = data_dir or default_tfds_dir()
  if download:
    _check_network(name)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    (train, test), info = tfds.load(
        name, split=["train", "test"], data_dir=data_dir, download=download,
        as_supervised=True, with_info=True)
  except (AssertionError, tfds.core.DatasetNotFoundError) as e:
    raise UsageError(
        f"{name} is not prepared in {data_dir}: pass --download to fetch it "
        f"with TFDS, or " + offline_options()) from e
  arrays = [*_to_arrays(train), *_to_arrays(test)]
  return make_dataset(name, *arrays, info.features["label"].names,
                      origin=f"TFDS {name} in {data_dir}")


def _to_arrays(split) -> tuple[np.ndarray, np.ndarray]:
  """All `(image, label)` pairs of a split as two numpy arrays.

  Fixed-size batches rather than `batch_size=-1`: TFDS turns -1 into the
  split's recorded size, or sys.maxsize when the metadata has none, and
  TensorFlow 2.21 aborts the whole process on a batch that large.
  """
  images, labels = [], []
  for image, label in split.batch(10_000).as_numpy_iterator():
    images.append(image)
    labels.append(label)
  if not images:  # make_dataset reports the empty split
    return np.zeros((0,) + IMAGE_SHAPE, np.uint8), np.zeros((0,), np.int64)
  return np.concatenate(images), np.concatenate(labels)
