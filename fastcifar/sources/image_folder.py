"""Image folders: `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`, or a tar of one.

Class ids are the sorted class folder names (for CIFAR-10 that is its own
label order, airplane=0 ... truck=9). Images must be 32x32 RGB. A file that
cannot be decoded stops the load with its name: a silently skipped image
would change the dataset without anyone knowing.
"""

from __future__ import annotations

import posixpath
import re

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.sources import files
from fastcifar.sources.dataset import IMAGE_SHAPE, ImageDataset, make_dataset

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


def _decode_all(blobs: list[bytes], names: list[str], origin: str) -> np.ndarray:
  """Decodes images in parallel with tf.data; fails naming the bad file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def decode(blob):
    image = tf.io.decode_image(blob, channels=0, expand_animations=False)
    shape = tf.shape(image)
    ok = tf.reduce_all(tf.equal(shape, IMAGE_SHAPE))
    # A wrong-shaped image becomes zeros plus a flag, so batching still works
    # and the flag says which file to name.
    image = tf.cond(ok, lambda: tf.reshape(image, IMAGE_SHAPE),
                    lambda: tf.zeros(IMAGE_SHAPE, tf.uint8))
    return image, ok, shape

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(blobs, tf.string))
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(4096)
  images, start = np.empty((len(blobs),) + IMAGE_SHAPE, np.uint8), 0
  iterator = iter(ds)
  while True:
    try:
      batch, ok, shapes = next(iterator)
    except StopIteration:
      break
    except tf.errors.InvalidArgumentError:
      bad = _first_undecodable(blobs[start:start + 4096])
      raise UsageError(
          f"{origin}: {names[start + bad]} is not a readable PNG or JPEG; "
          "delete or replace it") from None
    bad = np.flatnonzero(~ok.numpy())
    if bad.size:
      i = int(bad[0])
      raise UsageError(
          f"{origin}: {names[start + i]} is {'x'.join(map(str, shapes[i].numpy()))}"
          f" (height x width x channels), expected 32x32x3 RGB; convert it")
    images[start:start + len(batch)] = batch.numpy()
    start += len(batch)
  return images


def _first_undecodable(blobs: list[bytes]) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for i, blob in enumerate(blobs):
    try:
      tf.io.decode_image(blob, channels=0, expand_animations=False)
    except tf.errors.InvalidArgumentError:
      return i
  return 0


def load_image_folder(path: str, prefix: str, tree) -> ImageDataset:
  """Reads and decodes an image folder found by `find_image_folder`.

  Args:
    path: the folder or tar archive.
    prefix, tree: as `find_image_folder` returned them.

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
  arrays = []
  for split in ("train", "test"):
    names = [n for c in class_names for n in sorted(tree[split][c])]
    labels = np.concatenate([np.full(len(tree[split][c]), i, np.int32)
                             for i, c in enumerate(class_names)])
    images = _decode_all([contents.pop(n) for n in names], names, path)
    arrays += [images, labels]
  base = posixpath.basename(prefix) or posixpath.basename(
      path.rstrip("/")).split(".")[0]
  return make_dataset(base or "images", *arrays, class_names, origin=path)
