"""The textbook Keras CIFAR-10 recipe, verbatim: fastcifar's baseline.

Pixels scaled to 0-1 as float32 numpy arrays on the host, labels one-hot with
`to_categorical`, the 4-conv Sequential CNN, Adam at its default rate,
`categorical_crossentropy`, `model.fit(batch_size=64)` for 20 epochs with the
test set as validation data, float32 throughout.

    python -m benchmarks.recipe --data_dir=PATH/cifar-10-python.tar.gz

Its flags are defined only when it runs (`harness.run_main`), so the other
benchmarks import `run_recipe` without inheriting them.
"""

from __future__ import annotations

import time
from typing import Sequence

from absl import flags
import keras

from benchmarks import environment, harness
from fastcifar.cli import quiet
from fastcifar.data import sources
from fastcifar.models import seed_cnn_layers


class EpochClock(keras.callbacks.Callback):
  """Records wall time since training began at the end of each epoch."""

  def __init__(self, start: float):
    super().__init__()
    self.start = start
    self.epoch_end_seconds: list[float] = []

  def on_epoch_end(self, epoch, logs=None):
    self.epoch_end_seconds.append(time.perf_counter() - self.start)


def run_recipe(dataset: sources.ImageDataset, epochs: int = 20,
               batch_size: int = 64, verbose: int = 2,
               callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
  """Trains the recipe verbatim and reports its history and timings.

  Args:
    dataset: the data, as uint8 arrays (converted here, as the recipe does).
    epochs, batch_size: the recipe's 20 and 64 by default.
    verbose: Keras `fit` verbosity.
    callbacks: more Keras callbacks for `fit`, e.g. the benchmarks' clocks;
      one may end training early with `model.stop_training`.

  Returns:
    `history` (per-epoch metrics), `epoch_end_seconds` (wall time since the
    start of preparation), `prepare_seconds`, the final test accuracy and
    `jit_compile` (what Keras's `auto` chose: XLA on GPUs, not on CPUs).
  """
  start = time.perf_counter()
  x_train = dataset.train_images.astype("float32") / 255.0
  x_test = dataset.test_images.astype("float32") / 255.0
  y_train = keras.utils.to_categorical(dataset.train_labels,
                                       dataset.num_classes)
  y_test = keras.utils.to_categorical(dataset.test_labels, dataset.num_classes)
  model = keras.Sequential([keras.Input(dataset.image_shape),
                            *seed_cnn_layers(dataset.num_classes,
                                             dropout=keras.layers.Dropout)])
  model.compile(optimizer="adam", loss="categorical_crossentropy",
                metrics=["accuracy"])
  prepare_seconds = time.perf_counter() - start
  clock = EpochClock(start)
  history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                      validation_data=(x_test, y_test), verbose=verbose,
                      callbacks=[clock, *callbacks])
  return {
      "history": {k: [float(v) for v in vs]
                  for k, vs in history.history.items()},
      "epoch_end_seconds": clock.epoch_end_seconds,
      "prepare_seconds": prepare_seconds,
      "test_accuracy": float(history.history["val_accuracy"][-1]),
      "jit_compile": bool(model.jit_compile),
  }


FLAGS = harness.FLAGS


def define_flags() -> None:
  """The recipe's command-line flags (not the other benchmarks' common
  ones: it takes neither a seed nor --quick)."""
  flags.DEFINE_string("data_dir", None,
                      "CIFAR data; see fastcifar.data.sources.",
                      flag_values=FLAGS)
  flags.DEFINE_enum("dataset", "cifar10", sources.DATASETS, "Dataset.",
                    flag_values=FLAGS)
  flags.DEFINE_integer("epochs", 20, "Epochs.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_string("output", None, "Append the JSON record here.",
                      flag_values=FLAGS)
  quiet.define_verbose_flag(FLAGS)


def main(argv):
  del argv
  flag_values = {name: FLAGS[name].value
                 for name in ("data_dir", "dataset", "epochs", "output")}
  start = time.perf_counter()
  dataset = sources.load(flag_values["dataset"], flag_values["data_dir"])
  load_seconds = time.perf_counter() - start
  result = run_recipe(dataset, epochs=flag_values["epochs"])
  result.update(environment.environment(), benchmark="recipe",
                load_seconds=load_seconds,
                process_seconds=time.perf_counter() - start,
                dataset=dataset.name, epochs=flag_values["epochs"],
                flags=flag_values)
  environment.emit(result, flag_values["output"])


if __name__ == "__main__":
  harness.run_main(main, define_flags, common=False)
