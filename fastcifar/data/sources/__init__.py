"""Data sources: every one ends in the same uint8 `ImageDataset`.

`load` picks the source: `--dataset=synthetic` generates data,
`--dataset=tfds:NAME` reads any TFDS image classification dataset from
TFDS's data dir (or `--data_dir`); otherwise
`--data_dir` may be a TFDS data dir, an official CIFAR archive (python or
binary, `.tar.gz` or extracted), an image folder (or a tar of one), or a
`.npz` written by `tools/prepare_data.py`, and its content decides the format.
Without `--data_dir`, the data is taken from TFDS's default data dir, else
from Keras's dataset cache, else the official archive is downloaded into that
cache once (`fastcifar.data.sources.download`). Whatever the source, images come
at one size: their own, or `image_size` (`fastcifar.data.sources.images`).
"""

from __future__ import annotations

import dataclasses
import os

from fastcifar.errors import UsageError
from fastcifar.data.sources import download as downloads
from fastcifar.data.sources import files
from fastcifar.data.sources.cifar_archives import find_layout, load_archive
from fastcifar.data.sources.dataset import (CIFAR_SHAPE, ImageDataset,
                                            available_memory, data_record,
                                            make_dataset)
from fastcifar.data.sources.image_folder import (find_image_folder,
                                            image_folder_chunks,
                                            load_image_folder)
from fastcifar.data.sources.images import (RESIZE_METHODS, check_resize,
                                      parse_image_size, resize_array)
from fastcifar.data.sources.prepared import (load_prepared, prepared_path,
                                             save_prepared)
from fastcifar.data.sources.shards import (ShardedImages, array_chunks,
                                      array_counts,
                                      decoded_train_bytes, is_shards_dir,
                                      load_shards, shards_path, write_shards)
from fastcifar.data.sources.synthetic import load_synthetic
from fastcifar.data.sources.tfds_source import (TFDS_NAMES, TFDS_PREFIX,
                                           default_tfds_dir, is_tfds_dir,
                                           load_tfds, tfds_name)

DATASETS = TFDS_NAMES + ("synthetic",)  # and any TFDS_PREFIX + NAME
_OFFICIAL_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
}
EXPECTED = ("a TFDS data dir, a CIFAR archive (cifar-10-python.tar.gz, "
            "cifar-10-binary.tar.gz or their extracted folders), an image "
            "folder ROOT/{train,test}/<class>/*.png|jpg (or a .tar.gz of one), "
            "or a .npz or shard folder from tools/prepare_data.py")
CACHES = ("auto", "memory", "disk")
# --cache=auto streams when the decoded training set would take more than
# this share of the memory available: the rest is for TensorFlow, the model
# and the test split.
AUTO_MEMORY_SHARE = 0.5

# The public names: what a user of the package loads data with. The other
# names here are the sources' own, or the repository's tools'.
__all__ = [
    "ImageDataset", "ShardedImages", "make_dataset", "data_record",
    "load", "load_path", "load_chunks", "load_synthetic", "save_prepared",
    "write_shards", "resize_dataset", "parse_image_size", "check_dataset",
    "CACHES", "CIFAR_SHAPE", "DATASETS", "RESIZE_METHODS", "TFDS_NAMES",
    "TFDS_PREFIX",
]


def check_dataset(dataset: str) -> None:
  """UsageError unless `dataset` is one of `DATASETS` or tfds:NAME."""
  if dataset not in DATASETS and tfds_name(dataset) is None:
    raise UsageError(f"unknown dataset {dataset!r}; choose one of "
                     f"{', '.join(DATASETS)}, or tfds:NAME for a TFDS "
                     "dataset (e.g. tfds:svhn_cropped)")


def _check_cache(cache: str) -> None:
  """UsageError unless `cache` is one of `CACHES`."""
  if cache not in CACHES:
    raise UsageError(f"--cache={cache}: choose one of {', '.join(CACHES)}")


def streams(folder: str, cache: str) -> bool:
  """Whether a shard folder's training set is streamed under `cache`.

  auto streams when its decoded images would take more than
  `AUTO_MEMORY_SHARE` of the memory available now.
  """
  if cache != "auto":
    return cache == "disk"
  available = available_memory()
  return (available is not None
          and decoded_train_bytes(folder) > AUTO_MEMORY_SHARE * available)


def _open_shards(folder: str, image_size: tuple[int, int] | None,
                 cache: str, shuffle_buffer: int) -> ImageDataset:
  """A shard folder, streamed or in memory as `cache` says."""
  data = load_shards(folder, streams(folder, cache), shuffle_buffer)
  if image_size is not None and tuple(image_size) != data.image_shape[:2]:
    raise UsageError(
        f"{folder} holds {data.image_shape[0]}x{data.image_shape[1]} images, "
        f"not --image_size={image_size[0]},{image_size[1]}; drop "
        "--image_size, or prepare the shards again at that size")
  return data


def resize_dataset(dataset: ImageDataset, image_size: tuple[int, int] | None,
                   resize: str = "crop") -> ImageDataset:
  """`dataset` with both splits at `image_size` (None: as it is)."""
  resized = [resize_array(a, image_size, resize)
             for a in (dataset.train_images, dataset.test_images)]
  if all(r is a for r, a in zip(resized, (dataset.train_images,
                                          dataset.test_images))):
    return dataset
  return dataclasses.replace(dataset, train_images=resized[0],
                             test_images=resized[1])


def load(dataset: str = "cifar10", data_dir: str | None = None, *,
         download: bool = True, mirror: str | None = None,
         seed: int = 0, image_size: tuple[int, int] | None = None,
         resize: str = "crop", cache: str = "memory",
         shuffle_buffer: int = 10_000) -> ImageDataset:
  """Loads a dataset from wherever it is, as `keras.datasets` would.

  Args:
    dataset: "cifar10", "cifar100", "synthetic" or "tfds:NAME" (any TFDS
      image classification dataset, from data_dir or TFDS's default).
    data_dir: a path `load_path` understands, or None: TFDS's default data
      dir, then Keras's dataset cache, then a download into that cache.
    download: with data_dir None, download the official archive when it is
      nowhere on disk; False never touches the network.
    mirror: a base URL serving the official archives (see
      `download.archive_url`); None: $FASTCIFAR_MIRROR or the CIFAR page.
    seed: the seed of the synthetic data.
    image_size: `(height, width)` to resize every image to; None: the
      data's own size, which must then be the same for every image.
    resize: how to resize, one of `RESIZE_METHODS` (see
      `fastcifar.data.sources.images`).
    cache: for a shard folder (`tools/prepare_data.py --format=shards`):
      "memory" reads the training images into memory, "disk" leaves them
      there to be streamed (`ShardedImages`), "auto" streams when they would
      not fit (`streams`). Other sources are always in memory; "disk" asks
      for a shard folder.
    shuffle_buffer: examples in the streamed training set's shuffle buffer.

  Returns:
    The `ImageDataset`.

  Raises:
    UsageError: the data is missing or unreadable; the message says what to do.
  """
  check_dataset(dataset)
  check_resize(resize)  # before any data is read
  _check_cache(cache)
  if shuffle_buffer < 1:
    raise UsageError(f"--shuffle_buffer={shuffle_buffer} must be at least 1")
  found = _load(dataset, data_dir, download, mirror, seed, image_size, resize,
                cache, shuffle_buffer)
  if cache == "disk" and not isinstance(found.train_images, ShardedImages):
    raise UsageError(
        "--cache=disk streams a shard folder; write one with tools/"
        "prepare_data.py --format=shards --source=... --data_dir=DIR and "
        "train with --data_dir=DIR/fastcifar-NAME")
  # What a run records (`data_record`), so later commands load the same.
  return dataclasses.replace(found, loaded_with=dict(
      dataset=dataset, resize=resize, seed=seed,
      data_dir=data_dir and os.path.abspath(os.path.expanduser(data_dir))))


def _load(dataset, data_dir, download, mirror, seed, image_size, resize,
          cache, shuffle_buffer) -> ImageDataset:
  """`load` after its checks."""
  caching = dict(cache=cache, shuffle_buffer=shuffle_buffer)
  if dataset == "synthetic":
    if data_dir is not None:
      raise UsageError("--data_dir is not used by --dataset=synthetic; drop "
                       "one of the two")
    return resize_dataset(load_synthetic(seed=seed), image_size, resize)
  name = tfds_name(dataset)
  if name is not None:
    return load_tfds(name, data_dir and os.path.expanduser(data_dir),
                     download=download, image_size=image_size, resize=resize)
  if data_dir is not None:
    return load_path(data_dir, dataset, image_size=image_size, resize=resize,
                     **caching)
  default = default_tfds_dir()
  if os.path.isfile(prepared_path(default, dataset)):
    return resize_dataset(load_prepared(prepared_path(default, dataset)),
                          image_size, resize)
  if is_tfds_dir(default, dataset):
    return load_tfds(dataset, default, download=False, image_size=image_size,
                     resize=resize)
  found = downloads.cached(dataset)
  if found is None:
    if not download:
      raise UsageError(
          f"{dataset} is not on disk and --nodownload forbids fetching it; "
          + downloads.offline_help(dataset))
    found = downloads.download(dataset, mirror)
  return load_path(found, dataset, image_size=image_size, resize=resize)


def load_path(path: str, dataset: str = "cifar10", *,
              download: bool = False, image_size: tuple[int, int] | None = None,
              resize: str = "crop", cache: str = "memory",
              shuffle_buffer: int = 10_000) -> ImageDataset:
  """Loads whatever dataset `path` holds, detecting its format.

  Args:
    path: see the module docstring for what it may be.
    dataset: which dataset to take from a TFDS dir or official CIFAR
      archives: another dataset's archive is refused, not loaded in its
      place. Image folders and `.npz` files carry no such name.
    download: let TFDS download into `path` when it holds nothing else.
    image_size, resize, cache, shuffle_buffer: as for `load`.

  Returns:
    The `ImageDataset`.
  """
  sized = dict(image_size=image_size, resize=resize)
  path = os.path.expanduser(path)
  for folder in (path, shards_path(path, dataset)):
    if os.path.isdir(folder) and is_shards_dir(folder):
      return _open_shards(folder, image_size, cache, shuffle_buffer)
  variant = _prepared_variant(path, dataset)
  if variant:
    return load_path(variant, dataset, image_size=image_size, resize=resize,
                     cache=cache, shuffle_buffer=shuffle_buffer)
  return resize_dataset(_load_path(path, dataset, download, sized),
                        image_size, resize)


def _prepared_variant(path: str, dataset: str) -> str | None:
  """What `tools/prepare_data.py --name=DATASET-...` wrote into folder `path`.

  `--dataset=cifar10 --data_dir=DIR` takes DIR/fastcifar-cifar10(.npz) and,
  when DIR holds no other cifar10 (no TFDS copy, no official archive), what
  was prepared under a longer name, e.g. `--name=cifar10-64`: the one there,
  or a refusal listing them.
  """
  if (not os.path.isdir(path) or os.path.isfile(prepared_path(path, dataset))
      or is_tfds_dir(path, dataset)
      or any(os.path.isfile(os.path.join(path, archive))
             for archive in _OFFICIAL_ARCHIVES.get(dataset, ()))):
    return None
  prefix = os.path.basename(shards_path(path, dataset)) + "-"
  found = sorted(os.path.join(path, entry) for entry in os.listdir(path)
                 if entry.startswith(prefix) and (
                     entry.endswith(".npz") or
                     is_shards_dir(os.path.join(path, entry))))
  if len(found) > 1:
    raise UsageError(
        f"--data_dir {path} holds {len(found)} prepared copies of {dataset} "
        f"({', '.join(os.path.basename(f) for f in found)}); pass the one to "
        f"use, e.g. --data_dir={found[0]}")
  return found[0] if found else None


def _load_path(path: str, dataset: str, download: bool,
               sized: dict) -> ImageDataset:
  """`load_path`; sources that decode images resize them as they do."""
  if not os.path.exists(path):
    raise UsageError(f"--data_dir {path} does not exist; expected {EXPECTED}")
  if os.path.isfile(path) and path.endswith(".npz"):
    return load_prepared(path)
  if os.path.isdir(path):
    if os.path.isfile(prepared_path(path, dataset)):
      return load_prepared(prepared_path(path, dataset))
    if is_tfds_dir(path, dataset):
      return load_tfds(dataset, path, download=False, **sized)
    for archive in _OFFICIAL_ARCHIVES.get(dataset, ()):
      if os.path.isfile(os.path.join(path, archive)):
        return _load_path(os.path.join(path, archive), dataset, download,
                          sized)
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
    return load_image_folder(path, *folder, **sized)
  for other, archives in _OFFICIAL_ARCHIVES.items():
    for archive in archives:
      if os.path.isfile(os.path.join(path, archive)):
        _refuse_other_dataset(path, other, archive, dataset)
  if download and os.path.isdir(path):
    return load_tfds(dataset, path, download=True, **sized)
  what = "is empty" if not names else "holds no dataset I recognise"
  raise UsageError(f"--data_dir {path} {what}; expected {EXPECTED}")


def load_chunks(path: str, dataset: str = "cifar10", *,
                image_size: tuple[int, int] | None = None,
                resize: str = "crop"):
  """What `path` holds, a chunk at a time, for `write_shards`.

  An image folder (or a tar of one) is decoded as its files stream in, so
  one larger than memory can be written as shards; other sources are
  loaded whole (`load_path`) and then cut into chunks.

  Args:
    path, dataset, image_size, resize: as for `load_path`.

  Returns:
    `(name, class_names, test_split, {split: examples}, chunks)`, as
    `write_shards` takes them.
  """
  expanded = os.path.expanduser(path)
  folder = None
  if (files.is_tar_path(expanded) and os.path.isfile(expanded)) or (
      os.path.isdir(expanded) and not is_shards_dir(expanded)
      and not os.path.isdir(shards_path(expanded, dataset))
      and not os.path.isfile(prepared_path(expanded, dataset))
      and not is_tfds_dir(expanded, dataset)
      and not any(os.path.isfile(os.path.join(expanded, a))
                  for archives in _OFFICIAL_ARCHIVES.values()
                  for a in archives)):
    names = files.list_files(expanded)
    if not find_layout(names):
      folder = find_image_folder(names)
  if folder is None:
    data = load_path(path, dataset, image_size=image_size, resize=resize)
    return (data.name, data.class_names, data.test_split,
            array_counts(data), array_chunks(data))
  check_resize(resize)
  name, class_names, counts, chunks = image_folder_chunks(
      expanded, *folder, image_size=image_size, resize=resize)
  return name, class_names, "test", counts, chunks


def _refuse_other_dataset(path: str, holds: str, where: str,
                          dataset: str) -> None:
  """Raises UsageError: `path` holds official archives of another dataset."""
  raise UsageError(f"--data_dir {path} holds {holds} ({where}), not "
                   f"{dataset}; pass --dataset={holds}, or a --data_dir "
                   f"that holds {dataset}")
