"""Tests for fastcifar.datasets: the command's data for `model.fit`."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import fastcifar
from benchmarks import library
from fastcifar.data import datasets, pipeline, sources
from fastcifar.errors import UsageError


def _data(num_train: int = 300, num_test: int = 50, side: int = 16,
          seed: int = 0) -> sources.ImageDataset:
  """Random images: all distinct, so an image tells which example it is."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_train + num_test, side, side, 3),
                        dtype=np.uint8)
  labels = rng.integers(0, 4, num_train + num_test)
  return sources.make_dataset("tiny", images[:num_train], labels[:num_train],
                              images[num_train:], labels[num_train:],
                              "abcd", "test")


def _labels(ds) -> list[np.ndarray]:
  """One pass over a dataset: each batch's labels."""
  return [labels.numpy() for _, labels in ds]


def _commands(data, batch_size, seed, epochs, **examples):
  """fastcifar.train's batches (labels) for `epochs` epochs, per epoch."""
  images, labels, _ = pipeline.split_examples(
      data.train_images, data.train_labels,
      examples.get("validation_examples", 0),
      examples.get("train_examples", 0), seed)
  batches = _labels(pipeline.train_dataset(images, labels, batch_size,
                                                 seed, epochs))
  steps = len(images) // batch_size
  return [batches[e * steps:(e + 1) * steps] for e in range(epochs)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_each_pass_is_the_commands_next_epoch():
  data = _data()
  ds = fastcifar.train_dataset(data, 32, seed=3)
  assert int(ds.cardinality()) == 300 // 32
  images, labels = ds.element_spec
  assert (images.dtype, tuple(images.shape)) == ("uint8", (32, 16, 16, 3))
  assert labels.dtype == "int32"
  command = _commands(data, 32, 3, epochs=3)
  passes = [_labels(ds) for _ in range(3)]
  for epoch in range(3):
    assert _same(passes[epoch], command[epoch])
  assert not _same(passes[0], passes[1])  # a new order every epoch


def test_a_pass_that_is_never_read_takes_no_epoch():
  # `fit` makes an iterator at each epoch's end that it never reads.
  data = _data()
  ds = fastcifar.train_dataset(data, 32, seed=1)
  unread = iter(ds)
  del unread
  assert _same(_labels(ds), _commands(data, 32, 1, epochs=1)[0])


def test_first_epoch_resumes_the_order():
  data = _data()
  ds = fastcifar.train_dataset(data, 50, seed=2, first_epoch=1)
  assert _same(_labels(ds), _commands(data, 50, 2, epochs=2)[1])


def test_examples_held_out_and_subset_are_the_commands():
  data = _data()
  settings = dict(train_examples=100, validation_examples=60)
  ds = fastcifar.train_dataset(data, 20, seed=4, **settings)
  assert int(ds.cardinality()) == 5
  assert _same(_labels(ds), _commands(data, 20, 4, 1, **settings)[0])
  validation = datasets.eval_dataset(data, 25, split="validation", seed=4,
                                     validation_examples=60)
  _, held_out = pipeline.validation_split(data.train_labels, 60, 4)
  got = np.concatenate([images.numpy() for images, _ in validation])
  np.testing.assert_array_equal(got, data.train_images[held_out])
  trained = {image.tobytes() for batch, _ in ds for image in batch.numpy()}
  assert not trained & {image.tobytes() for image in got}


def test_eval_dataset_is_every_example_once_in_order():
  data = _data(num_test=53)
  ds = fastcifar.eval_dataset(data, batch_size=20)
  assert int(ds.cardinality()) == 3
  batches = list(ds)
  assert [len(labels) for _, labels in batches] == [20, 20, 13]
  np.testing.assert_array_equal(
      np.concatenate([images.numpy() for images, _ in batches]),
      data.test_images)
  np.testing.assert_array_equal(
      np.concatenate([labels.numpy() for _, labels in batches]),
      data.test_labels)


def test_eval_dataset_refuses_an_unknown_or_empty_split():
  with pytest.raises(UsageError, match="choose one of test, validation"):
    fastcifar.eval_dataset(_data(), split="train")
  with pytest.raises(UsageError, match="validation_examples=N"):
    fastcifar.eval_dataset(_data(), split="validation")


def test_train_dataset_refuses_fewer_examples_than_a_batch():
  with pytest.raises(UsageError, match="fewer than one batch of 128"):
    fastcifar.train_dataset(_data(num_train=100), 128)


def test_train_dataset_says_when_batches_leave_out_many_examples():
  with pytest.warns(UserWarning, match="are left out of every epoch"):
    fastcifar.train_dataset(_data(num_train=300), 256)


def test_load_data_is_the_commands_data_at_any_image_size(small_npz):
  data = fastcifar.load_data(data_dir=small_npz, image_size=(20, 24))
  assert isinstance(data, fastcifar.ImageDataset)
  assert data.image_shape == (20, 24, 3)
  same = sources.load(data_dir=small_npz, image_size=(20, 24))
  np.testing.assert_array_equal(data.test_images, same.test_images)
  assert fastcifar.load_data(data_dir=small_npz, image_size=8,
                             resize="pad").image_shape[:2] == (8, 8)
  assert fastcifar.load_data(data_dir=small_npz,
                             image_size="8,12").image_shape[:2] == (8, 12)
  with pytest.raises(UsageError, match="write H or H,W"):
    fastcifar.load_data(data_dir=small_npz, image_size=(0, 3))


class _Recording(keras.Model):
  """A model that notes the labels of every batch `fit` trains on."""

  seen: list

  def train_step(self, data):
    self.seen.append(data[1].numpy())
    return super().train_step(data)


def test_fit_trains_on_the_commands_epochs_in_order():
  data = _data()
  inputs = keras.Input((16, 16, 3), dtype="uint8")
  outputs = keras.layers.Dense(4, activation="softmax")(
      keras.layers.GlobalAveragePooling2D()(
          fastcifar.layers.Standardize([0.5] * 3, [0.25] * 3)(inputs)))
  model = _Recording(inputs, outputs)
  model.seen = []
  model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
  # shuffle=False, as docs/library.md writes it: the dataset comes shuffled
  # (Keras would only warn that it leaves a tf.data order alone).
  model.fit(fastcifar.train_dataset(data, 50, seed=6), epochs=3, verbose=0,
            shuffle=False)
  command = _commands(data, 50, 6, epochs=3)
  assert _same(model.seen, command[0] + command[1] + command[2])


def test_a_small_resnet_fits_two_epochs_without_running_out(capfd):
  # The Done-when's (c): `model.fit(train_dataset(...), epochs=2)` on a
  # user's ResNet (BatchNorm, residual adds, fastcifar's layers).
  keras.utils.set_random_seed(0)
  data = _data(num_train=512, num_test=64)
  model = library.build_with_augmentation(data.num_classes, data.image_shape)
  assert any(isinstance(layer, keras.layers.Add) for layer in model.layers)
  model.compile("adam", "sparse_categorical_crossentropy",
                metrics=["accuracy"])
  ds = fastcifar.train_dataset(data, batch_size=128, seed=0)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(ds, epochs=2, verbose=0)
    model.evaluate(fastcifar.eval_dataset(data), verbose=0)
  messages = [str(w.message) for w in caught]
  # Keras notes that it leaves any tf.data dataset's order alone; nothing else.
  assert all(m.startswith("`shuffle=True` was passed") for m in messages), (
      messages)
  assert len(history.history["loss"]) == 2
  assert int(model.layers[1].step.numpy()) == 2 * 4  # augmented every step
  # Keras read exactly two epochs: the next pass is the command's third.
  assert _same(_labels(ds), _commands(data, 128, 0, epochs=3)[2])
  logged = capfd.readouterr()
  assert "ran out of data" not in logged.out + logged.err
  assert "OUT_OF_RANGE" not in logged.err


def test_streamed_shards_are_the_commands_epochs_too(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 4, 100).astype(np.int32)
  path = str(tmp_path / "fastcifar-s")
  sources.write_shards(path, "s", list("abcd"),
                       [("train", images, labels),
                        ("test", images[:4], labels[:4])],
                       {"train": 100, "test": 4}, shard_bytes=16 * 8 * 8 * 3)
  data = fastcifar.load_data(data_dir=path, cache="disk",
                             shuffle_buffer=24)
  assert isinstance(data.train_images, sources.ShardedImages)
  ds = fastcifar.train_dataset(data, 10, seed=3)
  assert int(ds.cardinality()) == 10
  command = _commands(data, 10, 3, epochs=2)
  assert _same(_labels(ds), command[0])
  assert _same(_labels(ds), command[1])
