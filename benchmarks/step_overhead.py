"""Step overhead: what a training step costs beyond its arithmetic.

What it measures, in one process, on whatever device is present:

  Per-step time of a model so small that the framework's own cost dominates
  (uint8 input, /255, global average pooling and one dense softmax layer;
  batch `--tiny_batch_size`, 64), trained by:

    fastcifar       `train_and_evaluate` at `--steps_per_loop=1` and `auto`
                    (its defaults otherwise: on-device augmentation, the
                    precision `auto` picks), and at `auto` without
                    augmentation;
    keras_fit       `model.fit` with `steps_per_execution` 1 and 64, on the
                    same uint8 batches from a `tf.data` pipeline (no
                    augmentation: Keras has none of its own);
    bare_tf_function  one `tf.function` running `--loop_steps` steps in a
                    `tf.range` loop: `next(iterator)`, forward, gradient,
                    `optimizer.apply`; no strategy, metrics or callbacks.
                    The floor for TensorFlow on this device.

  Images/s of the seed CNN at batch `--cnn_batch_size` (8), no augmentation
  either side, both at one precision (`--precision`; auto: fastcifar's
  choice for the device, given to Keras's model too): fastcifar at its
  default `--steps_per_loop` against Keras `fit(steps_per_execution=64)`
  (the recipe's model and float pixels, as the recipe feeds them).

Conditions: fastcifar's tiny model enters through `recipes.build_model` (the
training loop knows no model by name), the rest of the run is the path users
run. Each configuration trains `--warmup_steps` untimed steps (tracing,
compilation, first-call set-up), then `--steps` timed, both rounded up to
whole loops (Python hears of steps only at a loop's or an execution's end:
`harness.BatchClock`); configurations are measured round-robin `--repeats`
times and the median is reported, so a slow spell on a shared machine does
not fall on one configuration only. Synthetic data unless `--data_dir`:
speed does not depend on the pixels.

    python -m benchmarks.step_overhead --quick
    python -m benchmarks.step_overhead --output=runs/bench.jsonl
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from unittest import mock

from absl import flags
import keras
import tensorflow as tf

from benchmarks import harness, training_throughput
from fastcifar.models import recipes
from fastcifar.training import policy, trainer
from fastcifar.models import seed_cnn_layers
from fastcifar.data.sources import ImageDataset

FLAGS = harness.FLAGS
KERAS_BEST_STEPS_PER_EXECUTION = 64


def tiny_model(num_classes: int, image_shape) -> keras.Sequential:
  """Global average pooling and one dense layer, on uint8 images."""
  return keras.Sequential([
      keras.Input(image_shape, dtype="uint8"),
      keras.layers.Rescaling(1 / 255),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(num_classes, activation="softmax", dtype="float32")])


def _uint8_batches(dataset: ImageDataset, batch_size: int,
                   one_hot: bool) -> tf.data.Dataset:
  labels = dataset.train_labels
  if one_hot:
    labels = keras.utils.to_categorical(labels, dataset.num_classes)
  return (tf.data.Dataset.from_tensor_slices((dataset.train_images, labels))
          .repeat().batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def measure_fastcifar(dataset: ImageDataset, config: trainer.Config,
                      warmup_steps: int, steps: int, tiny: bool) -> dict:
  """Seconds per step of `train_and_evaluate` (the tiny model if `tiny`)."""

  def build_tiny(config, num_classes, mean, std, train_images):
    del config, mean, std
    return tiny_model(num_classes, train_images.shape[1:])

  with (mock.patch.object(recipes, "build_model", build_tiny) if tiny
        else contextlib.nullcontext()):
    measured = training_throughput.measure_fastcifar(dataset, config,
                                                     warmup_steps, steps)
  rate = measured.pop("images_per_second")
  return {"seconds_per_step": config.batch_size / rate, **measured}


def measure_keras_fit(model: keras.Model, data: tf.data.Dataset,
                      steps_per_execution: int, warmup_steps: int,
                      steps: int) -> dict:
  """Seconds per step of `model.fit` over `data`, one epoch."""
  warmup_steps, steps = harness.whole_calls(warmup_steps, steps,
                                            steps_per_execution)
  model.compile(optimizer="adam", loss="categorical_crossentropy",
                metrics=["accuracy"], steps_per_execution=steps_per_execution)
  clock = harness.BatchClock()
  # shuffle=False: a tf.data.Dataset is fed in its own order (Keras warns
  # that its default, True, is ignored).
  model.fit(data, epochs=1, steps_per_epoch=warmup_steps + steps, verbose=0,
            callbacks=[clock], shuffle=False)
  return {"seconds_per_step": clock.seconds_per_step(warmup_steps),
          "steps_timed": clock.steps_timed(warmup_steps),
          "steps_per_loop": steps_per_execution,
          "jit_compile": bool(model.jit_compile)}


def measure_bare(model: keras.Model, data: tf.data.Dataset, loop_steps: int,
                 warmup_steps: int, steps: int) -> dict:
  """Seconds per step of a bare `tf.function` loop of `loop_steps` steps."""
  optimizer = keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  iterator = iter(data)

  @tf.function
  def loop(num_steps):
    loss = tf.constant(0.0)
    for _ in tf.range(num_steps):
      images, targets = next(iterator)
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
            targets, model(images, training=True)))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply(grads, model.trainable_variables)
    return loss

  num_steps = tf.constant(loop_steps)
  calls = [n // loop_steps
           for n in harness.whole_calls(warmup_steps, steps, loop_steps)]
  for _ in range(calls[0]):
    float(loop(num_steps))
  start = time.perf_counter()
  for _ in range(calls[1]):
    float(loop(num_steps))
  return {"seconds_per_step": (time.perf_counter() - start)
                              / (calls[1] * loop_steps),
          "steps_timed": calls[1] * loop_steps, "steps_per_loop": loop_steps,
          "jit_compile": False}


@dataclasses.dataclass(frozen=True)
class Configuration:
  """One row: who trains which model how."""

  part: str  # "tiny" (per-step time) or "seed_cnn" (images/s)
  system: str  # fastcifar, keras_fit, bare_tf_function
  steps_per_loop: str  # as given: a number or auto
  augment: bool
  batch_size: int


def configurations(tiny_batch: int, cnn_batch: int) -> list[Configuration]:
  spe = str(KERAS_BEST_STEPS_PER_EXECUTION)
  return [
      Configuration("tiny", "fastcifar", "1", True, tiny_batch),
      Configuration("tiny", "fastcifar", "auto", True, tiny_batch),
      Configuration("tiny", "fastcifar", "auto", False, tiny_batch),
      Configuration("tiny", "keras_fit", "1", False, tiny_batch),
      Configuration("tiny", "keras_fit", spe, False, tiny_batch),
      Configuration("tiny", "bare_tf_function", spe, False, tiny_batch),
      Configuration("seed_cnn", "fastcifar", "auto", False, cnn_batch),
      Configuration("seed_cnn", "keras_fit", spe, False, cnn_batch),
  ]


def _rounded_steps(c: Configuration, warmup_steps: int,
                   steps: int) -> tuple[int, int]:
  """The warm-up and timed steps `c` runs: whole loops (or executions)."""
  if c.system == "fastcifar":
    return harness.whole_loops(
        trainer.Config(batch_size=c.batch_size,
                        steps_per_loop=_loop_setting(c)), warmup_steps, steps)
  return harness.whole_calls(warmup_steps, steps, int(c.steps_per_loop))


def _loop_setting(c: Configuration) -> int | str:
  return "auto" if c.steps_per_loop == "auto" else int(c.steps_per_loop)


def examples_needed(configs: list[Configuration], warmup_steps: int,
                    steps: int) -> int:
  """Training images for the longest run: one epoch, no example twice."""
  return max(c.batch_size * sum(_rounded_steps(c, warmup_steps, steps))
             for c in configs)


def measure(c: Configuration, dataset: ImageDataset, precision: str,
            warmup_steps: int, steps: int, seed: int) -> dict:
  """One configuration, once."""
  keras.backend.clear_session()  # one model's graphs at a time
  if c.system == "fastcifar":
    config = trainer.recipe(
        "seed", batch_size=c.batch_size, augment=c.augment, seed=seed,
        precision=precision, eval_batch_size=64,
        steps_per_loop=_loop_setting(c))
    return measure_fastcifar(dataset, config, warmup_steps, steps,
                             tiny=c.part == "tiny")
  keras.utils.set_random_seed(seed)
  with policy.precision_scope(policy.resolve_precision(precision)):
    if c.part == "tiny":
      model = tiny_model(dataset.num_classes, dataset.image_shape)
      data = _uint8_batches(dataset, c.batch_size, one_hot=True)
    else:  # the seed CNN as fastcifar builds it (the two differ only in
      # their loops), fed as the recipe feeds it: float pixels from the host
      model = keras.Sequential([keras.Input(dataset.image_shape),
                                *seed_cnn_layers(dataset.num_classes)])
      data = _uint8_batches(dataset, c.batch_size, one_hot=True).map(
          lambda x, y: (tf.cast(x, tf.float32) / 255, y))
  if c.system == "bare_tf_function":
    return measure_bare(model, data, int(c.steps_per_loop), warmup_steps,
                        steps)
  return measure_keras_fit(model, data, int(c.steps_per_loop), warmup_steps,
                           steps)


def run(dataset: ImageDataset, precision: str, tiny_batch: int,
        cnn_batch: int, warmup_steps: int, steps: int, repeats: int,
        seed: int, report: harness.Report) -> None:
  """Measures every configuration round-robin; one record each."""
  configs = configurations(tiny_batch, cnn_batch)
  times = {c: [] for c in configs}
  facts = {}
  for _ in range(repeats):
    for c in configs:
      measured = measure(c, dataset, precision, warmup_steps, steps, seed)
      times[c].append(measured.pop("seconds_per_step"))
      facts[c] = measured
  precision_used = policy.resolve_precision(precision)
  for part in ("tiny", "seed_cnn"):
    rows = [c for c in configs if c.part == part]
    keras_best = min(harness.median(times[c]) for c in rows
                     if c.system == "keras_fit")
    for c in rows:
      seconds = harness.median(times[c])
      report.add(
          measurement="step_overhead", part=part, system=c.system,
          model="tiny" if part == "tiny" else "seed",
          steps_per_loop_setting=c.steps_per_loop, augment=c.augment,
          batch_size=c.batch_size, milliseconds_per_step=1000 * seconds,
          milliseconds_per_step_runs=[1000 * t for t in times[c]],
          images_per_second=c.batch_size / seconds,
          ratio_to_keras_best=keras_best / seconds,
          **{"precision": precision_used, **facts[c]})


def define_flags() -> None:
  flags.DEFINE_string("precision", "auto", "Precision for both sides "
                      "(a policy name, or auto: fastcifar's for the device).",
                      flag_values=FLAGS)
  flags.DEFINE_integer("tiny_batch_size", 64, "The tiny model's batch.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("cnn_batch_size", 8, "The seed CNN's batch.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("warmup_steps", 128, "Steps left out before timing "
                       "(rounded up to whole loops). --quick: 1.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("steps", 640, "Steps timed per run (rounded up to "
                       "whole loops; one epoch holds them all, so the tiny "
                       "model's 768 at batch 64 take 49,152 synthetic "
                       "images). --quick: 1.", lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("repeats", 3, "Round-robin passes; the median is "
                       "reported. --quick: 1.", lower_bound=1,
                       flag_values=FLAGS)


def main(argv):
  del argv
  warmup_steps = harness.setting("warmup_steps", 1)
  steps = harness.setting("steps", 1)
  repeats = harness.setting("repeats", 1)
  dataset, _ = harness.load_data(
      FLAGS.dataset, FLAGS.data_dir, test_examples=64, seed=FLAGS.seed,
      train_examples=examples_needed(
          configurations(FLAGS.tiny_batch_size, FLAGS.cnn_batch_size),
          warmup_steps, steps))
  report = harness.Report("step_overhead", FLAGS.output)
  run(dataset, FLAGS.precision, FLAGS.tiny_batch_size, FLAGS.cnn_batch_size,
      warmup_steps, steps, repeats, FLAGS.seed, report)
  report.print_table(
      "Step overhead (tiny model: ms per step; seed CNN: images/s)",
      ["part", "system", "steps_per_loop_setting", "steps_per_loop",
       "augment", "batch_size", "precision", "milliseconds_per_step",
       "images_per_second", "ratio_to_keras_best"])


if __name__ == "__main__":
  harness.run_main(main, define_flags)
