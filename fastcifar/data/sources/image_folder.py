"""Image folders: `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`, or a tar of one.

Class ids are the sorted class folder names (for CIFAR-10 that is its own
label order, airplane=0 ... truck=9). Images of any size are decoded and
resized once (`fastcifar.data.sources.images`). A file that cannot be decoded
stops the load with its name: a silently skipped image would change the
dataset without anyone knowing.
"""

from __future__ import annotations

import posixpath
import re

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.data.sources import files
from fastcifar.data.sources.dataset import (ImageDataset, aligned_empty,
                                            available_memory, make_dataset)
from fastcifar.data.sources.images import decode_images

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
  name, class_names, counts, chunks = image_folder_chunks(
      path, prefix, tree, image_size, resize)
  images: dict[str, np.ndarray] = {}  # allocated once the size is known
  labels = {split: np.empty(count, np.int32) for split, count in counts.items()}
  for split, rows, decoded, chunk_labels in chunks:
    if not images:  # the first chunk fixes the size of all the others
      _check_fits(path, counts, decoded.shape[1:])
      images.update((s, aligned_empty((count,) + decoded.shape[1:], np.uint8))
                    for s, count in counts.items())
    images[split][rows] = decoded
    labels[split][rows] = chunk_labels
  arrays = [images["train"], labels["train"], images["test"], labels["test"]]
  return make_dataset(name, *arrays, class_names, origin=path)


def _check_fits(path: str, counts: dict[str, int],
                shape: tuple[int, ...]) -> None:
  """UsageError when the decoded images would not fit in memory.

  The encoded files say little: a JPEG decodes to several times its size.
  """
  count = sum(counts.values())
  needed, available = count * int(np.prod(shape)), available_memory()
  if available is not None and needed > available:
    raise UsageError(
        f"{path}: its {count} images take {needed / 1e9:.1f} GB decoded, "
        f"more than the {available / 1e9:.1f} GB of memory available; "
        "prepare them as shards, which training streams: tools/"
        f"prepare_data.py --format=shards --source={path} --data_dir=DIR")


def image_folder_chunks(path: str, prefix: str, tree,
                        image_size: tuple[int, int] | None = None,
                        resize: str = "crop"):
  """An image folder decoded a chunk at a time, as its files stream in.

  Only one chunk of encoded and decoded images is held at a time, so a
  folder larger than memory can be written out as shards.

  Args:
    path, prefix, tree, image_size, resize: as for `load_image_folder`.

  Returns:
    `(name, class_names, {split: count}, chunks)`: `chunks` yields
    `(split, rows, images, labels)`, rows being each image's place in its
    split (class by class, names sorted), in the order the files are
    stored.
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
  # Each file's place: its split, its row in that split's arrays (class by
  # class, names sorted), whatever order the archive stores them in, and
  # its label.
  names = {split: [n for c in class_names for n in sorted(tree[split][c])]
           for split in ("train", "test")}
  label_of = {n: i for split in names for i, c in enumerate(class_names)
              for n in tree[split][c]}
  places = {n: (split, row) for split in ("train", "test")
            for row, n in enumerate(names[split])}

  def decode(chunk: list[tuple[str, bytes]], first):
    chunk_names = [name for name, _ in chunk]
    decoded = decode_images([blob for _, blob in chunk],
                            np.zeros(len(chunk), np.int64), chunk_names, path,
                            image_size, resize, first)
    for split in names:
      mine = [i for i, name in enumerate(chunk_names)
              if places[name][0] == split]
      if mine:
        yield (split, np.array([places[chunk_names[i]][1] for i in mine]),
               decoded[mine],
               np.array([label_of[chunk_names[i]] for i in mine], np.int32))

  def chunks():
    first = None  # (name, size) of the first image decoded
    chunk: list[tuple[str, bytes]] = []
    for name, blob in files.iter_files(path, places):
      chunk.append((name, blob))
      if len(chunk) == _CHUNK:
        for piece in decode(chunk, first):
          first = first or (chunk[0][0], piece[2].shape[1:3])
          yield piece
        chunk = []
    if chunk:
      for piece in decode(chunk, first):
        first = first or (chunk[0][0], piece[2].shape[1:3])
        yield piece

  base = posixpath.basename(prefix) or posixpath.basename(
      path.rstrip("/")).split(".")[0]
  return (base or "images", class_names,
          {split: len(names[split]) for split in names}, chunks())
