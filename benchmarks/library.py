"""Your own model four ways: plain Keras, Keras on fastcifar's data, fastcifar.

What it measures: the steady-state training images/s and the final test
accuracy of one small ResNet (`build`: BatchNorm, residual adds, 0.3M
parameters), trained the same number of epochs with the same optimizer
(Adam, cosine decay from 2e-3, batch 128) and precision, four ways:
  keras      the plain Keras way, no fastcifar: `tf.data` from the arrays
             (`shuffle`, `batch`, `prefetch`), `RandomFlip` and
             `RandomTranslation` layers in the model, a global
             mixed-precision policy, `model.fit` (Keras's own
             `jit_compile`, `--keras_jit_compile`);
  datasets   `model.fit` on `fastcifar.train_dataset` with
             `fastcifar.layers.FlipAndTranslate` and `Standardize`;
  fit        `fastcifar.fit(build, data, ...)`: fastcifar's own training
             path (skipped while `fastcifar.fit` does not exist);
  command    `python -m fastcifar.train --model=benchmarks.library:build`
             in a process of its own, as a user starts it: the same path
             with the command's start-up, which turns TensorFlow's oneDNN
             kernels on for x86 CPUs where TensorFlow leaves them off
             (`fastcifar.cli.cpu`; `TF_ENABLE_ONEDNN_OPTS` set for this
             benchmark applies to every side). Every record says which
             kernels ran (`onednn`: this process's; the command's own
             for its side).
Steady state: the first epoch (tracing and compiling) is left out; the
images/s are over the epochs after it, timed from each epoch's start to its
end (training steps only: nothing is evaluated between epochs). Accuracy:
the test split, evaluated once after the last epoch.

Conditions: one process (and the command's); the runs alternate in that order
for `--repeats` rounds, so a slow spell of the machine falls on all of them;
the summary takes each side's median and its ratio to keras's. Every
record carries the CPU's name, the library versions and the UTC time.
Data: `--train_examples` training images (a seeded subset) and the whole
test split of `--data_dir`; without it, synthetic images in the same
numbers. `--quick`: 512 + 256 images, 2 epochs, one round.

    python -m benchmarks.library --quick
    python -m benchmarks.library \\
        --data_dir=PATH/cifar-10-python.tar.gz --output=runs/library.jsonl
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

from absl import flags
import keras
import numpy as np
import tensorflow as tf

import fastcifar
from benchmarks import flops, harness
from fastcifar.training import policy
from fastcifar.data import sources
from fastcifar.data.sources import ImageDataset
from fastcifar.errors import UsageError

FLAGS = harness.FLAGS
# In the order each round runs them.
SIDES = ("keras", "datasets", "fit", "command")
LEARNING_RATE = 2e-3  # fastcifar's default recipe's (Adam, cosine decay)
# CIFAR-10's channel statistics (fractions of 255): a builder sees no data.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def resnet(x, num_classes: int, widths: Sequence[int] = (32, 64, 128)):
  """A small ResNet's layers on `x`, standardized float images.

  A 3x3 conv stem, then one residual block per width (two 3x3 convs with
  BatchNorm; the second and third halve the map, their shortcut a strided
  1x1 conv), global average pooling and a float32 softmax. As
  docs/library.md shows it, line for line.

  Args:
    x: the Keras tensor of the standardized images.
    num_classes: the softmax's width.
    widths: channels of the blocks.

  Returns:
    The Keras tensor of the class probabilities.
  """
  L = keras.layers  # pylint: disable=invalid-name

  def conv(x, width, size=3, stride=1):  # BatchNorm follows: no bias
    return L.BatchNormalization()(L.Conv2D(
        width, size, strides=stride, padding="same", use_bias=False)(x))

  x = L.ReLU()(conv(x, widths[0]))
  for i, width in enumerate(widths):
    stride = 1 if i == 0 else 2
    y = conv(L.ReLU()(conv(x, width, stride=stride)), width)
    if stride != 1 or x.shape[-1] != width:
      x = conv(x, width, 1, stride)
    x = L.ReLU()(L.Add()([x, y]))
  x = L.GlobalAveragePooling2D()(x)
  return L.Dense(num_classes, activation="softmax", dtype="float32")(x)


def build(num_classes: int, image_shape: Sequence[int]) -> keras.Model:
  """The ResNet on uint8 images, for `fastcifar.fit` and `--model`.

  fastcifar's step augments; the model standardizes its own input.
  """
  inputs = keras.Input(tuple(image_shape), dtype="uint8")
  x = fastcifar.layers.Standardize(MEAN, STD)(inputs)
  return keras.Model(inputs, resnet(x, num_classes), name="small_resnet")


def build_with_augmentation(num_classes: int, image_shape: Sequence[int],
                            seed: int = 0) -> keras.Model:
  """The ResNet for `model.fit`: fastcifar's augmentation as its first layer.

  Args:
    num_classes, image_shape: as for `build`.
    seed: the augmentation's.

  Returns:
    The model, on uint8 images.
  """
  inputs = keras.Input(tuple(image_shape), dtype="uint8")
  x = fastcifar.layers.FlipAndTranslate(seed)(inputs)
  x = fastcifar.layers.Standardize(MEAN, STD)(x)
  return keras.Model(inputs, resnet(x, num_classes), name="small_resnet")


def build_plain_keras(num_classes: int, image_shape: Sequence[int],
                      seed: int = 0,
                      interpolation: str = "bilinear") -> keras.Model:
  """The ResNet as plain Keras has it: Keras's augmentation and scaling.

  Flips, and shifts of up to 2 px at 32x32 reflected at the borders, as
  fastcifar's augmentation (`fastcifar.augment.flip_and_translate`); but
  by Keras's default (`interpolation="bilinear"`) the shifts are fractions
  of a pixel, interpolated, where fastcifar's are whole pixels ("nearest").
  """
  layers = keras.layers
  inputs = keras.Input(tuple(image_shape))
  x = layers.RandomFlip("horizontal", seed=seed)(inputs)
  x = layers.RandomTranslation(2 / 32, 2 / 32, fill_mode="reflect",
                               interpolation=interpolation, seed=seed)(x)
  x = layers.Rescaling(1 / 255)(x)
  x = layers.Normalization(mean=MEAN, variance=np.square(STD))(x)
  return keras.Model(inputs, resnet(x, num_classes), name="small_resnet")


def compile_for(model: keras.Model, steps: int, jit_compile) -> None:
  """fastcifar's default recipe for a Keras `fit`: Adam, cosine decay."""
  model.compile(
      optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
          LEARNING_RATE, steps)),
      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
      jit_compile=jit_compile)


class EpochClock(keras.callbacks.Callback):
  """Each epoch's wall time, from its start to its end."""

  def __init__(self):
    super().__init__()
    self.seconds: list[float] = []
    self._start = 0.0

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def steady_rate(images_per_epoch: int, seconds: Sequence[float]) -> float:
  """Images/s over the epochs after the first (which compiles)."""
  timed = list(seconds[1:]) or list(seconds)
  return images_per_epoch * len(timed) / sum(timed)


def run_keras(data: ImageDataset, epochs: int, batch_size: int, seed: int,
              precision: str, jit_compile,
              interpolation: str = "bilinear") -> dict:
  """The plain Keras way: tf.data from arrays, Keras's layers, `fit`."""
  keras.utils.set_random_seed(seed)
  steps = len(data.train_images) // batch_size
  train = (tf.data.Dataset.from_tensor_slices((data.train_images,
                                               data.train_labels))
           .shuffle(len(data.train_images), seed=seed)
           .batch(batch_size, drop_remainder=True)
           .prefetch(tf.data.AUTOTUNE))
  test = tf.data.Dataset.from_tensor_slices(
      (data.test_images, data.test_labels)).batch(500)
  with policy.precision_scope(precision):
    model = build_plain_keras(data.num_classes, data.image_shape, seed,
                              interpolation)
  compile_for(model, epochs * steps, jit_compile)
  return _fit_and_evaluate(model, train, test, epochs, steps * batch_size)


def run_datasets(data: ImageDataset, epochs: int, batch_size: int, seed: int,
                 precision: str, jit_compile) -> dict:
  """`model.fit` on fastcifar's datasets and layers."""
  keras.utils.set_random_seed(seed)
  train = fastcifar.train_dataset(data, batch_size, seed)
  with policy.precision_scope(precision):
    model = build_with_augmentation(data.num_classes, data.image_shape, seed)
  steps = int(train.cardinality())
  compile_for(model, epochs * steps, jit_compile)
  return _fit_and_evaluate(model, train, fastcifar.eval_dataset(data),
                           epochs, steps * batch_size)


def run_fit(data: ImageDataset, epochs: int, batch_size: int, seed: int,
            precision: str, jit_compile) -> dict | None:
  """`fastcifar.fit` with the builder; None while there is no such API.

  `jit_compile` is Keras's and not used: fastcifar makes its own choice.
  """
  del jit_compile
  if not hasattr(fastcifar, "fit"):
    return None
  results = fastcifar.fit(build, data, epochs=epochs, batch_size=batch_size,
                          seed=seed, precision=precision,
                          validation_freq=epochs, verbose=0)
  return {"images_per_second": results["images_per_second"],
          "test_accuracy": results["test_accuracy"],
          "jit_compile": results["jit_compile"]}


def run_command(data: ImageDataset, epochs: int, batch_size: int, seed: int,
                precision: str, jit_compile) -> dict:
  """`python -m fastcifar.train --model=benchmarks.library:build` on `data`.

  The run `fit` makes, in a process started as a user starts the command.
  `jit_compile` is not used: fastcifar makes its own choice.
  """
  del jit_compile
  with tempfile.TemporaryDirectory() as workdir:
    path = sources.prepared_path(workdir, data.name)
    sources.save_prepared(data, path)
    output_dir = os.path.join(workdir, "run")
    command = [sys.executable, "-m", "fastcifar.train",
               "--model=benchmarks.library:build", f"--data_dir={path}",
               f"--epochs={epochs}", f"--batch_size={batch_size}",
               f"--seed={seed}", f"--precision={precision}",
               f"--validation_freq={epochs}", f"--output_dir={output_dir}"]
    ran = subprocess.run(command, cwd=harness.ROOT, env=harness.child_env(),
                         capture_output=True, text=True, check=False)
    if ran.returncode:
      raise RuntimeError(f"{' '.join(command[1:])} failed:\n"
                         f"{ran.stderr[-2000:]}")
    with open(os.path.join(output_dir, "results.json")) as f:
      results = json.load(f)
  return {key: results[key] for key in ("images_per_second", "test_accuracy",
                                        "jit_compile", "onednn")}


RUNS: dict[str, Callable[..., dict | None]] = {
    "keras": run_keras, "datasets": run_datasets, "fit": run_fit,
    "command": run_command}


def _fit_and_evaluate(model: keras.Model, train: tf.data.Dataset,
                      test: tf.data.Dataset, epochs: int,
                      images_per_epoch: int) -> dict:
  """Trains `epochs` epochs; steady images/s, then the test accuracy."""
  clock = EpochClock()
  # shuffle=False: both datasets come shuffled; Keras would only warn.
  model.fit(train, epochs=epochs, callbacks=[clock], shuffle=False,
            verbose=0)
  _, accuracy = model.evaluate(test, verbose=0)
  return {"images_per_second": steady_rate(images_per_epoch, clock.seconds),
          "test_accuracy": float(accuracy), "jit_compile": model.jit_compile}


def summarize(records: list[dict]) -> dict:
  """Each side's median images/s and accuracy, and its ratio to keras's."""
  summary = {}
  for side in SIDES:
    runs = [r for r in records if r["side"] == side]
    if runs:
      summary[f"{side}_images_per_second"] = harness.median(
          [r["images_per_second"] for r in runs])
      summary[f"{side}_test_accuracy"] = harness.median(
          [r["test_accuracy"] for r in runs])
  base = summary.get("keras_images_per_second")
  for side in SIDES[1:]:
    if base and f"{side}_images_per_second" in summary:
      summary[f"{side}_ratio_to_keras"] = (
          summary[f"{side}_images_per_second"] / base)
  return summary


def chosen_sides(names: Sequence[str]) -> list[str]:
  """`--sides` in the order of `SIDES`.

  Raises:
    UsageError: a name not in `SIDES`, or none.
  """
  unknown = sorted(set(names) - set(SIDES))
  if unknown or not names:
    raise UsageError(f"--sides={','.join(names)}: choose from "
                     f"{','.join(SIDES)}")
  return [side for side in SIDES if side in names]


def define_flags() -> None:
  flags.DEFINE_integer("epochs", 5, "Epochs per run; the first is warm-up.",
                       lower_bound=2, flag_values=FLAGS)
  flags.DEFINE_integer("train_examples", 10_000,
                       "Training images (a seeded subset); 0: all.",
                       flag_values=FLAGS)
  flags.DEFINE_integer("test_examples", 0, "Test images; 0: all.",
                       flag_values=FLAGS)
  flags.DEFINE_integer("batch_size", 128, "Batch size of every run.",
                       flag_values=FLAGS)
  flags.DEFINE_integer("repeats", 2, "Rounds of the three runs.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_string("precision", "auto",
                      "Every run's precision; auto: fastcifar's choice for "
                      "this device.", flag_values=FLAGS)
  flags.DEFINE_list("sides", list(SIDES), "The ways to run, of "
                    f"{', '.join(SIDES)}; in that order each round.",
                    flag_values=FLAGS)
  flags.DEFINE_enum("keras_interpolation", "bilinear",
                    ["bilinear", "nearest"],
                    "The keras side's RandomTranslation interpolation: "
                    "bilinear (Keras's default: shifts by fractions of a "
                    "pixel) or nearest (whole pixels, as fastcifar's).",
                    flag_values=FLAGS)
  flags.DEFINE_enum("keras_jit_compile", "auto", ["auto", "true", "false"],
                    "The Keras runs' `compile(jit_compile=...)`: auto is "
                    "what a user gets without saying.", flag_values=FLAGS)


def main(argv):
  del argv
  sides = chosen_sides(FLAGS.sides)  # before minutes of loading
  epochs = harness.setting("epochs", 2)
  repeats = harness.setting("repeats", 1)
  data, _ = harness.load_data(
      FLAGS.dataset, FLAGS.data_dir,
      harness.setting("train_examples", 512),
      harness.setting("test_examples", 256), FLAGS.seed)
  precision = policy.resolve_precision(FLAGS.precision)
  jit = {"auto": "auto", "true": True, "false": False}[
      FLAGS.keras_jit_compile]
  report = harness.Report("library", FLAGS.output)
  # The same network every way: its FLOPs per training image, and the
  # device's peak at the precision, put each side's rate against the peak.
  _, training_flops = flops.training_flops_per_image(
      build(data.num_classes, data.image_shape).layers, data.image_shape)
  device_peak = flops.peak(precision)
  records = []
  keras_options = {"interpolation": FLAGS.keras_interpolation}
  for repeat in range(repeats):
    for side in sides:
      result = RUNS[side](data, epochs, FLAGS.batch_size, FLAGS.seed,
                          precision, jit,
                          **(keras_options if side == "keras" else {}))
      if result is None:
        print(f"library: {side} skipped: this fastcifar has no "
              "fastcifar.fit", flush=True)
        continue
      records.append(report.add(
          side=side, round=repeat, epochs=epochs,
          train_examples=len(data.train_images),
          test_examples=len(data.test_images),
          batch_size=FLAGS.batch_size, precision=precision, **result,
          **flops.fraction_fields(result["images_per_second"],
                                  training_flops, device_peak)))
  report.add(side="summary", **summarize(records))
  report.print_table(
      "Your own model: plain Keras, model.fit on fastcifar's data, "
      "fastcifar.fit, fastcifar.train",
      ["side", "round", "images_per_second", "test_accuracy",
       "fraction_of_peak", "precision", "jit_compile", "onednn",
       "datasets_ratio_to_keras", "fit_ratio_to_keras",
       "command_ratio_to_keras"])


if __name__ == "__main__":
  harness.run_main(main, define_flags)
