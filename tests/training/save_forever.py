"""Checkpoints a model again and again until killed: `save_forever FOLDER`.

A command for `tests.forked.CommandServer` (test_checkpointing's kill
mid-save): it resumes from FOLDER's checkpoint, says "saving", then saves
epoch after epoch, every weight and the state saying its epoch.
"""

from __future__ import annotations

import sys

import keras

from fastcifar.training import checkpointing

SETTINGS = {"a": 1}


def model() -> keras.Model:
  """The model saved: 1,001,000 weights, so that a save takes a while."""
  built = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(1000)])
  built.compile(optimizer="adam", loss="mse")
  built.optimizer.build(built.trainable_variables)
  return built


def run() -> None:
  """Saves into sys.argv[1] until killed."""
  saved = model()
  saver = checkpointing.RunCheckpoint(saved, sys.argv[1], SETTINGS)
  epoch = saver.restore().epoch
  print("saving", flush=True)
  while True:
    epoch += 1
    for v in saved.trainable_variables:  # every weight says its epoch
      v.assign(keras.ops.full(v.shape, float(epoch)))
    saver.save(checkpointing.State(epoch=epoch, step=epoch % 7,
                                   history={"epoch": [epoch]}))
