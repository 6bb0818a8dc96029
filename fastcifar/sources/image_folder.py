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
from fastcifar.sources.dataset import (ImageDataset, aligned_empty,
                                       make_dataset)
from fastcifar.sources.images import decode_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Files decoded per tf.data run: big enough to keep both cores busy, small
# enough that the encoded bytes held at once stay a few MB.
_CHUNK = 4096
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
      have one size, the first image's (the train split's first for a
      folder; for a tar, the first one the archive stores).
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
  # Each file's place: its split, and its row in that split's arrays (class
  # by class, names sorted), whatever order the archive stores them in.
  names = {split: [n for c in class_names for n in sorted(tree[split][c])]
           for split in ("train", "test")}
  places = {n: (split, row) for split in ("train", "test")
            for row, n in enumerate(names[split])}
  images: dict[str, np.ndarray] = {}  # allocated once the size is known
  first = None  # (name, size) of the first image decoded

  def decode(chunk: list[tuple[str, bytes]]) -> None:
    nonlocal first
    if not chunk:
      return
    chunk_names = [name for name, _ in chunk]
    decoded = decode_images([blob for _, blob in chunk],
                            np.zeros(len(chunk), np.int64), chunk_names, path,
                            image_size, resize, first)
    if first is None:  # the first chunk fixes the size of all the others
      first = (chunk_names[0], decoded.shape[1:3])
      images.update((split, aligned_empty((len(names[split]),) +
                                          decoded.shape[1:], np.uint8))
                    for split in names)
    for split in names:
      mine = [i for i, name in enumerate(chunk_names)
              if places[name][0] == split]
      rows = [places[chunk_names[i]][1] for i in mine]
      images[split][rows] = decoded[mine]

  # Decoded a chunk at a time as the files stream in: only one chunk of
  # encoded bytes is ever held, beside the decoded arrays themselves.
  chunk: list[tuple[str, bytes]] = []
  for name, blob in files.iter_files(path, places):
    chunk.append((name, blob))
    if len(chunk) == _CHUNK:
      decode(chunk)
      chunk = []
  decode(chunk)
  labels = {split: np.concatenate([np.full(len(tree[split][c]), i, np.int32)
                                   for i, c in enumerate(class_names)])
            for split in names}
  arrays = [images["train"], labels["train"], images["test"], labels["test"]]
  base = posixpath.basename(prefix) or posixpath.basename(
      path.rstrip("/")).split(".")[0]
  return make_dataset(base or "images", *arrays, class_names, origin=path)
