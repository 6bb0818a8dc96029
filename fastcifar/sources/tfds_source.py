"""CIFAR-10/100 through tensorflow-datasets (TFDS)."""

from __future__ import annotations

import os
import socket

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.sources.dataset import ImageDataset, make_dataset

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


def offline_options(name: str) -> str:
  return (f"point --data_dir at a CIFAR archive, extracted folder or image "
          f"folder, prepare one with tools/prepare_data.py, or train on "
          f"generated data with --dataset=synthetic")


def _check_network(name: str) -> None:
  try:
    socket.create_connection(DOWNLOAD_HOST, timeout=5).close()
  except OSError as e:
    raise UsageError(f"cannot download {name}: no network ({e}); "
                     + offline_options(name)) from None


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
        batch_size=-1, as_supervised=True, with_info=True)
  except (AssertionError, tfds.core.DatasetNotFoundError) as e:
    raise UsageError(
        f"{name} is not prepared in {data_dir}: pass --download to fetch it "
        f"with TFDS, or " + offline_options(name)) from e
  arrays = [np.asarray(a) for a in (*tfds.as_numpy(train),
                                    *tfds.as_numpy(test))]
  return make_dataset(name, *arrays, info.features["label"].names,
                      origin=f"TFDS {name} in {data_dir}")
