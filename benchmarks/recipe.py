"""The textbook Keras CIFAR-10 recipe, verbatim: the baseline fastcifar is measured against.

Pixels scaled to 0-1 as float32 numpy arrays on the host, labels one-hot with
`to_categorical`, the 4-conv Sequential CNN, Adam at its default rate,
`categorical_crossentropy`, `model.fit(batch_size=64)` for 20 epochs with the
test set as validation data, float32 throughout.

    python -m benchmarks.recipe --data_dir=../shared/data/cifar10-jpg.tar.gz
"""

from __future__ import annotations

import time

from absl import app, flags
import keras
import numpy as np

from benchmarks import environment
from fastcifar import sources
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
               batch_size: int = 64, verbose: int = 2) -> dict:
  """Trains the recipe verbatim and reports its history and timings.

  Args:
    dataset: the data, as uint8 arrays (converted here, as the recipe does).
    epochs, batch_size: the recipe's 20 and 64 by default.
    verbose: Keras `fit` verbosity.

  Returns:
    `history` (per-epoch metrics), `epoch_end_seconds` (wall time since the
    start of preparation), `prepare_seconds` and the final test accuracy.
  """
  start = time.perf_counter()
  x_train = dataset.train_images.astype("float32") / 255.0
  x_test = dataset.test_images.astype("float32") / 255.0
  y_train = keras.utils.to_categorical(dataset.train_labels, dataset.num_classes)
  y_test = keras.utils.to_categorical(dataset.test_labels, dataset.num_classes)
  model = keras.Sequential([keras.Input(sources.IMAGE_SHAPE),
                            *seed_cnn_layers(dataset.num_classes)])
  model.compile(optimizer="adam", loss="categorical_crossentropy",
                metrics=["accuracy"])
  prepare_seconds = time.perf_counter() - start
  clock = EpochClock(start)
  history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                      validation_data=(x_test, y_test), verbose=verbose,
                      callbacks=[clock])
  return {
      "history": {k: [float(v) for v in vs]
                  for k, vs in history.history.items()},
      "epoch_end_seconds": clock.epoch_end_seconds,
      "prepare_seconds": prepare_seconds,
      "test_accuracy": float(history.history["val_accuracy"][-1]),
  }


_DATA_DIR = flags.DEFINE_string("data_dir", None, "CIFAR data; see fastcifar.sources.")
_DATASET = flags.DEFINE_enum("dataset", "cifar10", sources.DATASETS, "Dataset.")
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Epochs.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Append the JSON record here.")


def main(argv):
  del argv
  start = time.perf_counter()
  dataset = sources.load(_DATASET.value, _DATA_DIR.value)
  load_seconds = time.perf_counter() - start
  result = run_recipe(dataset, epochs=_EPOCHS.value)
  result.update(environment.environment(), benchmark="recipe",
                load_seconds=load_seconds,
                process_seconds=time.perf_counter() - start,
                dataset=dataset.name, epochs=_EPOCHS.value)
  environment.emit(result, _OUTPUT.value)


if __name__ == "__main__":
  app.run(main)
