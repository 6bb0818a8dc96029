"""A mirrored run stopped inside an epoch and resumed: `mirrored_resume DIR`.

A command for `tests.forked.CommandServer` (test_checkpointing's): logical
devices are set before a process's TensorFlow runtime starts, so on two
logical CPUs of its own it trains MID_EPOCH for 2 epochs in DIR/whole, and
in DIR/stopped stopped at step 13 and resumed; prints "same" when both end
bit for bit alike.
"""

from __future__ import annotations

import sys

import tensorflow as tf


def run() -> None:
  """Trains both runs in sys.argv[1]; an AssertionError if they differ."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  # pylint: disable=g-import-not-at-top
  from fastcifar.data import sources
  from fastcifar.training import trainer
  from tests.conftest import halved
  from tests.training import test_checkpointing as t
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  config = trainer.Config(**{**t.MID_EPOCH, "epochs": 2})
  whole = t.train_stopped_at(config, data, sys.argv[1] + "/whole", [],
                             strategy=strategy)
  stopped = t.train_stopped_at(config, data, sys.argv[1] + "/stopped", [13],
                               strategy=strategy)
  assert whole[0]["num_replicas"] == 2
  assert "resuming at epoch 2, step 3 " in stopped[2], stopped[2]
  t.assert_same_run(whole, stopped)
  print("same")
