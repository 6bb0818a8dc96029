"""The in-memory form that every data source ends in."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from fastcifar.errors import UsageError

CIFAR_SHAPE = (32, 32, 3)
# TensorFlow's CPU tensors need buffers aligned to EIGEN_MAX_ALIGN_BYTES (64
# with AVX-512): only then can it use a numpy array's memory without a copy.
ALIGNMENT = 64


def available_memory() -> int | None:
  """MemAvailable of /proc/meminfo in bytes; None where there is none."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
  """An uninitialized C-contiguous array whose data starts 64-byte aligned.

  numpy's own large arrays start 16 bytes past a page boundary; TensorFlow
  copies (or, through DLPack, aborts on) such a buffer. Sources and input
  pipelines allocate their big arrays here so the images exist once.

  Args:
    shape: the array's shape.
    dtype: its numpy dtype.

  Returns:
    The array (a view into a slightly larger uint8 buffer).
  """
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
  start = -buffer.ctypes.data % ALIGNMENT
  return buffer[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
  """Whether TensorFlow can use the array's memory as it is."""
  return (array.flags.c_contiguous and array.flags.writeable
          and array.ctypes.data % ALIGNMENT == 0)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """uint8 RGB images `(N, H, W, 3)`, int32 labels in `[0, num_classes)`.

  Both splits have one image shape, `image_shape`, which models are built
  for. `test_split` says where the test examples came from when that is not
  the source's own test split (e.g. "validation", or part of train held out).
  `loaded_with` holds the settings `fastcifar.sources.load` read it with
  (dataset, data_dir, resize, seed), None for arrays from elsewhere.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  test_split: str = "test"
  loaded_with: Mapping[str, Any] | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """`(height, width, channels)` of every image."""
    return tuple(int(s) for s in self.train_images.shape[1:])


def make_dataset(name: str, train_images, train_labels, test_images,
                 test_labels, class_names, origin: str,
                 test_split: str = "test") -> ImageDataset:
  """Checks arrays from a source and wraps them in an `ImageDataset`.

  Args:
    name: dataset name, e.g. "cifar10".
    train_images, test_images: uint8 arrays `(N, H, W, 3)`, one shape.
    train_labels, test_labels: integer arrays `(N,)`.
    class_names: one name per class; label i names class_names[i].
    origin: where the data came from, for error messages.
    test_split: see `ImageDataset`.

  Returns:
    The validated `ImageDataset`, labels as int32.

  Raises:
    UsageError: the arrays are not RGB images of one shape, or labels are out
      of range.
  """
  class_names = tuple(str(c) for c in class_names)
  if not class_names:
    raise UsageError(f"{origin}: no classes found; expected at least one class")
  splits = {}
  for split, images, labels in (("train", train_images, train_labels),
                                ("test", test_images, test_labels)):
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim == 4 and len(images) == 0:
      raise UsageError(f"{origin}: the {split} split is empty")
    if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:]) < 1:
      raise UsageError(
          f"{origin}: {split} images have shape {images.shape[1:]}, expected "
          "(height, width, 3) RGB; convert them first")
    if split == "test" and images.shape[1:] != splits["train"][0].shape[1:]:
      raise UsageError(
          f"{origin}: test images are {images.shape[1:]} but train images "
          f"{splits['train'][0].shape[1:]}; pass --image_size=H[,W] to "
          "resize both")
    if images.dtype != np.uint8:
      raise UsageError(f"{origin}: {split} images are {images.dtype}, "
                       "expected uint8 pixels 0-255")
    if len(images) != len(labels):
      raise UsageError(f"{origin}: {len(images)} {split} images but "
                       f"{len(labels)} labels; the file is damaged")
    if labels.min() < 0 or labels.max() >= len(class_names):
      raise UsageError(
          f"{origin}: {split} labels range {labels.min()}..{labels.max()} but "
          f"there are {len(class_names)} classes; the file is damaged or not "
          "CIFAR")
    splits[split] = (images, labels.astype(np.int32))
  return ImageDataset(name, *splits["train"], *splits["test"], class_names,
                      test_split)


def data_record(dataset: ImageDataset) -> dict[str, Any]:
  """What a run records of its data, so that what follows needs no data flag.

  Args:
    dataset: the data a model was trained on.

  Returns:
    JSON-ready: `name`, `class_names`, `image_size` `[H, W]`, `test_split`,
    and `dataset`, `data_dir`, `resize`, `seed` as `sources.load` was
    called (None for data it did not load).
  """
  loaded = dataset.loaded_with or {}
  return {"name": dataset.name, "class_names": list(dataset.class_names),
          "image_size": list(dataset.image_shape[:2]),
          "test_split": dataset.test_split,
          **{key: loaded.get(key)
             for key in ("dataset", "data_dir", "resize", "seed")}}
