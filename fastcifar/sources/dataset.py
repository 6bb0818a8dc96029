"""The in-memory form that every data source ends in."""

from __future__ import annotations

import dataclasses

import numpy as np

from fastcifar.errors import UsageError

IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """uint8 images `(N, 32, 32, 3)` and int32 labels in `[0, num_classes)`."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def make_dataset(name: str, train_images, train_labels, test_images,
                 test_labels, class_names, origin: str) -> ImageDataset:
  """Checks arrays from a source and wraps them in an `ImageDataset`.

  Args:
    name: dataset name, e.g. "cifar10".
    train_images, test_images: uint8 arrays `(N, 32, 32, 3)`.
    train_labels, test_labels: integer arrays `(N,)`.
    class_names: one name per class; label i names class_names[i].
    origin: where the data came from, for error messages.

  Returns:
    The validated `ImageDataset`, labels as int32.

  Raises:
    UsageError: the arrays are not CIFAR-shaped or labels are out of range.
  """
  class_names = tuple(str(c) for c in class_names)
  if not class_names:
    raise UsageError(f"{origin}: no classes found; expected at least one class")
  splits = {}
  for split, images, labels in (("train", train_images, train_labels),
                                ("test", test_images, test_labels)):
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
      raise UsageError(
          f"{origin}: {split} images have shape {images.shape[1:]}, expected "
          f"{IMAGE_SHAPE} (32x32 RGB); resize or convert them first")
    if images.dtype != np.uint8:
      raise UsageError(f"{origin}: {split} images are {images.dtype}, "
                       "expected uint8 pixels 0-255")
    if len(images) != len(labels):
      raise UsageError(f"{origin}: {len(images)} {split} images but "
                       f"{len(labels)} labels; the file is damaged")
    if len(images) == 0:
      raise UsageError(f"{origin}: the {split} split is empty")
    if labels.min() < 0 or labels.max() >= len(class_names):
      raise UsageError(
          f"{origin}: {split} labels range {labels.min()}..{labels.max()} but "
          f"there are {len(class_names)} classes; the file is damaged or not "
          "CIFAR")
    splits[split] = (images, labels.astype(np.int32))
  return ImageDataset(name, *splits["train"], *splits["test"], class_names)
