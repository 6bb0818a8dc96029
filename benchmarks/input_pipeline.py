"""Input pipeline alone, no model: images/s each way of feeding delivers.

What it measures, in one process on the same arrays:

  fastcifar  `fastcifar.data.pipeline.train_dataset`, what training uses:
             uint8 images and int32 labels, whole-batch gathers, batch 128.
             The cast, normalization and one-hot run later, on the device,
             inside the training step.
  fastcifar_streamed
             the same function on the same images written as TFRecord
             shards (`tools/prepare_data.py --format=shards`) on local
             disk (`--shards_dir`), as training streams data larger than
             memory (`--cache=disk`): shards read in a seeded order,
             interleaved, parsed, block-shuffled (`--shuffle_buffer`),
             batch 128. Its `prepare_seconds` is the writing of the shards.
  recipe     the textbook recipe's host-side preparation: float32 pixels
             (/255) and `to_categorical` labels, fed the way
             `model.fit(x, y, batch_size=64)` feeds them: by Keras's own
             array adapter, the one `fit` builds, shuffled each epoch. Its
             one-off conversion is reported as `prepare_seconds`.
  naive_map  `from_tensor_slices(uint8).shuffle(N).map(cast, /255, one_hot)`
             per element, then `.batch(128)`: the common tutorial pipeline,
             with a parallel map and prefetch.
  memcpy     the ceiling: `np.copyto` of the bytes fastcifar ships (uint8
             images, int32 labels), on one thread.
  constant_batch
             not a pipeline: one uint8 batch repeated, so no data work at
             all. Its rate is the per-batch cost of tf.data and of taking a
             batch; it shows how much of any gap to the ceiling is that cost.

Each rate is also given as a fraction of the memcpy ceiling. With
`--training_step` (the default) the same run also times fastcifar's training
step at its defaults (`benchmarks.training_throughput.measure_fastcifar`), and
the fastcifar records (in memory and streamed) say how many times over their
pipeline covers what the step consumes (`pipeline_over_training_step`).

Conditions: a pipeline's batches are taken by `next(iterator)` inside a
`tf.function`, as a training step takes them, so Python's per-batch overhead
is not counted; nothing else is done with them. Each pipeline is warmed up
(`--warmup_seconds`: tracing, first shuffle, prefetch buffers) before
`--seconds` of timing; pipelines are measured round-robin `--repeats` times
and the median is reported. Synthetic data unless `--data_dir`.

    python -m benchmarks.input_pipeline --quick
    python -m benchmarks.input_pipeline --output=runs/bench.jsonl
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from absl import flags
import keras
# The recipe's `fit` feeds numpy arrays through this adapter; calling it
# directly measures that very code, not a look-alike. (A Keras internal: if a
# release moves it, this import is the one line to follow it.)
from keras.src.trainers.data_adapters import get_data_adapter
import numpy as np
import tensorflow as tf

from benchmarks import harness, training_throughput
from fastcifar.data import pipeline as fastcifar_pipeline
from fastcifar.data import sources
from fastcifar.training import trainer

FLAGS = harness.FLAGS


def fastcifar_dataset(images: np.ndarray | sources.ShardedImages,
                      labels: np.ndarray, batch_size: int,
                      seed: int) -> tf.data.Dataset:
  """fastcifar's training pipeline, for (practically) endless epochs.

  Streamed when `images` are shards on disk, as training streams them.
  """
  return fastcifar_pipeline.train_dataset(images, labels, batch_size, seed,
                                          epochs=1_000_000)


def write_streamed(images: np.ndarray, labels: np.ndarray, folder: str,
                   shuffle_buffer: int) -> sources.ShardedImages:
  """The training images written as shards in `folder`, to be streamed.

  Written as `tools/prepare_data.py --format=shards` writes them (the test
  split is one placeholder image: only the training stream is measured).
  """
  dataset = sources.ImageDataset("bench", images, labels, images[:1],
                                 labels[:1], tuple(map(str, range(
                                     int(labels.max()) + 1))))
  path = sources.shards_path(folder, "bench")
  sources.write_shards(path, "bench", dataset.class_names,
                       sources.array_chunks(dataset),
                       sources.array_counts(dataset))
  return sources.load_path(path, cache="disk",
                           shuffle_buffer=shuffle_buffer).train_images


def recipe_dataset(x: np.ndarray, y: np.ndarray,
                   batch_size: int) -> tf.data.Dataset:
  """What `model.fit(x, y, batch_size=batch_size)` iterates, epoch after epoch.

  Args:
    x, y: the recipe's float32 images and one-hot labels.
    batch_size: the recipe's 64.

  Returns:
    Keras's dataset for `fit`, repeated (each epoch reshuffles, as in `fit`).
  """
  adapter = get_data_adapter(x, y, batch_size=batch_size, shuffle=True)
  return adapter.get_tf_dataset().repeat()


def naive_map_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int,
                      batch_size: int, seed: int) -> tf.data.Dataset:
  """The tutorial pipeline: per-element cast, scaling, one-hot, on the host."""

  def prepare(image, label):
    return (tf.cast(image, tf.float32) / 255.0,
            tf.one_hot(label, num_classes, dtype=tf.float32))

  ds = tf.data.Dataset.from_tensor_slices((images, labels))
  ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def constant_batch_dataset(images: np.ndarray, labels: np.ndarray,
                           batch_size: int) -> tf.data.Dataset:
  """One batch of fastcifar's shape and dtypes, repeated forever."""
  return tf.data.Dataset.from_tensors(
      (images[:batch_size], labels[:batch_size])).repeat()


def batch_taker(dataset: tf.data.Dataset, batches_per_call: int = 64):
  """A function that takes batches from `dataset` as a training step does.

  Args:
    dataset: an endless dataset whose elements start with the images.
    batches_per_call: batches taken per call, inside one `tf.function`; many,
      so that the cost of calling the function is spread thin.

  Returns:
    `take() -> int`, the number of images it received.
  """
  iterator = iter(dataset)

  @tf.function
  def take_batches():
    # On the host even beside a GPU: this is the pipeline alone, no transfer.
    with tf.device("/cpu:0"):
      count = tf.constant(0, tf.int64)
      for _ in tf.range(batches_per_call):
        images = tf.nest.flatten(next(iterator))[0]
        count += tf.shape(images, out_type=tf.int64)[0]
      return count

  return lambda: int(take_batches())


def memcpy_copier(images: np.ndarray, labels: np.ndarray):
  """A function that copies the arrays into preallocated ones: the ceiling."""
  image_copy = np.empty_like(images)
  label_copy = np.empty_like(labels)

  def copy():
    np.copyto(image_copy, images)
    np.copyto(label_copy, labels)
    return len(images)

  return copy


def measure_pipelines(images: np.ndarray, labels: np.ndarray, num_classes: int,
                      batch_size: int, recipe_batch_size: int, seed: int,
                      warmup_seconds: float, seconds: float,
                      repeats: int, shards_dir: str,
                      shuffle_buffer: int = 10_000) -> list[dict]:
  """Delivery rates of the ways of feeding, measured round-robin.

  Args:
    images, labels: uint8 images and int32 labels.
    num_classes: for the one-hot labels.
    batch_size: of fastcifar's and the naive pipeline.
    recipe_batch_size: of the recipe's `fit`.
    seed: the shuffles.
    warmup_seconds, seconds: warm-up, then timing, per pipeline and repeat.
    repeats: round-robin passes; the median is reported.
    shards_dir: an empty folder on the disk to stream from.
    shuffle_buffer: of the streamed pipeline.

  Returns:
    One dict per pipeline: `pipeline`, `batch_size`, `bytes_per_image`,
    `prepare_seconds`, `images_per_second` (median), `images_per_second_runs`,
    `fraction_of_ceiling`, `megabytes_per_second`.
  """
  image_bytes = int(np.prod(images.shape[1:]))
  candidates = {}  # name -> (work, batch size, bytes per image, prepare s)

  start = time.perf_counter()
  work = batch_taker(fastcifar_dataset(images, labels, batch_size, seed))
  candidates["fastcifar"] = (work, batch_size,
                             image_bytes + labels.itemsize,
                             time.perf_counter() - start)

  start = time.perf_counter()
  streamed = write_streamed(images, labels, shards_dir, shuffle_buffer)
  prepare_seconds = time.perf_counter() - start
  work = batch_taker(fastcifar_dataset(streamed, labels, batch_size, seed))
  candidates["fastcifar_streamed"] = (work, batch_size,
                                      image_bytes + labels.itemsize,
                                      prepare_seconds)

  start = time.perf_counter()
  x = images.astype("float32") / 255.0  # the recipe's own two lines
  y = keras.utils.to_categorical(labels, num_classes)
  work = batch_taker(recipe_dataset(x, y, recipe_batch_size))
  candidates["recipe"] = (work, recipe_batch_size,
                          x[0].nbytes + y[0].nbytes,
                          time.perf_counter() - start)

  start = time.perf_counter()
  work = batch_taker(naive_map_dataset(images, labels, num_classes,
                                       batch_size, seed))
  candidates["naive_map"] = (work, batch_size,
                             4 * image_bytes + 4 * num_classes,
                             time.perf_counter() - start)

  candidates["memcpy"] = (memcpy_copier(images, labels), None,
                          image_bytes + labels.itemsize, 0.0)
  candidates["constant_batch"] = (
      batch_taker(constant_batch_dataset(images, labels, batch_size)),
      batch_size, image_bytes + labels.itemsize, 0.0)

  runs = {name: [] for name in candidates}
  for _ in range(repeats):
    for name, (work, *_) in candidates.items():
      runs[name].append(harness.timed_rate(work, warmup_seconds, seconds))
  ceiling = harness.median(runs["memcpy"])
  results = []
  for name, (_, size, bytes_per_image, prepare_seconds) in candidates.items():
    rate = harness.median(runs[name])
    results.append({
        "pipeline": name, "batch_size": size,
        "bytes_per_image": bytes_per_image,
        "prepare_seconds": prepare_seconds,
        "images_per_second": rate, "images_per_second_runs": runs[name],
        "fraction_of_ceiling": rate / ceiling,
        "megabytes_per_second": rate * bytes_per_image / 1e6,
    })
  return results


def define_flags() -> None:
  flags.DEFINE_integer("train_examples", 0, "Training images fed; 0: all "
                       "(50,000 synthetic). --quick: 5000.", lower_bound=0,
                       flag_values=FLAGS)
  flags.DEFINE_integer("batch_size", 128, "Batch size of fastcifar's and the "
                       "naive pipeline.", lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("recipe_batch_size", 64, "Batch size of the recipe's "
                       "fit.", lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_float("warmup_seconds", 2.0, "Warm-up per pipeline and repeat. "
                     "--quick: 0.3.", lower_bound=0, flag_values=FLAGS)
  flags.DEFINE_float("seconds", 10.0, "Timing per pipeline and repeat. "
                     "--quick: 1.5.", lower_bound=0, flag_values=FLAGS)
  flags.DEFINE_integer("repeats", 3, "Round-robin passes; the median is "
                       "reported. --quick: 1.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_boolean("training_step", True, "Also time fastcifar's training "
                       "step at its defaults, for pipeline_over_training_step.",
                       flag_values=FLAGS)
  flags.DEFINE_integer("step_warmup_steps", 20, "Training steps left out "
                       "before timing. --quick: 3.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_string("shards_dir", None, "Where fastcifar_streamed writes "
                      "its shards (removed afterwards); a local disk. "
                      "Default: a temporary folder.", flag_values=FLAGS)
  flags.DEFINE_integer("shuffle_buffer", 10_000, "fastcifar_streamed's "
                       "shuffle buffer, in examples.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_integer("step_steps", 100, "Training steps timed. --quick: 6.",
                       lower_bound=1, flag_values=FLAGS)


def main(argv):
  del argv
  train_examples = harness.setting("train_examples", 5000)
  warmup_seconds = harness.setting("warmup_seconds", 0.3)
  seconds = harness.setting("seconds", 1.5)
  repeats = harness.setting("repeats", 1)
  step_warmup = harness.setting("step_warmup_steps", 3)
  step_steps = harness.setting("step_steps", 6)
  # The test split only serves the training step's closing validation pass.
  dataset, load_seconds = harness.load_data(
      FLAGS.dataset, FLAGS.data_dir, train_examples, test_examples=500,
      seed=FLAGS.seed)
  report = harness.Report("input_pipeline", FLAGS.output)
  if FLAGS.shards_dir:
    os.makedirs(FLAGS.shards_dir, exist_ok=True)
  shards_dir = tempfile.mkdtemp(prefix="fastcifar-bench-",
                                dir=FLAGS.shards_dir)
  try:
    results = measure_pipelines(
        dataset.train_images, dataset.train_labels, dataset.num_classes,
        FLAGS.batch_size, FLAGS.recipe_batch_size, FLAGS.seed,
        warmup_seconds, seconds, repeats, shards_dir, FLAGS.shuffle_buffer)
  finally:
    shutil.rmtree(shards_dir, ignore_errors=True)

  step = None
  if FLAGS.training_step:
    step = training_throughput.measure_fastcifar(
        dataset, trainer.Config(seed=FLAGS.seed), step_warmup, step_steps)
  common = {"measurement": "input_pipeline", "dataset": dataset.name,
            "num_train_examples": len(dataset.train_images),
            "load_seconds": load_seconds}
  for result in results:
    if step and result["pipeline"] in ("fastcifar", "fastcifar_streamed"):
      result["pipeline_over_training_step"] = (
          result["images_per_second"] / step["images_per_second"])
    report.add(**common, **result)
  if step:
    report.add(**common, pipeline="fastcifar_training_step",
               batch_size=trainer.Config.batch_size,
               images_per_second=step["images_per_second"],
               precision=step["precision"], jit_compile=step["jit_compile"],
               steps_timed=step["steps_timed"], warmup_steps=step_warmup)
  report.print_table(
      "Input pipeline alone (images/s delivered)",
      ["pipeline", "batch_size", "bytes_per_image", "images_per_second",
       "fraction_of_ceiling", "megabytes_per_second",
       "pipeline_over_training_step"])


if __name__ == "__main__":
  harness.run_main(main, define_flags)
