"""Image folders: `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`, or a tar of one.

Class ids are the sorted class folder names (for CIFAR-10 that is its own
label order, airplane=0 ... truck=9). Images of any size are decoded and
resized once (`fastcifar.sources.images`). A file that cannot be decoded
stops the load with its name: a silently skipped image would change the
dataset without anyone knowing.
"""

from __future__ import annotations

import posixpath
import re

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.sources import files
from fastcifar.sources.dataset import ImageDataset, make_dataset
from fastcifar.sources.images import decode_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SPLIT_RE = re.compile(r"^(?:(.*)/)?(train|test)/([^/]+)/([^/]*)$")


def find_image_folder(names: list[str]):
  """Finds `{train,test}/<class>/<image>` among the file names of a tree.

  Args:
    names: relative file names, as `files.list_files` returns them.

  Returns:
    `(prefix, {split: {class: [names]}})` or None when there is no such tree.
  """
  trees: dict[str, dict[str, dict[str, list[str]]]] = {}
  for name in names:
    match = _SPLIT_RE.match(name)
    if not match:
      continue
    prefix, split, cls, base = match.groups()
    tree = trees.setdefault(prefix or "", {"train": {}, "test": {}})
    images = tree[split].setdefault(cls, [])  # a class folder, maybe empty
    if base and base.lower().endswith(IMAGE_SUFFIXES):
      images.append(name)
  for prefix, tree in sorted(trees.items()):
    if all(any(tree[split].values()) for split in ("train", "test")):
      return prefix, tree
  return None


def load_image_folder(path: str, prefix: str, tree,
                      image_size: tuple[int, int] | None = None,
                      resize: str = "crop") -> ImageDataset:
  """Reads and decodes an image folder found by `find_image_folder`.

  Args:
    path: the folder or tar archive.
    prefix, tree: as `find_image_folder` returned them.
    image_size: `(height, width)` to resize every image to; None: all must
      have one size (the train split's first image's).
    resize: how, one of `images.RESIZE_METHODS`.

  Returns:
    The `ImageDataset`, named after the folder.
  """
  class_names = sorted(tree["train"])
  for split in ("train", "test"):
    empty = sorted(c for c, images in tree[split].items() if not images)
    if empty:
      raise UsageError(f"{path}: the class folder {split}/{empty[0]} holds no "
                       "PNG or JPEG images; add its images or remove it")
  if sorted(tree["test"]) != class_names:
    extra = set(tree["test"]) ^ set(class_names)
    raise UsageError(f"{path}: train and test have different class folders "
                     f"({sorted(extra)[0]!r} is in only one); they must match")
  wanted = [n for split in ("train", "test") for c in class_names
            for n in tree[split][c]]
  contents = files.read_files(path, wanted)
  names = {split: [n for c in class_names for n in sorted(tree[split][c])]
           for split in ("train", "test")}
  # Both splits in one pass: one size check (or resize) for every image.
  everything = names["train"] + names["test"]
  labels = np.concatenate([np.full(len(tree[split][c]), i, np.int32)
                           for split in ("train", "test")
                           for i, c in enumerate(class_names)])
  images = decode_images([contents.pop(n) for n in everything], labels,
                         everything, path, image_size, resize)
  train = len(names["train"])
  arrays = [images[:train], labels[:train], images[train:], labels[train:]]
  base = posixpath.basename(prefix) or posixpath.basename(
      path.rstrip("/")).split(".")[0]
  return make_dataset(base or "images", *arrays, class_names, origin=path)
