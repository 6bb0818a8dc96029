"""Tests for fastcifar.data.pipeline: shapes, orders, resumption, padding."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import pipeline, sources
from fastcifar.data.sources import shards
from fastcifar.errors import UsageError
from fastcifar.data.sources.dataset import aligned_empty, is_aligned


def _data(n: int, seed: int = 0):
  """Random images: all distinct, so an image tells which example it is."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, n).astype(np.int32)
  return images, labels


def _ids(images: np.ndarray, batch_images) -> np.ndarray:
  """Which example each image of a batch is (images are all distinct)."""
  lookup = {images[i].tobytes(): i for i in range(len(images))}
  return np.array([lookup[image.tobytes()] for image in batch_images])


def _epochs(ds, images, labels, batch_size):
  """The dataset's batches as example ids, checking each label on the way."""
  ids = []
  for batch_images, batch_labels in ds:
    batch_ids = _ids(images, batch_images.numpy())
    np.testing.assert_array_equal(batch_labels.numpy(), labels[batch_ids])
    assert len(batch_ids) == batch_size
    ids.append(batch_ids)
  return ids


def test_train_dataset_types_and_one_static_shape():
  images, labels = _data(50)
  ds = pipeline.train_dataset(images, labels, batch_size=8, seed=0,
                                    epochs=2)
  image_spec, label_spec = ds.element_spec
  assert image_spec.dtype == tf.uint8 and label_spec.dtype == tf.int32
  assert image_spec.shape.as_list() == [8, 32, 32, 3]
  assert label_spec.shape.as_list() == [8]
  assert image_spec.shape.is_fully_defined()
  # 50 // 8 = 6 full batches an epoch; the 2 left over are dropped.
  batches = list(ds)
  assert len(batches) == 12
  assert {tuple(b[0].shape) for b in batches} == {(8, 32, 32, 3)}


def test_train_epochs_are_permutations_in_new_orders():
  images, labels = _data(40)
  batch_size = 5
  ds = pipeline.train_dataset(images, labels, batch_size, seed=7,
                                    epochs=3)
  batches = _epochs(ds, images, labels, batch_size)
  per_epoch = 40 // batch_size
  assert len(batches) == 3 * per_epoch
  epochs = [np.concatenate(batches[e * per_epoch:(e + 1) * per_epoch])
            for e in range(3)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(40))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(epochs[0], np.arange(40))  # actually shuffled


def test_train_epoch_drops_a_different_remainder_each_epoch():
  images, labels = _data(23)
  ds = pipeline.train_dataset(images, labels, 4, seed=1, epochs=6)
  ids = np.concatenate(_epochs(ds, images, labels, 4)).reshape(6, 20)
  for epoch in ids:
    assert len(set(epoch)) == 20  # no duplicates within an epoch
  # Every example is seen over a few epochs: the dropped 3 are not fixed.
  assert set(ids.reshape(-1)) == set(range(23))


def test_train_order_is_a_function_of_the_seed():
  images, labels = _data(30)

  def run(seed):
    ds = pipeline.train_dataset(images, labels, 6, seed=seed, epochs=2)
    return np.concatenate(_epochs(ds, images, labels, 6))

  np.testing.assert_array_equal(run(3), run(3))
  assert not np.array_equal(run(3), run(4))


def test_resuming_gives_the_same_batches_as_the_full_run():
  images, labels = _data(36)
  full = _epochs(pipeline.train_dataset(images, labels, 6, seed=5,
                                              epochs=4), images, labels, 6)
  resumed = _epochs(pipeline.train_dataset(images, labels, 6, seed=5,
                                                 epochs=4, first_epoch=2),
                    images, labels, 6)
  assert len(resumed) == 2 * 6
  for a, b in zip(full[2 * 6:], resumed):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n,batch_size,note", [
    (50_000, 1024, None),  # 848 (1.7%) left out: the usual
    (1100, 1000, None),    # 9%
    (2000, 1024, "batch 1024 takes 1,024 of the 2,000 training examples per "
     "epoch (1 step): 976 (49%) are left out of every epoch, a different 976 "
     "each time; --batch_size=1000 would leave out almost none"),
    (700, 128, None),      # 60 (8.6%)
    (380, 128, "batch 128 takes 256 of the 380 training examples per epoch "
     "(2 steps): 124 (33%) are left out of every epoch, a different 124 each "
     "time; --batch_size=126 would leave out almost none"),
])
def test_a_batch_leaving_out_more_than_a_tenth_is_noted(n, batch_size, note):
  assert pipeline.check_batch_size(n, batch_size) == note


def test_fewer_examples_than_a_batch():
  images, labels = _data(5)
  with pytest.raises(UsageError, match="5 training examples is fewer than one "
                     "batch of 8; pass --batch_size=5 or less"):
    pipeline.train_dataset(images, labels, 8, seed=0, epochs=1)
  # Exactly one batch is fine.
  ds = pipeline.train_dataset(images, labels, 5, seed=0, epochs=1)
  assert len(list(ds)) == 1


@pytest.mark.parametrize("n,batch_size", [(23, 8), (24, 8), (3, 8)])
def test_eval_dataset_covers_every_example_once(n, batch_size):
  images, labels = _data(n, seed=n)
  ds = pipeline.eval_dataset(images, labels, batch_size)
  image_spec, label_spec, weight_spec = ds.element_spec
  assert image_spec.shape.as_list() == [batch_size, 32, 32, 3]
  assert label_spec.shape.as_list() == [batch_size]
  assert weight_spec.shape.as_list() == [batch_size]
  assert image_spec.dtype == tf.uint8 and weight_spec.dtype == tf.float32

  batches = list(ds)
  assert len(batches) == -(-n // batch_size)
  all_images = np.concatenate([b[0].numpy() for b in batches])
  all_labels = np.concatenate([b[1].numpy() for b in batches])
  weights = np.concatenate([b[2].numpy() for b in batches])
  assert len(weights) == len(batches) * batch_size
  # The real examples, in order, weight 1; then padding, weight 0.
  np.testing.assert_array_equal(all_images[:n], images)
  np.testing.assert_array_equal(all_labels[:n], labels)
  np.testing.assert_array_equal(weights[:n], 1.0)
  np.testing.assert_array_equal(weights[n:], 0.0)
  assert weights.sum() == n
  # Iterating again gives the same.
  again = np.concatenate([b[2].numpy() for b in ds])
  np.testing.assert_array_equal(again, weights)


def test_subset_is_seeded_sized_and_not_the_head():
  images, labels = _data(100)
  sub_images, sub_labels = pipeline.subset(images, labels, 30, seed=1)
  assert sub_images.shape == (30, 32, 32, 3) and sub_labels.shape == (30,)
  ids = _ids(images, sub_images)
  assert len(set(ids)) == 30
  np.testing.assert_array_equal(sub_labels, labels[ids])
  assert not np.array_equal(ids, np.arange(30))
  assert np.all(np.diff(ids) > 0)  # original relative order kept
  again, _ = pipeline.subset(images, labels, 30, seed=1)
  np.testing.assert_array_equal(again, sub_images)
  other, _ = pipeline.subset(images, labels, 30, seed=2)
  assert not np.array_equal(other, sub_images)


@pytest.mark.parametrize("num_examples", [0, 100, 1000])
def test_subset_of_zero_or_all_keeps_everything(num_examples):
  images, labels = _data(100)
  sub_images, sub_labels = pipeline.subset(images, labels, num_examples,
                                                 seed=1)
  assert sub_images is images and sub_labels is labels


def test_channel_stats_match_numpy():
  rng = np.random.default_rng(0)
  images = np.stack([rng.integers(0, 256, (64, 32, 32)),
                     rng.integers(100, 120, (64, 32, 32)),
                     rng.integers(0, 30, (64, 32, 32))], -1).astype(np.uint8)
  mean, std = pipeline.channel_stats(images)
  assert len(mean) == 3 and len(std) == 3
  as_float = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-6)


def test_channel_stats_of_a_constant_channel_is_not_zero_std():
  images = np.full((4, 32, 32, 3), 128, np.uint8)
  mean, std = pipeline.channel_stats(images)
  np.testing.assert_allclose(mean, 128 / 255)
  assert all(s > 0 for s in std)  # Standardize divides by it


def test_channel_stats_in_chunks():
  # More pixels than one chunk: the chunked sums must still be exact.
  images, _ = _data(1100)  # 1.1M pixels > the 1M-pixel chunk
  mean, std = pipeline.channel_stats(images)
  as_float = images.reshape(-1, 3).astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, as_float.mean(0), rtol=1e-9)
  np.testing.assert_allclose(std, as_float.std(0), rtol=1e-6)


def test_validation_split_is_disjoint_stratified_and_a_function_of_its_args():
  labels = np.repeat(np.arange(10, dtype=np.int32), [50, 60, 70, 80, 90,
                                                     100, 110, 120, 130, 190])
  labels = np.random.default_rng(0).permutation(labels)
  train, held_out = pipeline.validation_split(labels, 100, seed=4)
  assert len(held_out) == 100
  assert np.intersect1d(train, held_out).size == 0
  assert np.array_equal(np.union1d(train, held_out), np.arange(len(labels)))
  # Each class gives its share: counts / 1,000 * 100.
  assert np.array_equal(np.bincount(labels[held_out], minlength=10),
                        [5, 6, 7, 8, 9, 10, 11, 12, 13, 19])
  again = pipeline.validation_split(labels, 100, seed=4)
  assert np.array_equal(again[1], held_out)
  other = pipeline.validation_split(labels, 100, seed=5)[1]
  assert not np.array_equal(other, held_out)


def test_validation_split_rounds_to_the_exact_size():
  labels = np.arange(30, dtype=np.int32) % 3  # 10 per class
  for size in (1, 2, 4, 7, 29):
    _, held_out = pipeline.validation_split(labels, size, seed=0)
    counts = np.bincount(labels[held_out], minlength=3)
    assert counts.sum() == size and counts.max() - counts.min() <= 1


def test_no_validation_split_and_one_too_large():
  labels = np.zeros(20, np.int32)
  train, held_out = pipeline.validation_split(labels, 0, seed=0)
  assert len(train) == 20 and len(held_out) == 0
  with pytest.raises(UsageError, match="--validation_examples=20 leaves none"):
    pipeline.validation_split(labels, 20, seed=0)


def test_host_tensor_uses_an_aligned_arrays_memory():
  images, _ = _data(8)
  aligned = aligned_empty(images.shape, images.dtype)
  aligned[...] = images
  assert aligned.ctypes.data % 64 == 0
  tensor = pipeline.host_tensor(aligned)
  np.testing.assert_array_equal(tensor.numpy(), images)
  aligned[3] = 255 - aligned[3]  # the one copy of the data: a write shows
  np.testing.assert_array_equal(tensor[3].numpy(), 255 - images[3])


@pytest.mark.parametrize("make", [
    lambda a: np.frombuffer(b"\0" + a.tobytes(), np.uint8, offset=1
                            ).reshape(a.shape),  # misaligned and read-only
    lambda a: a[:, ::2],  # not contiguous
])
def test_host_tensor_copies_what_tensorflow_cannot_use(make):
  images, _ = _data(8)
  array = make(images)
  tensor = pipeline.host_tensor(array)  # TensorFlow would abort on it
  np.testing.assert_array_equal(tensor.numpy(), array)
  np.testing.assert_array_equal(tf.gather(tensor, [5, 1]).numpy(),
                                array[[5, 1]])


def test_pipelines_read_the_images_array_itself():
  # No copy of the images anywhere: a write after the iterator started shows
  # in its later batches. (tf.data's default rewrites, off here, kept a
  # serialized copy of the captured images beside them: +150 MB on CIFAR-10.)
  images, labels = _data(4096)
  big = aligned_empty(images.shape, images.dtype)
  big[...] = images
  for ds in (pipeline.train_dataset(big, labels, 64, seed=0, epochs=1),
             pipeline.eval_dataset(big, labels, 64)):
    options = ds.options().experimental_optimization
    assert options.apply_default_optimizations is False
  ds = pipeline.train_dataset(big, labels, 64, seed=0, epochs=1)
  iterator = iter(ds)
  assert next(iterator)[0].numpy().any()
  big[...] = 0
  for last, _ in iterator:  # past whatever was prefetched before the write
    pass
  assert not last.numpy().any()



def test_eval_dataset_reads_the_arrays_themselves():
  # No padded copy and no cache of the split: a write before a pass, after
  # an earlier one, shows in its batches (they held CIFAR-10's 31 MB test
  # set twice more).
  images, labels = _data(100)
  big = aligned_empty(images.shape, images.dtype)
  big[...] = images
  ds = pipeline.eval_dataset(big, labels, 64)
  first = np.concatenate([b[0].numpy() for b in ds])
  np.testing.assert_array_equal(first[:100], images)
  big[...] = 0
  again = np.concatenate([b[0].numpy() for b in ds])
  assert not again.any()

# --- Streamed from shards -----------------------------------------------------


def _shards(tmp_path, n: int, per_shard: int = 16):
  """Random distinct images written as shards of `per_shard` examples."""
  images, labels = _data(n)
  path = str(tmp_path / "fastcifar-s")
  shards.write_shards(path, "s", [str(c) for c in range(10)],
                      [("train", images, labels), ("test", images[:4],
                                                   labels[:4])],
                      {"train": n, "test": 4},
                      shard_bytes=per_shard * 32 * 32 * 3)
  stream = sources.load_shards(path, shuffle_buffer=24).train_images
  return stream, images, labels


def test_streamed_epochs_see_every_example_once_in_static_batches(tmp_path):
  stream, images, labels = _shards(tmp_path, 100)
  assert len(stream.files) == 7  # about 16 a shard
  ds = pipeline.train_dataset(stream, labels, 10, seed=3, epochs=2)
  assert ds.element_spec[0].shape.as_list() == [10, 32, 32, 3]
  assert ds.element_spec[0].dtype == tf.uint8
  batches = _epochs(ds, images, labels, 10)
  assert len(batches) == 20
  first, second = (np.concatenate(batches[:10]), np.concatenate(batches[10:]))
  np.testing.assert_array_equal(np.sort(first), np.arange(100))
  np.testing.assert_array_equal(np.sort(second), np.arange(100))
  assert not np.array_equal(first, second)  # each epoch its own order
  assert not np.array_equal(first, np.arange(100))


def test_streamed_order_is_a_function_of_seed_and_epoch(tmp_path):
  stream, images, labels = _shards(tmp_path, 60)

  def order(seed, epochs, first_epoch=0):
    ds = pipeline.train_dataset(stream, labels, 6, seed, epochs,
                                      first_epoch)
    return np.concatenate(_epochs(ds, images, labels, 6))

  np.testing.assert_array_equal(order(1, 3), order(1, 3))
  np.testing.assert_array_equal(order(1, 3)[60:], order(1, 3, first_epoch=1))
  assert not np.array_equal(order(1, 1), order(2, 1))


def test_streamed_subset_keeps_only_its_ids_and_drops_the_remainder(tmp_path):
  stream, images, labels = _shards(tmp_path, 50)
  train, held_out = pipeline.validation_split(labels, 10, seed=0)
  picked = stream[train]
  assert len(picked) == 40 and len(stream) == 50
  ds = pipeline.train_dataset(picked, labels[train], 16, seed=0,
                                    epochs=1)
  seen = np.concatenate(_epochs(ds, images, labels, 16))
  assert len(seen) == 32 and len(set(seen)) == 32  # 40 // 16 batches
  assert set(seen) <= set(train) and not set(seen) & set(held_out)
  np.testing.assert_array_equal(np.asarray(stream[held_out]),
                                images[held_out])


def test_streamed_pipelines_of_a_strategy_split_each_global_batch(tmp_path):
  stream, images, labels = _shards(tmp_path, 48)
  whole = _epochs(pipeline.train_dataset(stream, labels, 8, 5, 1),
                  images, labels, 8)
  parts = [_epochs(pipeline.train_dataset(
      stream, labels, 8, 5, 1, shard_index=i, num_shards=2,
      replicas_per_shard=2), images, labels, 2) for i in range(2)]
  for step, batch in enumerate(whole):
    together = np.concatenate([parts[i][2 * step + r] for i in range(2)
                               for r in range(2)])
    np.testing.assert_array_equal(together, batch)


def test_sharded_images_read_any_ids_in_order(tmp_path):
  stream, images, _ = _shards(tmp_path, 40)
  pick = np.array([39, 0, 17, 17, 5])
  read = np.asarray(stream[pick])
  np.testing.assert_array_equal(read, images[pick])
  assert is_aligned(read)  # TensorFlow uses it without a copy


def test_shards_mix_a_class_sorted_source(tmp_path):
  images, _ = _data(200)
  labels = np.repeat(np.arange(10), 20).astype(np.int32)  # sorted by class
  path = str(tmp_path / "fastcifar-sorted")
  shards.write_shards(path, "sorted", [str(c) for c in range(10)],
                      [("train", images[i:i + 50], labels[i:i + 50])
                       for i in range(0, 200, 50)]
                      + [("test", images[:4], labels[:4])],
                      {"train": 200, "test": 4}, shard_bytes=25 * 32 * 32 * 3)
  stream = sources.load_shards(path).train_images
  for file in stream.files:
    parsed = [shards.parse_batch(s, (32, 32, 3))
              for s in tf.data.TFRecordDataset(file).batch(1000)]
    ids, _, file_labels = (t.numpy() for t in parsed[0])
    assert len(set(file_labels)) >= 5  # not a class or two
    assert not np.all(np.diff(ids) > 0)  # not in the source's order
  np.testing.assert_array_equal(np.asarray(stream), images)  # ids kept


def test_sharded_images_first_reads_the_first_shards_only(tmp_path):
  stream, images, _ = _shards(tmp_path, 100)
  first_file = tf.data.TFRecordDataset(stream.files[0]).batch(1000)
  ids = shards.parse_batch(next(iter(first_file)), (32, 32, 3))[0].numpy()
  head = stream.first(5)
  np.testing.assert_array_equal(head, images[ids[:5]])
  assert len(stream.first(1000)) == 100
  picked = stream[ids[3:]]  # a subset keeps to its own examples
  np.testing.assert_array_equal(picked.first(2), images[ids[3:5]])


# --- Resuming inside an epoch ---------------------------------------------


def _resumed_batches(images, labels, stream, batch_size, epochs, epoch, step,
                     **shard):
  """The batches of a pipeline started at (epoch, step), as example ids."""
  ds = pipeline.train_dataset(stream, labels, batch_size, seed=3,
                              epochs=epochs, first_epoch=epoch,
                              first_step=step, **shard)
  return _epochs(ds, images, labels, len(next(iter(ds))[0]))


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("subset", [False, True])
def test_a_pipeline_started_mid_epoch_gives_the_rest_exactly(
    tmp_path, streamed, subset):
  # 100 examples (70 of them with a subset), batch 10, 3 epochs; blocks of
  # 24 streamed, so steps fall inside blocks and between them.
  stream, images, labels = _shards(tmp_path, 100)
  if not streamed:
    stream = images
  if subset:
    keep = np.sort(np.random.default_rng(0).choice(100, 70, replace=False))
    stream, labels = stream[keep], labels[keep]
    images = images[keep] if not streamed else images
  if streamed and subset:
    labels = np.asarray(_data(100)[1])  # ids index the whole split's labels
  whole = _resumed_batches(images, labels, stream, 10, 3, 0, 0)
  steps = len(whole) // 3
  for epoch, step in [(0, 1), (0, 3), (1, 5), (2, steps - 1), (1, 0)]:
    got = _resumed_batches(images, labels, stream, 10, 3, epoch, step)
    assert len(got) == len(whole) - epoch * steps - step
    np.testing.assert_array_equal(np.array(got),
                                  np.array(whole[epoch * steps + step:]))


def test_a_mid_epoch_start_splits_the_same_global_batches_over_replicas():
  images, labels = _data(96)
  whole = _resumed_batches(images, labels, images, 16, 2, 0, 0,
                           replicas_per_shard=2)
  got = _resumed_batches(images, labels, images, 16, 2, 0, 2,
                         replicas_per_shard=2)
  # Two per-replica halves per step: step 2 starts at row 4.
  np.testing.assert_array_equal(np.array(got), np.array(whole[4:]))
