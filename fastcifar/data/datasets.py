"""fastcifar's data for a training loop of your own, e.g. Keras's `fit`.

`load_data` reads whatever the command reads; `train_dataset` and
`eval_dataset` give the command's batches as `tf.data.Dataset`s that
`model.fit(ds, epochs=E)` and `model.evaluate(ds)` take as they are: a known
number of batches, a new seeded order every epoch, uint8 images (the model
casts and standardizes them: `fastcifar.layers.Standardize`).
"""

from __future__ import annotations

from typing import Sequence
import warnings

import numpy as np
import tensorflow as tf

from fastcifar.data import pipeline, sources
from fastcifar.data.sources import ImageDataset
from fastcifar.errors import UsageError

SPLITS = ("test", "validation")


def load_data(dataset: str = "cifar10", data_dir: str | None = None,
              image_size: int | str | Sequence[int] | None = None,
              resize: str = "crop", *, download: bool = True,
              mirror: str | None = None, seed: int = 0, cache: str = "auto",
              shuffle_buffer: int = 10_000) -> ImageDataset:
  """The data `python -m fastcifar.train` reads with the same flags.

  Args:
    dataset: "cifar10", "cifar100", "synthetic" or "tfds:NAME".
    data_dir: a CIFAR archive, an image folder ROOT/{train,test}/<class>/
      (or a .tar.gz of one), a TFDS data dir, a .npz or shard folder from
      tools/prepare_data.py; None: TFDS's data dir, Keras's cache, else a
      download into that cache.
    image_size: H, (H, W) or "H,W" to resize every image to once; None:
      the data's own size.
    resize: "crop" or "pad", how images of another shape are resized.
    download: with data_dir None, may download the official archive.
    mirror: a base URL serving the official archives.
    seed: seeds synthetic data.
    cache: a shard folder's training images in "memory", streamed from
      "disk", or "auto" (streamed when they would not fit).
    shuffle_buffer: examples shuffled together when streamed.

  Returns:
    uint8 images `(N, H, W, 3)` and int32 labels of both splits.

  Raises:
    UsageError: the data is missing or unreadable (the message says what to
      do), or a setting is out of range.
  """
  return sources.load(dataset, data_dir, download=download, mirror=mirror,
                      seed=seed, image_size=sources.parse_image_size(
                          image_size), resize=resize, cache=cache,
                      shuffle_buffer=shuffle_buffer)


def train_dataset(data: ImageDataset, batch_size: int, seed: int = 0, *,
                  train_examples: int = 0, validation_examples: int = 0,
                  first_epoch: int = 0) -> tf.data.Dataset:
  """The command's training batches, one epoch per pass, for `model.fit`.

  The examples, their order and batches are those of `fastcifar.train`
  with the same settings; each epoch's order is a function of (seed,
  epoch). Its length is one epoch, `N // batch_size` full batches (known to
  `fit`, so no `steps_per_epoch`), and each pass over it (a Keras epoch) is
  the next epoch, in its own order. Call this outside any
  `tf.distribute` strategy's scope (`fastcifar.fit` runs strategies).

  Args:
    data: from `load_data`.
    batch_size: examples per batch.
    seed: fixes every epoch's order (and the examples picked below).
    train_examples: train on a seeded subset of this many; 0 all.
    validation_examples: hold this many out first, for `eval_dataset(...,
      split="validation")`; 0 none.
    first_epoch: the epoch the first pass is (a resumed training's).

  Returns:
    `(images, labels)` batches: uint8 `(batch_size, H, W, 3)`, int32.

  Raises:
    UsageError: fewer examples than one batch, or too many held out.

  Warns:
    UserWarning: whole batches leave out more than a tenth of the examples
      every epoch (the command says so too), with a batch size that would
      not.
  """
  images, labels, _ = pipeline.split_examples(
      data.train_images, data.train_labels, validation_examples,
      train_examples, seed)
  note = pipeline.check_batch_size(len(images), batch_size)
  if note:  # as the command says it, for a library as a warning
    warnings.warn(f"fastcifar: {note}", stacklevel=2)
  # `fit` starts a new iterator of a dataset of known length every epoch
  # (and one more it never reads), so the epoch number lives outside the
  # iterators: a pass takes the next one when it is first read (tf.data
  # starts a pipeline's work then, prefetching included), so the pass `fit`
  # never reads takes none (tested).
  counter = tf.Variable(first_epoch, dtype=tf.int64, trainable=False,
                        name="fastcifar_epoch")
  epochs = tf.data.Dataset.range(1).map(
      lambda _: counter.assign_add(1) - 1)
  ds = pipeline.train_dataset(images, labels, batch_size, seed, epochs)
  return ds.apply(tf.data.experimental.assert_cardinality(
      len(images) // batch_size))


def eval_dataset(data: ImageDataset, batch_size: int = 500, *,
                 split: str = "test", seed: int = 0,
                 validation_examples: int = 0) -> tf.data.Dataset:
  """Every example of a split once, in order, for `model.evaluate`.

  The last batch holds the rest (Keras weighs each batch by its size, so
  the loss and accuracy are over exactly the split's examples).

  Args:
    data: from `load_data`.
    batch_size: examples per batch.
    split: "test", or "validation": the examples `train_dataset` held out
      with the same `seed` and `validation_examples`.
    seed, validation_examples: as given to `train_dataset`.

  Returns:
    `(images, labels)` batches: uint8 images, int32 labels.

  Raises:
    UsageError: an unknown split, or "validation" without examples held out.
  """
  images, labels = _split(data, split, seed, validation_examples)
  images_t = pipeline.host_tensor(images)
  labels_t = pipeline.host_tensor(labels)
  ds = tf.data.Dataset.range(0, len(images), batch_size).map(
      lambda start: (images_t[start:start + batch_size],
                     labels_t[start:start + batch_size]))
  return pipeline.with_pipeline_options(ds.prefetch(tf.data.AUTOTUNE))


def _split(data: ImageDataset, split: str, seed: int,
           validation_examples: int) -> tuple[np.ndarray, np.ndarray]:
  """The images and labels of `split` (see `eval_dataset`)."""
  if split not in SPLITS:
    raise UsageError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
  if split == "test":
    return data.test_images, data.test_labels
  _, held_out = pipeline.validation_split(
      data.train_labels, validation_examples, seed)
  if not len(held_out):
    raise UsageError("split='validation' needs examples held out: pass "
                     "validation_examples=N (as to train_dataset)")
  # (read into memory when streamed: a small split)
  return np.asarray(data.train_images[held_out]), data.train_labels[held_out]
