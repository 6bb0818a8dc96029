"""What test_distribute's cluster workers run, forked by the command server.

Each worker of a localhost cluster is a process of its own (a lost worker
is a killed process), but not a fresh interpreter: forked from
`tests.forked.CommandServer`, it skips the ~7 s import. The server calls
`run()`; `sys.argv[1]` names what to run, the rest are its arguments.
TF_CONFIG, set for each worker, names the cluster and its task. The data
service tool, sent SIGTERM, runs here too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import keras
import numpy as np

from fastcifar.data import sources
from fastcifar.training import distribute, trainer
from tests.conftest import halved


class Weights(keras.callbacks.Callback):
  """The weights training ended with."""

  def on_train_end(self, logs=None):
    self.weights = self.model.get_weights()


def alike_and_resumed(output_dir: str) -> None:
  """Test_distribute's two-worker runs; prints what it compares.

  One strategy for both runs: a process makes one.

  Args:
    output_dir: where the runs write their folders.
  """
  # Not at the top: it defines fastcifar.train's flags, which the data
  # service tool's process must not have.
  # pylint: disable-next=g-import-not-at-top
  from tests.training import test_checkpointing as t
  # A temporary folder of this worker's own: the other worker's saves go
  # there, and none may be left, stopped runs' too.
  tempfile.tempdir = tempfile.mkdtemp(dir=output_dir)
  strategy = distribute.make_strategy("multi_worker")

  # 1. Early stopping. 16x16: a quarter of the steps' cost; what is
  # compared is the same.
  data = halved(sources.load_synthetic(num_train=640, num_test=128, seed=1))
  weights = Weights()
  config = trainer.recipe(
      "seed", epochs="auto", max_epochs=6, patience=1, min_delta=0.3,
      validation_examples=128, batch_size=64, precision="float32",
      eval_batch_size=64, optimizer="adam", lr_schedule="cosine")
  results = trainer.train_and_evaluate(config, data, output_dir + "/alike",
                                        strategy=strategy, verbose=0,
                                        callbacks=[weights])
  print(json.dumps([float(sum(np.sum(w, dtype=np.float64)
                              for w in weights.weights)),
                    results["num_replicas"]] + [
      results[k] for k in ("epochs", "best_epoch", "validation_loss",
                           "test_accuracy")]), flush=True)

  # 2. Stopped inside epochs. 16x16, as the one-process tests of
  # MID_EPOCH: a quarter of the steps' cost; the positions and numbers
  # compared are the same.
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))

  def train(path, every, stop=None):
    weights = Weights()
    config = trainer.Config(**{**t.MID_EPOCH, "checkpoint_every": every})
    results = trainer.train_and_evaluate(
        config, data, output_dir + path, strategy=strategy, verbose=0,
        callbacks=[weights, *([t.InterruptAtStep(stop, 8)] if stop else [])])
    return results, weights.weights

  whole = train("/whole", "epoch")
  # 8 steps an epoch, loops of 2, a checkpoint every 3 steps: stopped at
  # step 13 (kept: epoch 2 at step 3), resumed with a checkpoint after
  # every loop.
  try:
    train("/stopped", "3", 13)
  except KeyboardInterrupt:
    pass
  results, weights = train("/stopped", "0.001s")
  assert results["num_replicas"] == 2
  assert (results["resumed_after_epoch"], results["resumed_at_step"]) == (
      1, 3), results
  # At the loop ends inside epochs 2 (steps 5, 7) and 3 (2, 4, 6), and at
  # both epochs' ends.
  assert results["checkpoints_saved"] == 7, results["checkpoints_saved"]
  assert t.comparable(results) == t.comparable(whole[0])
  for a, b in zip(whole[1], weights, strict=True):
    np.testing.assert_array_equal(a, b)
  left = [name for name in os.listdir(tempfile.tempdir)
          if name.startswith("fastcifar-")]  # (autograph's stay)
  assert not left, left
  print("same")


def main_for_each_folder(argv_json: str, *output_dirs: str) -> None:
  """The train command's main, given the cluster's one strategy, run for
  each output folder in turn.

  Args:
    argv_json: the command line (`fastcifar.train` and its flags), as JSON.
    *output_dirs: the `--output_dir` of each run.
  """
  # pylint: disable-next=g-import-not-at-top
  from absl import flags
  from unittest import mock  # pylint: disable=g-import-not-at-top
  from fastcifar import train  # pylint: disable=g-import-not-at-top
  strategy = distribute.make_strategy("multi_worker")
  with mock.patch.object(distribute, "make_strategy", lambda _: strategy):
    for output_dir in output_dirs:
      flags.FLAGS([*json.loads(argv_json), f"--output_dir={output_dir}"])
      assert train.main([]) == 0


def data_service_tool(*args: str) -> None:
  """`python -m tools.data_service ARGS...`, as its `__main__` runs it.

  Args:
    *args: its flags.
  """
  # pylint: disable=g-import-not-at-top
  from absl import app
  from fastcifar.cli import quiet
  from tools import data_service
  # pylint: enable=g-import-not-at-top
  quiet.define_verbose_flag()
  sys.argv = ["tools.data_service", *args]
  app.run(data_service.main)


def run() -> None:
  """Runs what `sys.argv[1]` names with the arguments after it."""
  what = {"alike_and_resumed": alike_and_resumed,
          "main_for_each_folder": main_for_each_folder,
          "data_service_tool": data_service_tool}[sys.argv[1]]
  what(*sys.argv[2:])
