"""Input pipelines: uint8 arrays in, `tf.data.Dataset` out.

Nothing here converts to float or one-hot: the host ships uint8 images and
int32 labels (a quarter of the bytes of float32), and the cast, normalization
and one-hot run on the device inside the compiled step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fastcifar.errors import UsageError
from fastcifar.data.sources import shards
from fastcifar.data.sources.dataset import aligned_empty, is_aligned


def subset(images: np.ndarray, labels: np.ndarray, num_examples: int,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random subset (image folders are sorted by class: no head-N).

  Args:
    images, labels: the full arrays.
    num_examples: how many to keep; 0 or at least len(images) keeps all.
    seed: picks the subset.

  Returns:
    `(images, labels)` of the subset, in their original relative order.
  """
  if num_examples <= 0 or num_examples >= len(images):
    return images, labels
  keep = np.sort(np.random.default_rng(seed).choice(
      len(images), num_examples, replace=False))
  return images[keep], labels[keep]


def validation_split(labels: np.ndarray, num_validation: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded validation split, stratified by class: a function of its args.

  Each class gives its share of `num_validation` (largest remainders round),
  picked at random within the class, so resumed runs and every worker of a
  run hold out the same examples.

  Args:
    labels: int labels of the whole training set.
    num_validation: examples to hold out; 0 holds out none.
    seed: picks them.

  Returns:
    `(train_indices, validation_indices)`: disjoint, together all of
    `range(len(labels))`, each sorted.

  Raises:
    UsageError: `num_validation` leaves nothing to train on.
  """
  everything = np.arange(len(labels))
  if num_validation <= 0:
    return everything, everything[:0]
  if num_validation >= len(labels):
    raise UsageError(f"--validation_examples={num_validation} leaves none of "
                     f"the {len(labels)} training examples to train on; "
                     "hold out fewer")
  classes, counts = np.unique(labels, return_counts=True)
  quotas = num_validation * counts / len(labels)
  takes = np.floor(quotas).astype(int)
  short = num_validation - takes.sum()
  takes[np.argsort(takes - quotas, kind="stable")[:short]] += 1
  # A stream of its own: `subset` draws from the bare seed.
  rng = np.random.default_rng([seed, 1])
  held_out = np.sort(np.concatenate([
      rng.permutation(np.flatnonzero(labels == c))[:take]
      for c, take in zip(classes, takes)]))
  return np.setdiff1d(everything, held_out), held_out


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
  """Per-channel mean and std of uint8 images, as fractions of 255.

  Args:
    images: uint8 `(N, H, W, C)`.

  Returns:
    `(mean, std)`, each a list of C floats.
  """
  sums = shards.ChannelSums()
  sums.add(images)
  return sums.result()


def host_tensor(array: np.ndarray) -> tf.Tensor:
  """A CPU tensor over a numpy array's own memory: the data held once.

  `tf.constant(array)` keeps two copies of the array beside it (measured:
  300 MB held for 150 MB of CIFAR training images); DLPack hands TensorFlow
  the array's buffer itself, and the tensor keeps the array alive. An array
  TensorFlow cannot use as it is (not 64-byte aligned, not contiguous or
  read-only) is copied once into one it can. The tensor sees later writes to
  the array: nothing in fastcifar writes to its data arrays.

  Args:
    array: any numpy array.

  Returns:
    A tensor of the same dtype, shape and contents.
  """
  if not is_aligned(array):
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    array = copy
  return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def with_pipeline_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """The dataset with tf.data's graph rewrites and autotuning turned off.

  Rewrites: to rewrite a dataset, tf.data serializes its graph, the tensors
  its `map` captures included, and the process holds that much more while
  the iterator lives (measured: +150 MB for CIFAR-10's training images, none
  without the rewrites). These pipelines gain nothing from them: their maps
  are already parallel, their prefetch explicit.

  Autotuning: in TensorFlow 2.21 deleting an iterator whose autotuning thread
  is between optimizations sometimes waits out that thread's sleep, which
  doubles up to a minute over the iterator's life: 0-13.5 s per deleted
  training iterator, 0.2-1.7 s per evaluation pass (2-core AMD EPYC,
  2026-12-02; docs/benchmarks.md). Without it `AUTOTUNE` parallelism is the
  number of cores (what autotuning chose here anyway), and `prefetch`'s
  buffer still grows while its consumer waits (its own, older tuning).

  Args:
    dataset: any dataset.

  Returns:
    The same elements.
  """
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return dataset.with_options(options)


def epoch_order(num_examples: int, seed: int, epoch) -> tf.Tensor:
  """The training order of one epoch: a pure function of (seed, epoch).

  A resumed or re-run training therefore sees exactly the same batches.
  """
  keys = tf.random.stateless_uniform(
      [num_examples], seed=tf.stack([tf.cast(seed, tf.int64),
                                     tf.cast(epoch, tf.int64)]))
  return tf.argsort(keys)


# An epoch takes whole batches and leaves the rest out (a different rest
# each epoch). Up to a tenth left out is the usual cost of a batch size
# (CIFAR's 50,000 at 1,024 leave out 1.7%); beyond it the run says so.
DROPPED_SHARE_NOTED = 0.1


def check_batch_size(num_examples: int, batch_size: int) -> str | None:
  """Checks that whole batches take (most of) the training examples.

  Args:
    num_examples: the training examples.
    batch_size: the global batch size.

  Returns:
    None, or one line to print when an epoch leaves out more than
    `DROPPED_SHARE_NOTED` of the examples, with a batch size that would not.

  Raises:
    UsageError: not even one full batch (no step could be taken).
  """
  if num_examples < batch_size:
    raise UsageError(f"{num_examples} training examples is fewer than one "
                     f"batch of {batch_size}; pass --batch_size="
                     f"{num_examples} or less")
  steps = num_examples // batch_size
  dropped = num_examples - steps * batch_size
  if dropped <= DROPPED_SHARE_NOTED * num_examples:
    return None
  return (f"batch {batch_size} takes {steps * batch_size:,} of the "
          f"{num_examples:,} training examples per epoch ({steps} "
          f"step{'s' if steps > 1 else ''}): {dropped:,} "
          f"({dropped / num_examples:.0%}) are left out of every epoch, a "
          f"different {dropped:,} each time; --batch_size="
          f"{num_examples // (steps + 1)} would leave out almost none")


def shard_batches(batches: tf.Tensor, shard_index: int, num_shards: int,
                  replicas_per_shard: int) -> tf.Tensor:
  """One input pipeline's part of every global batch, split per replica.

  Args:
    batches: `(steps, global_batch)` example indices.
    shard_index, num_shards: this pipeline (one per worker) and how many.
    replicas_per_shard: replicas this pipeline feeds, in turn.

  Returns:
    `(steps * replicas_per_shard, global_batch / (num_shards *
    replicas_per_shard))` indices: the pipeline's rows in the order its
    replicas take them, so together the replicas see each global batch once.
  """
  steps, global_batch = batches.shape
  per_replica = global_batch // (num_shards * replicas_per_shard)
  mine = tf.reshape(batches, [steps, num_shards, -1])[:, shard_index]
  return tf.reshape(mine, [steps * replicas_per_shard, per_replica])


def check_divisible(batch_size: int, num_replicas: int) -> None:
  """Raises UsageError unless every replica gets an equal part of a batch."""
  if batch_size % num_replicas:
    raise UsageError(f"batch size {batch_size} does not split evenly over "
                     f"{num_replicas} replicas; use a multiple of "
                     f"{num_replicas}")


def split_examples(images: np.ndarray, labels: np.ndarray,
                   validation_examples: int, train_examples: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The command's training examples: a validation split held out first.

  Held out before `train_examples` are picked, so the validation examples
  do not depend on how many are trained on.

  Args:
    images, labels: the whole training split (images may be streamed).
    validation_examples: held out (`validation_split`); 0 none.
    train_examples: a seeded subset of the rest (`subset`); 0 all.
    seed: picks both.

  Returns:
    `(images, labels, held_out)`: the examples trained on, and the indices
    of the validation examples in the training split.
  """
  train, held_out = validation_split(labels, validation_examples, seed)
  if len(held_out):  # (indexing copies: not without a split)
    images, labels = images[train], labels[train]
  images, labels = subset(images, labels, train_examples, seed)
  return images, labels, held_out


def _epoch_numbers(epochs: int | tf.data.Dataset,
                   first_epoch: int) -> tf.data.Dataset:
  """The epochs a training dataset produces, as a dataset of their numbers."""
  if isinstance(epochs, tf.data.Dataset):
    return epochs
  return tf.data.Dataset.range(first_epoch, epochs)


def train_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int,
                  seed: int, epochs: int | tf.data.Dataset,
                  first_epoch: int = 0, *,
                  first_step: int = 0, shard_index: int = 0,
                  num_shards: int = 1,
                  replicas_per_shard: int = 1) -> tf.data.Dataset:
  """Shuffled, batched training data for epochs `first_epoch..epochs-1`.

  The arrays are held once in memory as tensors; each epoch shuffles indices
  and gathers whole batches, which is many times faster than shuffling and
  batching single elements. Under a `tf.distribute` strategy each input
  pipeline takes its own part of every global batch, so the replicas
  together train on exactly the batches one device would.

  Args:
    images: uint8 `(N, H, W, 3)`, or `shards.ShardedImages` to stream from
      disk (`streamed_train_dataset`; `labels` are then the records' own).
    labels: int32 `(N,)`.
    batch_size: the global batch: examples per step over all replicas.
    seed: fixes the order of every epoch.
    epochs: the epoch to stop before; or an int64 dataset of the epoch
      numbers to produce, one after the other (`first_epoch` unused).
    first_epoch: the epoch to start at (non-zero when resuming).
    first_step: the step of `first_epoch` to start at (resuming inside an
      epoch): its earlier batches are left out by index arithmetic, without
      reading their examples. Only with `epochs` a number.
    shard_index, num_shards, replicas_per_shard: see `shard_batches`; from a
      `tf.distribute.InputContext`.

  Returns:
    A dataset of `(images, labels)` batches of one static shape, `N //
    batch_size * replicas_per_shard` per epoch (the first epoch's
    `first_step * replicas_per_shard` fewer).
  """
  check_batch_size(len(images), batch_size)
  check_divisible(batch_size, num_shards * replicas_per_shard)
  if isinstance(images, shards.ShardedImages):
    return streamed_train_dataset(
        images, batch_size, seed, epochs, first_epoch,
        first_step=first_step, shard_index=shard_index, num_shards=num_shards,
        replicas_per_shard=replicas_per_shard)
  images_t = host_tensor(images)
  labels_t = host_tensor(labels)
  num_examples = len(images)
  steps = num_examples // batch_size

  def epoch_batches(epoch):
    # The remainder is dropped so every batch has one static shape (one
    # compiled step); reshaping the order into batches costs one op per epoch
    # where batching index by index cost one per example.
    order = epoch_order(num_examples, seed, epoch)[:steps * batch_size]
    rows = shard_batches(tf.reshape(order, [steps, batch_size]), shard_index,
                         num_shards, replicas_per_shard)
    # A resumed epoch starts at its step: its earlier rows are never read.
    start = tf.where(epoch == first_epoch,
                     tf.constant(first_step * replicas_per_shard, tf.int64),
                     tf.constant(0, tf.int64))
    return tf.data.Dataset.from_tensor_slices(rows[start:])

  ds = _epoch_numbers(epochs, first_epoch).flat_map(epoch_batches)
  ds = ds.map(lambda idx: (tf.gather(images_t, idx), tf.gather(labels_t, idx)),
              num_parallel_calls=tf.data.AUTOTUNE)
  return with_pipeline_options(ds.prefetch(tf.data.AUTOTUNE))


def shuffle_block(block, seed: int, epoch, index):
  """A block of examples in an order drawn from (seed, epoch, index).

  Stateless, like `epoch_order`: no random state is kept, so the order is
  the same in a resumed run and on every worker.

  Args:
    block: a tuple of tensors of one leading length.
    seed, epoch, index: draw the order.

  Returns:
    The tuple, reordered.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), index)
  order = tf.argsort(tf.random.stateless_uniform(
      tf.shape(block[0])[:1], seed=key))
  return tuple(tf.gather(t, order) for t in block)


def streamed_train_dataset(images: shards.ShardedImages, batch_size: int,
                           seed: int, epochs: int | tf.data.Dataset,
                           first_epoch: int = 0, *,
                           first_step: int = 0, shard_index: int = 0,
                           num_shards: int = 1,
                           replicas_per_shard: int = 1) -> tf.data.Dataset:
  """`train_dataset` for images streamed from shard files, not held.

  Each epoch reads the shards in an order drawn from (seed, epoch), eight
  at once, record by record (`interleave`), keeps the examples in
  `images.ids`, and shuffles each block of `images.shuffle_buffer`
  consecutive examples in an order drawn from (seed, epoch, block): the
  order is a function of (seed, epoch), as in memory, but an example only
  meets the examples of its own block. (tf.data's `shuffle` takes no seed
  that varies by epoch when Keras's global seed is 0, and keeps state.)
  Every pipeline of a `tf.distribute` run reads the same stream and takes
  its part of each global batch, so the replicas together train on the
  batches one device would (each worker reads all the data).

  A run resumed at `first_step` leaves out the first epoch's earlier
  examples block by block: the blocks before the step's are read from disk
  but not parsed, shuffled or batched (without a subset or validation split,
  blocks are counted from their sizes; with one, from their ids alone).

  Args:
    images: the examples to train on, on disk.
    batch_size, seed, epochs, first_epoch, first_step, shard_index,
    num_shards, replicas_per_shard: as for `train_dataset`.

  Returns:
    `(images, labels)` batches of one static shape, `len(images) //
    batch_size * replicas_per_shard` per epoch: only memory for the
    buffer and a few batches is used.
  """
  shape = images.image_shape
  files = tf.constant(images.files)
  keep = None
  if not images.is_everything:
    mask = np.zeros(sum(images.counts), bool)
    mask[images.ids] = True
    keep = tf.constant(mask)
  rows = shard_batches(tf.range(batch_size)[None], shard_index, num_shards,
                       replicas_per_shard)

  def block(serialized, index, epoch, drop):
    ids, block_images, block_labels = shards.parse_batch(serialized, shape)
    if keep is not None:
      kept = tf.gather(keep, ids)
      block_images = tf.boolean_mask(block_images, kept)
      block_labels = tf.boolean_mask(block_labels, kept)
    shuffled = shuffle_block((block_images, block_labels), seed, epoch, index)
    return tuple(t[drop:] for t in shuffled)

  def kept_count(serialized):
    """Examples of a block that are trained on, from the ids alone."""
    if keep is None:
      return tf.shape(serialized, out_type=tf.int64)[0]
    ids = tf.io.parse_example(serialized, {
        "id": tf.io.FixedLenFeature([], tf.int64)})["id"]
    return tf.reduce_sum(tf.cast(tf.gather(keep, ids), tf.int64))

  def skip_examples(blocks, skip: int):
    """`(index, serialized, drop)`: blocks wholly before example `skip` left
    out, the first `drop` examples of the one it falls in dropped."""
    def count(before, element):
      index, serialized = element
      size = kept_count(serialized)
      return before + size, (index, serialized, skip - before, size)
    blocks = blocks.scan(tf.constant(0, tf.int64), count)
    blocks = blocks.filter(lambda index, serialized, drop, size: drop < size)
    return blocks.map(lambda index, serialized, drop, size:
                      (index, serialized, tf.maximum(drop, 0)))

  def epoch_batches(epoch, skip: int = 0):
    order = epoch_order(len(images.files), seed, epoch)
    ds = tf.data.Dataset.from_tensor_slices(tf.gather(files, order))
    # Several shards at once, record by record: a block then holds a mix
    # of them; deterministic, so the order is the seed's.
    ds = ds.interleave(tf.data.TFRecordDataset,
                       cycle_length=min(len(images.files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)
    # Blocks, not examples, from here on: one vectorized parse, filter and
    # shuffle per block (per-example tf.data steps cost several times more).
    ds = ds.batch(images.shuffle_buffer).enumerate()
    if skip:
      ds = skip_examples(ds, skip)
    else:
      ds = ds.map(lambda index, serialized: (index, serialized, 0))
    ds = ds.map(lambda index, serialized, drop:
                block(serialized, index, epoch, drop),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.rebatch(batch_size, drop_remainder=True)

  if first_step:  # the first epoch on its own: it starts at a step
    ds = epoch_batches(tf.constant(first_epoch, tf.int64),
                       first_step * batch_size).concatenate(
                           tf.data.Dataset.range(first_epoch + 1, epochs)
                           .flat_map(epoch_batches))
  else:
    ds = _epoch_numbers(epochs, first_epoch).flat_map(epoch_batches)
  if rows.shape[0] > 1 or num_shards > 1:
    # This pipeline's rows of each global batch, one batch per replica: the
    # same parts `shard_batches` gives the in-memory pipeline.
    ds = ds.map(lambda x, y: (tf.gather(x, rows), tf.gather(y, rows)))
    ds = ds.unbatch()
  return with_pipeline_options(ds.prefetch(tf.data.AUTOTUNE))


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                 shard_index: int = 0, num_shards: int = 1,
                 replicas_per_shard: int = 1) -> tf.data.Dataset:
  """Every example exactly once, in full batches, with a weight per example.

  The last batch is padded to full size with weight-0 examples, so evaluation
  compiles one graph for one static shape and the weights keep the padding
  out of every metric. The batches are gathered from the arrays' own memory
  (`host_tensor`), the padding by repeating the last example: no copy of
  the split is made, padded or cached (they held CIFAR-10's 31 MB test set
  twice more; gathering a batch again costs a copy of its bytes, against a
  forward pass over them).

  Args:
    images: uint8 `(N, 32, 32, 3)`.
    labels: int32 `(N,)`.
    batch_size: the global batch.
    shard_index, num_shards, replicas_per_shard: as for `train_dataset`.

  Returns:
    A dataset of `(images, labels, weights)`, weights float32 1 or 0.
  """
  check_divisible(batch_size, num_shards * replicas_per_shard)
  num_examples = len(images)
  padded = -(-num_examples // batch_size) * batch_size
  images_t, labels_t = host_tensor(images), host_tensor(labels)
  order = tf.reshape(tf.range(padded), [-1, batch_size])
  rows = shard_batches(order, shard_index, num_shards, replicas_per_shard)

  def batch(rows):
    real = rows < num_examples
    rows = tf.minimum(rows, num_examples - 1)  # padding: the last, weight 0
    return (tf.gather(images_t, rows), tf.gather(labels_t, rows),
            tf.cast(real, tf.float32))

  ds = tf.data.Dataset.from_tensor_slices(rows).map(
      batch, num_parallel_calls=tf.data.AUTOTUNE)
  return with_pipeline_options(ds.prefetch(tf.data.AUTOTUNE))


def through_data_service(dataset: tf.data.Dataset,
                         address: str) -> tf.data.Dataset:
  """Moves a dataset's processing onto a tf.data service cluster.

  `distributed_epoch` splits the source among the service's workers, so each
  example is produced once per epoch however many workers there are (the
  workers take whole epochs of `train_dataset` at a time; batches of
  different epochs may interleave). No job name: each call is a job of its
  own, so a rerun never joins an old run's job.

  Args:
    dataset: a dataset from this module.
    address: the dispatcher, `grpc://HOST:PORT`.

  Returns:
    The same elements, produced by the service (the client's dataset with
    `with_pipeline_options`: a new dataset starts with the defaults).
  """
  return with_pipeline_options(dataset.apply(
      tf.data.experimental.service.distribute(
          processing_mode="distributed_epoch", service=address)))
