"""Data sources: every one ends in the same uint8 `ImageDataset`.

`load` picks the source: `--dataset=synthetic` generates data; otherwise
`--data_dir` may be a TFDS data dir, an official CIFAR archive (python or
binary, `.tar.gz` or extracted), an image folder (or a tar of one), or a
`.npz` written by `tools/prepare_data.py`, and its content decides the format.
Without `--data_dir`, the data is taken from TFDS's default data dir, else
from Keras's dataset cache, else the official archive is downloaded into that
cache once (`fastcifar.sources.download`).
"""

from __future__ import annotations

import os

from fastcifar.errors import UsageError
from fastcifar.sources import download as downloads
from fastcifar.sources import files
from fastcifar.sources.cifar_archives import find_layout, load_archive
from fastcifar.sources.dataset import IMAGE_SHAPE, ImageDataset, make_dataset
from fastcifar.sources.image_folder import find_image_folder, load_image_folder
from fastcifar.sources.prepared import load_prepared, prepared_path, save_prepared
from fastcifar.sources.synthetic import load_synthetic
from fastcifar.sources.tfds_source import (TFDS_NAMES, default_tfds_dir,
                                           is_tfds_dir, load_tfds)

DATASETS = TFDS_NAMES + ("synthetic",)
OFFICIAL_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
}
EXPECTED = ("a TFDS data dir, a CIFAR archive (cifar-10-python.tar.gz, "
            "cifar-10-binary.tar.gz or their extracted folders), an image "
            "folder ROOT/{train,test}/<class>/*.png|jpg (or a .tar.gz of one), "
            "or a .npz from tools/prepare_data.py")

__all__ = [
    "DATASETS", "IMAGE_SHAPE", "ImageDataset", "UsageError", "load",
    "load_path", "load_synthetic", "make_dataset", "prepared_path",
    "save_prepared",
]


def load(dataset: str = "cifar10", data_dir: str | None = None, *,
         download: bool = True, mirror: str | None = None,
         seed: int = 0) -> ImageDataset:
  """Loads a dataset from wherever it is, as `keras.datasets` would.

  Args:
    dataset: "cifar10", "cifar100" or "synthetic".
    data_dir: a path `load_path` understands, or None: TFDS's default data
      dir, then Keras's dataset cache, then a download into that cache.
    download: with data_dir None, download the official archive when it is
      nowhere on disk; False never touches the network.
    mirror: a base URL serving the official archives (see
      `download.archive_url`); None: $FASTCIFAR_MIRROR or the CIFAR page.
    seed: the seed of the synthetic data.

  Returns:
    The `ImageDataset`.

  Raises:
    UsageError: the data is missing or unreadable; the message says what to do.
  """
  if dataset == "synthetic":
    if data_dir is not None:
      raise UsageError("--data_dir is not used by --dataset=synthetic; drop "
                       "one of the two")
    return load_synthetic(seed=seed)
  if dataset not in TFDS_NAMES:
    raise UsageError(f"unknown dataset {dataset!r}; choose one of "
                     f"{', '.join(DATASETS)}")
  if data_dir is not None:
    return load_path(data_dir, dataset)
  default = default_tfds_dir()
  if os.path.isfile(prepared_path(default, dataset)):
    return load_prepared(prepared_path(default, dataset))
  if is_tfds_dir(default, dataset):
    return load_tfds(dataset, default, download=False)
  found = downloads.cached(dataset)
  if found is None:
    if not download:
      raise UsageError(
          f"{dataset} is not on disk and --nodownload forbids fetching it; "
          + downloads.offline_help(dataset))
    found = downloads.download(dataset, mirror)
  return load_path(found, dataset)


def load_path(path: str, dataset: str = "cifar10", *,
              download: bool = False) -> ImageDataset:
  """Loads whatever dataset `path` holds, detecting its format.

  Args:
    path: see the module docstring for what it may be.
    dataset: which dataset to take from a TFDS dir or official CIFAR
      archives: another dataset's archive is refused, not loaded in its
      place. Image folders and `.npz` files carry no such name.
    download: let TFDS download into `path` when it holds nothing else.

  Returns:
    The `ImageDataset`.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise UsageError(f"--data_dir {path} does not exist; expected {EXPECTED}")
  if os.path.isfile(path) and path.endswith(".npz"):
    return load_prepared(path)
  if os.path.isdir(path):
    if os.path.isfile(prepared_path(path, dataset)):
      return load_prepared(prepared_path(path, dataset))
    if is_tfds_dir(path, dataset):
      return load_tfds(dataset, path, download=False)
    for archive in OFFICIAL_ARCHIVES.get(dataset, ()):
      if os.path.isfile(os.path.join(path, archive)):
        return load_path(os.path.join(path, archive), dataset)
  elif not files.is_tar_path(path):
    raise UsageError(f"--data_dir {path} is not a folder, a tar archive or a "
                     f".npz; expected {EXPECTED}")
  names = files.list_files(path)
  layout = find_layout(names, dataset)
  if layout:
    return load_archive(path, *layout)
  other = find_layout(names)
  if other:
    layout, folder = other
    _refuse_other_dataset(path, layout.name, folder or layout.marker, dataset)
  folder = find_image_folder(names)
  if folder:
    return load_image_folder(path, *folder)
  for other, archives in OFFICIAL_ARCHIVES.items():
    for archive in archives:
      if os.path.isfile(os.path.join(path, archive)):
        _refuse_other_dataset(path, other, archive, dataset)
  if download and os.path.isdir(path):
    return load_tfds(dataset, path, download=True)
  what = "is empty" if not names else "holds no dataset I recognise"
  raise UsageError(f"--data_dir {path} {what}; expected {EXPECTED}")


def _refuse_other_dataset(path: str, holds: str, where: str,
                          dataset: str) -> None:
  """Raises UsageError: `path` holds official archives of another dataset."""
  raise UsageError(f"--data_dir {path} holds {holds} ({where}), not "
                   f"{dataset}; pass --dataset={holds}, or a --data_dir "
                   f"that holds {dataset}")
