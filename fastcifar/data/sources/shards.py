"""Sharded data: decoded uint8 images in TFRecord files, streamed.

For data larger than memory. `tools/prepare_data.py --format=shards` writes
a folder `fastcifar-NAME/`:

  fastcifar-shards.json   the manifest: name, classes, image shape, the
                          per-channel statistics of the train split, and per
                          split its files and their example counts. JSON:
                          reading it runs no code.
  train-labels.npy        int32 labels in id order (read without pickle):
                          the seeded, stratified validation split needs them
                          before any image is read.
  train-00000.tfrecord    `tf.train.Example`s of `image` (the raw H*W*3
  ...                     uint8 bytes), `label` and `id` (the example's row
                          in the split, as in memory). Each shard is a
                          random sample of the split in a random order
                          (seeded), whatever order the source had.
  test-*.tfrecord, test-labels.npy
                          the same for the test split.

Why TFRecord: tf.data reads it natively (`TFRecordDataset`, parallel
`interleave`) with no dependency beyond TensorFlow. ArrayRecord would add
random access (an exact global shuffle) at the price of a new dependency;
with decoded images the stream is cheap enough that a shuffle buffer over
shards read in a seeded order serves (see docs/data.md for what the buffer
costs in randomness). Raw uint8 rather than PNG/JPEG: nothing is decoded
while training, and the pixels are exactly the ones prepared.

Training streams the train split (`input_pipeline.streamed_train_dataset`);
the test split and a validation split are read into memory (they are small).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable, Mapping, Sequence

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.training import outputs
from fastcifar.data.sources.dataset import (ImageDataset, aligned_empty,
                                            make_dataset)

MANIFEST = "fastcifar-shards.json"
FORMAT = "fastcifar-shards"
VERSION = 1
SHARD_BYTES = 64 * 2**20  # of image data per file: a few seconds' reading
_READ_BATCH = 256  # records parsed per vectorized parse


def shards_path(data_dir: str, name: str) -> str:
  """Where `write_shards` puts dataset `name` inside `data_dir`."""
  return os.path.join(data_dir, f"fastcifar-{name}")


def is_shards_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MANIFEST))


class ChannelSums:
  """Per-channel mean and std of uint8 images, accumulated chunk by chunk."""

  def __init__(self):
    self.count = 0
    self.total = 0.0
    self.squares = 0.0

  def add(self, images: np.ndarray) -> None:
    """Adds uint8 images `(..., C)`, 1M pixels at a time (bounded scratch)."""
    pixels = images.reshape(-1, images.shape[-1])
    for start in range(0, len(pixels), 1 << 20):
      chunk = pixels[start:start + (1 << 20)].astype(np.float64)
      self.total = self.total + chunk.sum(0)
      self.squares = self.squares + np.square(chunk).sum(0)
    self.count += len(pixels)

  def result(self) -> tuple[list[float], list[float]]:
    """`(mean, std)`, each a list of C floats, fractions of 255."""
    mean = self.total / self.count
    std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 1e-12))
    return [float(m) for m in mean / 255.0], [float(s) for s in std / 255.0]


def _example(image: np.ndarray, label: int, index: int) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = tf.train.Feature
  return tf.train.Example(features=tf.train.Features(feature={
      "image": feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
      "label": feature(int64_list=tf.train.Int64List(value=[int(label)])),
      "id": feature(int64_list=tf.train.Int64List(value=[index])),
  })).SerializeToString()


class _SplitWriter:
  """Writes one split's examples, shuffled, into about `num_shards` files.

  Sources store examples in an order (an image folder: class by class)
  that a stream must not keep: a shard of one class, read with a few
  others, would make batches of a few classes. So each example goes to a
  random one of the split's staging files as it comes (only the files are
  open, nothing is held), and each staging file is then read back (one
  shard in memory), put in a random order, and written as a shard: every
  shard is a random sample of the split, in a random order.
  """

  def __init__(self, folder: str, split: str, num_shards: int,
               rng: np.random.Generator):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.folder, self.split, self.rng = folder, split, rng
    self.staged = [os.path.join(folder, f".stage-{split}-{k:05d}")
                   for k in range(num_shards)]
    self.writers = [tf.io.TFRecordWriter(f) for f in self.staged]
    self.ids: list[np.ndarray] = []
    self.labels: list[np.ndarray] = []
    self.received = 0

  def add(self, images: np.ndarray, labels: np.ndarray,
          ids: np.ndarray | None = None) -> None:
    if ids is None:  # in the order received
      ids = np.arange(self.received, self.received + len(images))
    self.received += len(images)
    self.ids.append(np.asarray(ids, np.int64))
    self.labels.append(np.asarray(labels, np.int32))
    for image, label, index, k in zip(
        images, labels, ids, self.rng.integers(len(self.writers),
                                               size=len(images))):
      self.writers[k].write(_example(image, label, int(index)))

  def finish(self) -> dict:
    """Writes the shards and the labels; the manifest's entry."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for writer in self.writers:
      writer.close()
    entry = {"files": [], "counts": [], "id_ranges": [],
             "labels": f"{self.split}-labels.npy"}
    for staged in self.staged:
      records = list(tf.data.TFRecordDataset(staged).as_numpy_iterator())
      os.unlink(staged)
      if not records:
        continue
      ids = tf.io.parse_example(records, {"id": tf.io.FixedLenFeature(
          [], tf.int64)})["id"].numpy()
      name = f"{self.split}-{len(entry['files']):05d}.tfrecord"
      with tf.io.TFRecordWriter(os.path.join(self.folder, name)) as writer:
        for i in self.rng.permutation(len(records)):
          writer.write(records[i])
      entry["files"].append(name)
      entry["counts"].append(len(records))
      entry["id_ranges"].append([int(ids.min()), int(ids.max())])
    ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
    if not np.array_equal(np.sort(ids), np.arange(len(ids))):
      raise ValueError(f"the {self.split} ids are not 0..{len(ids) - 1}, "
                       "each once")
    labels = np.zeros(len(ids), np.int32)
    if len(ids):
      labels[ids] = np.concatenate(self.labels)
    np.save(os.path.join(self.folder, entry["labels"]), labels)
    return entry


def write_shards(path: str, name: str, class_names: Sequence[str],
                 chunks: Iterable[tuple], num_examples: Mapping[str, int],
                 test_split: str = "test", shard_bytes: int = SHARD_BYTES,
                 seed: int = 0) -> dict:
  """Writes a dataset, chunk by chunk, as a shard folder at `path`.

  Only one chunk (then one shard) is held at a time, so a dataset larger
  than memory can be written. Each shard is a random sample of its split
  in a random order (see `_SplitWriter`). The folder appears complete or
  not at all: it is written under a temporary name, the manifest last,
  then renamed (replacing an old one).

  Args:
    path: the folder to create or replace.
    name: the dataset's name.
    class_names: one per label.
    chunks: `(split, images, labels)` or `(split, rows, images, labels)`,
      split "train" or "test", images uint8 `(n, H, W, 3)` of one shape,
      in any order. An example's id (its row in the split, which the
      validation split and subsets pick by) is its row if given, else its
      place in the order received.
    num_examples: `{split: examples}`, to size the shards.
    test_split: where the test examples came from (see `ImageDataset`).
    shard_bytes: image bytes per file, about.
    seed: which shard each example goes to, and the order within.

  Returns:
    The manifest written.

  Raises:
    UsageError: images of another shape, or a split left empty.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = outputs.new_temp_folder(parent, ".fastcifar-shards-")
  try:
    rng = np.random.default_rng(seed)
    writers, image_shape, sums = {}, None, ChannelSums()
    for split, *rows, images, labels in chunks:
      if image_shape is None:
        image_shape = tuple(int(s) for s in images.shape[1:])
        per_shard = max(1, shard_bytes // int(np.prod(image_shape)))
        writers = {s: _SplitWriter(tmp, s, -(-max(1, n) // per_shard), rng)
                   for s, n in num_examples.items()}
      if images.shape[1:] != image_shape or images.dtype != np.uint8:
        raise UsageError(f"{name}: {split} images of shape {images.shape[1:]}"
                         f" {images.dtype}, expected {image_shape} uint8")
      writers[split].add(images, labels, *rows)
      if split == "train":
        sums.add(images)
    splits = {s: w.finish() for s, w in writers.items()}
    for split in ("train", "test"):
      if split not in splits or not sum(splits[split]["counts"]):
        raise UsageError(f"{name}: the {split} split is empty")
    mean, std = sums.result()
    manifest = {"format": FORMAT, "version": VERSION, "name": name,
                "class_names": list(class_names),
                "image_shape": list(image_shape), "mean": mean, "std": std,
                "test_split": test_split, "splits": splits}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1)
    _replace_folder(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def _replace_folder(new: str, path: str) -> None:
  """Renames `new` to `path`; an old folder there goes only afterwards."""
  old = None
  if os.path.exists(path):
    old = tempfile.mkdtemp(prefix=".fastcifar-old-",
                           dir=os.path.dirname(os.path.abspath(path)))
    os.rmdir(old)
    os.rename(path, old)
  os.rename(new, path)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def array_counts(dataset: ImageDataset) -> dict[str, int]:
  """`write_shards`' num_examples of an in-memory dataset."""
  return {"train": len(dataset.train_images),
          "test": len(dataset.test_images)}


def array_chunks(dataset: ImageDataset, chunk: int = 4096):
  """An in-memory dataset as `write_shards` chunks."""
  for split in ("train", "test"):
    images = getattr(dataset, f"{split}_images")
    labels = getattr(dataset, f"{split}_labels")
    for start in range(0, len(images), chunk):
      yield split, images[start:start + chunk], labels[start:start + chunk]


def parse_batch(serialized, image_shape: Sequence[int]):
  """Serialized examples `(n,)` -> `(ids, images uint8, labels int32)`.

  One vectorized parse per batch of records: parsing record by record
  costs several times more.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parsed = tf.io.parse_example(serialized, {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "id": tf.io.FixedLenFeature([], tf.int64)})
  images = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8),
                      [-1, *image_shape])
  return parsed["id"], images, tf.cast(parsed["label"], tf.int32)


class ShardedImages:
  """A split's images on disk, held as ids: indexing selects, reading reads.

  Stands where a uint8 array `(N, H, W, 3)` stands in an `ImageDataset`:
  `len`, `shape` and `dtype` as an array's; `images[indices]` is another
  `ShardedImages` of those examples (nothing read); `np.asarray(images)`
  reads them into memory, in order. Training streams them
  (`input_pipeline.train_dataset`).

  Attributes:
    folder: the shard folder.
    files, counts: the split's shard files and examples in each.
    image_shape: `(H, W, 3)`.
    ids: the examples, rows of the whole split.
    mean, std: the train split's per-channel statistics (the manifest's).
    shuffle_buffer: examples in training's shuffle buffer.
  """

  dtype = np.dtype(np.uint8)

  def __init__(self, folder: str, files: Sequence[str], counts: Sequence[int],
               image_shape: Sequence[int], ids: np.ndarray | None = None,
               mean=None, std=None, shuffle_buffer: int = 10_000,
               id_ranges: Sequence[Sequence[int]] | None = None):
    self.folder = folder
    self.files = [os.path.join(folder, f) for f in files]
    self.counts = [int(c) for c in counts]
    self.id_ranges = id_ranges
    self.image_shape = tuple(int(s) for s in image_shape)
    self.ids = (np.arange(sum(self.counts)) if ids is None
                else np.asarray(ids, np.int64))
    self.mean, self.std = mean, std
    self.shuffle_buffer = shuffle_buffer

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.ids), *self.image_shape)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))

  @property
  def is_everything(self) -> bool:
    return len(self.ids) == sum(self.counts)

  def __getitem__(self, index) -> "ShardedImages":
    ids = self.ids[index]
    if np.ndim(ids) != 1:
      raise TypeError("ShardedImages take an array or slice of indices")
    return ShardedImages(self.folder, [os.path.basename(f) for f in self.files],
                         self.counts, self.image_shape, ids, self.mean,
                         self.std, self.shuffle_buffer, self.id_ranges)

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    del copy  # always a new array
    images = self.read()[0]
    return images if dtype is None else images.astype(dtype)

  def first(self, count: int) -> np.ndarray:
    """The first `count` of these examples in the shards, read into memory.

    Each shard is a random sample of the split in a random order, so these
    are a random sample too, read from as few shards as hold them: the
    examples of ids `[:count]` would be spread over every shard.

    Args:
      count: how many (fewer when there are fewer).

    Returns:
      uint8 images `(min(count, len(self)), H, W, 3)`.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    found, total = [], 0
    ds = tf.data.TFRecordDataset(self.files).batch(_READ_BATCH).map(
        lambda s: parse_batch(s, self.image_shape))
    for ids, batch, _ in ds.as_numpy_iterator():
      if not self.is_everything:
        batch = batch[np.isin(ids, self.ids)]
      found.append(batch[:count - total])
      total += len(found[-1])
      if total >= count:
        break
    return np.concatenate(
        found or [np.zeros((0, *self.image_shape), np.uint8)])

  def read(self) -> tuple[np.ndarray, np.ndarray]:
    """Reads the examples into memory: `(images, labels)`, in `ids` order.

    Only the shards that hold some of them are read, each once, in one pass.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    wanted, inverse = np.unique(self.ids, return_inverse=True)
    images = aligned_empty((len(wanted), *self.image_shape), np.uint8)
    labels = np.empty(len(wanted), np.int32)
    files = [f for f, (low, high) in zip(self.files, self.id_ranges)
             if np.any((wanted >= low) & (wanted <= high))]
    if files and len(wanted):
      ds = tf.data.TFRecordDataset(files).batch(_READ_BATCH).map(
          lambda s: parse_batch(s, self.image_shape))
      for ids, batch, batch_labels in ds.as_numpy_iterator():
        rows = np.searchsorted(wanted, ids)
        found = (rows < len(wanted)) & (
            wanted[np.minimum(rows, len(wanted) - 1)] == ids)
        images[rows[found]] = batch[found]
        labels[rows[found]] = batch_labels[found]
    if len(wanted) == len(self.ids) and np.all(wanted == self.ids):
      return images, labels
    picked = aligned_empty(self.shape, np.uint8)
    picked[...] = images[inverse]
    return picked, labels[inverse]


def _read_manifest(folder: str) -> dict:
  path = os.path.join(folder, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
    if manifest.get("format") != FORMAT:
      raise ValueError(f"format is {manifest.get('format')!r}")
    if manifest.get("version") != VERSION:
      raise ValueError(f"version {manifest.get('version')}, this fastcifar "
                       f"reads {VERSION}")
    for split in ("train", "test"):
      entry = manifest["splits"][split]
      if not len(entry["files"]) == len(entry["counts"]) == len(
          entry["id_ranges"]):
        raise ValueError(f"{split} lists {len(entry['files'])} files but "
                         f"{len(entry['counts'])} counts")
      for name in entry["files"] + [entry["labels"]]:
        if os.path.basename(name) != name or not os.path.isfile(
            os.path.join(folder, name)):
          raise ValueError(f"{name} is missing")
    manifest["image_shape"] = [int(s) for s in manifest["image_shape"]]
    return manifest
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UsageError(f"{path}: unreadable ({e}); prepare the shards again "
                     "with tools/prepare_data.py --format=shards") from e


def _labels(folder: str, entry: dict, split: str) -> np.ndarray:
  path = os.path.join(folder, entry["labels"])
  try:
    labels = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UsageError(f"{path}: unreadable ({e}); prepare the shards again "
                     "with tools/prepare_data.py --format=shards") from e
  if labels.shape != (sum(entry["counts"]),):
    raise UsageError(f"{path}: {labels.shape[0]} {split} labels but "
                     f"{sum(entry['counts'])} examples; prepare the shards "
                     "again")
  return labels


def decoded_train_bytes(folder: str) -> int:
  """The bytes the train split's images take in memory, decoded."""
  manifest = _read_manifest(folder)
  return (sum(manifest["splits"]["train"]["counts"])
          * int(np.prod(manifest["image_shape"])))


def load_shards(folder: str, stream: bool = True,
                shuffle_buffer: int = 10_000) -> ImageDataset:
  """Opens a shard folder written by `write_shards`.

  Args:
    folder: the folder holding `MANIFEST`.
    stream: keep the train images on disk (`ShardedImages`); False reads
      them into memory, as any other source.
    shuffle_buffer: examples in training's shuffle buffer when streamed.

  Returns:
    An `ImageDataset` whose test split is in memory and whose
    `train_images` are a `ShardedImages` when streamed.
  """
  manifest = _read_manifest(folder)
  shape = manifest["image_shape"]
  splits = {}
  for split in ("train", "test"):
    entry = manifest["splits"][split]
    images = ShardedImages(folder, entry["files"], entry["counts"], shape,
                           mean=manifest["mean"], std=manifest["std"],
                           shuffle_buffer=shuffle_buffer,
                           id_ranges=entry["id_ranges"])
    labels = _labels(folder, entry, split)
    splits[split] = (images if split == "train" and stream
                     else images.read()[0], labels)
  origin = os.path.join(folder, MANIFEST)
  # Checked as every source is (labels, shapes); the streamed images only
  # by their declared shape.
  checked = make_dataset(
      manifest["name"], np.zeros((1, *shape), np.uint8),
      splits["train"][1][:1], splits["test"][0], splits["test"][1],
      manifest["class_names"], origin, manifest.get("test_split", "test"))
  labels = splits["train"][1]
  if len(labels) and (labels.min() < 0 or labels.max() >= checked.num_classes):
    raise UsageError(f"{origin}: train labels out of range; prepare the "
                     "shards again")
  if not stream:
    return make_dataset(manifest["name"], *splits["train"], *splits["test"],
                        manifest["class_names"], origin,
                        manifest.get("test_split", "test"))
  return ImageDataset(checked.name, splits["train"][0], labels.astype(np.int32),
                      checked.test_images, checked.test_labels,
                      checked.class_names, checked.test_split)
