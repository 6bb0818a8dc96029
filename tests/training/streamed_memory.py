"""test_trainer's streamed-memory run, in a process of its own.

Its peak resident memory (VmHWM) must be its own, so the run needs a
process, not a fresh interpreter: the command server forks it and calls
`run()`, which trains on the shards in `sys.argv[1]` (a warm-up), then on
those in `sys.argv[2]`, and prints its memory and results as JSON.
"""

from __future__ import annotations

import json
import sys

import keras

from fastcifar.data import sources
from fastcifar.models import recipes
from fastcifar.training import trainer


def tiny_model(config, num_classes, mean, std, train_images):
  """One cheap layer: the data path is under test, not a model."""
  del config, mean, std
  return keras.Sequential([
      keras.Input(train_images.shape[1:], dtype="uint8"),
      keras.layers.Rescaling(1 / 255),
      keras.layers.AveragePooling2D(16),
      keras.layers.Flatten(),
      keras.layers.Dense(num_classes, activation="softmax")])


def status(field: str) -> int:
  """A memory figure of /proc/self/status, in bytes."""
  with open("/proc/self/status", encoding="ascii") as f:
    return next(int(line.split()[1]) * 1024 for line in f
                if line.startswith(field + ":"))


def train(folder: str) -> dict:
  """One epoch streamed from the shards in `folder`; the results."""
  data = sources.load_path(folder, cache="disk", shuffle_buffer=256)
  config = trainer.Config(epochs=1, batch_size=64, precision="float32",
                          eval_batch_size=64, augment=False)
  return trainer.train_and_evaluate(config, data, verbose=0)


def run() -> None:
  """Warms up on the small shards, then measures the peak on the big."""
  # This process is the server's fork: patched here, nowhere else.
  recipes.build_model = tiny_model
  trainer.recipes.build_model = tiny_model
  small, big = sys.argv[1:3]
  train(small)  # TensorFlow, the step and the pipeline warmed up
  baseline = status("VmRSS")
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")  # the peak starts again from here
  results = train(big)
  print(json.dumps({"baseline": baseline, "peak": status("VmHWM"),
                    "trained": results["num_train_examples"],
                    "epochs": results["epochs"]}))
