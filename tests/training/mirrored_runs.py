"""test_trainer's mirrored runs, in a process with 4 logical CPUs.

Logical devices can be set only before TensorFlow initialises them, which
the tests' own process has done: the runs need a process of their own, but
not a fresh interpreter. The command server forks it (its TensorFlow,
imported, has initialised no device) and calls `run()`, which prints what
the runs found as JSON on its last line; `sys.argv[1]` is the output
folder of the run that saves its model. One process serves every run (a
TensorFlow runtime's start is seconds of the suite's time); each strategy
uses the first N devices.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tensorflow as tf

DEVICES = 4


def mirrored(replicas: int) -> tf.distribute.MirroredStrategy:
  """A strategy over the first `replicas` logical CPUs."""
  # Strategies over different devices in one process need collective keys
  # apart (TensorFlow's hook for tests).
  # pylint: disable-next=protected-access
  tf.distribute.MirroredStrategy._collective_key_base += 1000
  return tf.distribute.MirroredStrategy(
      [f"/cpu:{i}" for i in range(replicas)])


def run() -> None:
  """Trains over 1, 2, 3 and 4 replicas; prints what it found."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
  # pylint: disable=g-import-not-at-top
  import keras
  import fastcifar
  from fastcifar import models
  from fastcifar.data import pipeline, sources
  from fastcifar.training import distribute, evaluation, trainer
  from tests.conftest import halved
  # pylint: enable=g-import-not-at-top
  found = {}

  # One device against two: a model with nothing random in it (no dropout,
  # no BatchNorm) and no augmentation sees the same global batches, so
  # both runs are the same run up to the order of the replicas' sums. (The
  # seed model's accuracies after 3 epochs differed by their dropout draws
  # alone, 0.36 to 0.86 over config seeds, 2026-12-07: a loose check that
  # took 5 epochs to be reliable.) The seed model runs over 4 below.
  def build(num_classes, image_shape):
    return keras.Sequential([
        keras.Input(image_shape, dtype="uint8"),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(num_classes, activation="softmax")])

  data = halved(sources.load_synthetic(num_train=512, num_test=100, seed=1))
  settings = dict(epochs=3, batch_size=64, learning_rate=0.003,
                  precision="float32", augment=False, eval_batch_size=50,
                  verbose=0, preflight=False, tensorboard=False)
  one = fastcifar.fit(build, data, strategy="one_device", **settings)
  strategy = mirrored(2)
  two = fastcifar.fit(build, data, strategy=strategy, **settings)
  # Two replicas are fed through tf.distribute's own input.
  fed = distribute.distribute(strategy, lambda **shard: (
      pipeline.eval_dataset(data.test_images, data.test_labels, 100,
                            **shard)), 100)
  found["one_and_two"] = [
      [one["num_replicas"], one["test_loss"], one["test_accuracy"]],
      [two["num_replicas"], two["test_loss"], two["test_accuracy"]],
      isinstance(fed, tf.data.Dataset)]

  # Over 3 and 4: 16x16 and no augmentation (an XLA program compiled for
  # each replica; augmenting under a mirrored strategy is the runs' above
  # and test_checkpointing's).
  data = halved(sources.load_synthetic(num_train=192, num_test=300, seed=1))
  results = trainer.train_and_evaluate(
      trainer.Config(epochs=1, batch_size=48, precision="float32",
                     augment=False),
      data, strategy=mirrored(4), verbose=0)
  found["4"] = [results["num_replicas"], results["test_loss"]]

  strategy = mirrored(3)

  class BatchNormStats(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
      found["stats"] = [
          [v.numpy().tolist()
           for v in strategy.experimental_local_results(w.value)]
          for w in self.model.non_trainable_weights
          if w.name.startswith("moving_")]

  config = trainer.recipe("fast", epochs=1, batch_size=48,
                          precision="float32", tta=False, augment=False)
  results = trainer.train_and_evaluate(
      config, data, sys.argv[1], strategy=strategy, verbose=0,
      callbacks=[BatchNormStats()])
  saved = models.load_saved(sys.argv[1] + "/model.keras")
  predictions = evaluation.predict_classes(saved, data.test_images)
  found["3"] = [results["num_replicas"], results["test_loss"]]
  found["accuracies"] = [results["test_accuracy"],
                         float(np.mean(predictions == data.test_labels))]
  print(json.dumps(found))
