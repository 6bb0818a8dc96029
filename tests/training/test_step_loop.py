"""Tests of the on-device step loop, with a toy step."""

from __future__ import annotations

import pytest
import tensorflow as tf

from fastcifar.training import distribute, step_loop


@pytest.mark.parametrize("setting,device,expected", [
    ("auto", "CPU", 16),  # 4096 examples at batch 128: 32, an epoch is 16
    ("auto", "GPU", 16), ("auto", "TPU", 16),
    (5, "CPU", 5), (99, "GPU", 16), (1, "CPU", 1)])
def test_resolve_never_crosses_an_epoch(setting, device, expected):
  assert step_loop.resolve(setting, device, 16, 128) == expected


def test_auto_on_cpus_counts_examples_and_on_accelerators_steps():
  assert step_loop.resolve("auto", "CPU", 10_000, 64) == 64
  assert step_loop.resolve("auto", "CPU", 10_000, 1024) == 4
  assert step_loop.resolve("auto", "CPU", 10_000, 8192) == 1
  assert step_loop.resolve("auto", "GPU", 390, 128) == 390  # an epoch
  assert step_loop.resolve("auto", "GPU", 10_000, 8) == 500


def test_loops_cover_the_epoch_once_the_last_shorter():
  assert list(step_loop.loops(10, 3)) == [(0, 3), (3, 3), (6, 3), (9, 1)]
  assert list(step_loop.loops(4, 4)) == [(0, 4)]


def counting_loop(poison_at: int = -1, prepare=None):
  """A loop over a step that adds its batch to a variable.

  Its loss is the batch's first value: NaN at batch `poison_at`. Without
  `prepare` it also adds each batch's step number to `steps`; the loop's
  first step is `start`'s value.
  """
  strategy = tf.distribute.get_strategy()
  total = tf.Variable(0.0)
  steps = tf.Variable(0, dtype=tf.int64)
  start = tf.Variable(10, dtype=tf.int64)

  def replica_step(images, labels, step=None):
    total.assign_add(tf.reduce_sum(images))
    if step is not None:
      steps.assign_add(step)
    loss = tf.where(tf.equal(labels[0], poison_at), float("nan"), images[0])
    return loss, tf.cast(tf.size(labels), tf.float32)

  batches = tf.data.Dataset.range(100).map(
      lambda i: (tf.fill([2], tf.cast(i, tf.float32)),
                 tf.fill([2], tf.cast(i, tf.int32))))
  loop = step_loop.TrainLoop(replica_step, strategy, start.read_value,
                             prepare=prepare)
  return loop, iter(batches), total, steps


def test_a_loop_runs_its_steps_and_sums_on_the_device():
  loop, iterator, total, _ = counting_loop()
  sums, first_nonfinite = loop(iterator, 3, step_loop.zero_sums())
  assert sums.numpy().tolist() == [0 + 1 + 2, 6]  # losses; "correct": sizes
  assert int(first_nonfinite) == -1
  assert float(total) == 2 * (0 + 1 + 2)
  sums, _ = loop(iterator, 2, sums)  # carries on from the same iterator
  assert sums.numpy().tolist() == [0 + 1 + 2 + 3 + 4, 10]


def test_every_loop_length_is_one_trace():
  loop, iterator, _, _ = counting_loop()
  sums = step_loop.zero_sums()
  for count in (4, 4, 1, 3, 1):
    sums, _ = loop(iterator, count, sums)
  assert loop.tracing_count == 1
  assert sums.numpy().tolist() == [sum(range(13)), 26]


def test_the_first_nonfinite_step_is_named():
  loop, iterator, _, _ = counting_loop(poison_at=5)
  sums, first_nonfinite = loop(iterator, 4, step_loop.zero_sums())
  assert int(first_nonfinite) == -1
  sums, first_nonfinite = loop(iterator, 4, sums)  # steps 4..7
  assert int(first_nonfinite) == 1
  assert not tf.math.is_finite(sums[0])


def test_each_batch_goes_with_its_step_and_no_loop_reads_ahead():
  loop, iterator, total, steps = counting_loop()
  loop(iterator, 3, step_loop.zero_sums())
  assert int(steps) == 10 + 11 + 12  # from `start`, one number per batch
  sums, _ = loop(iterator, 1, step_loop.zero_sums())
  assert sums.numpy().tolist() == [3, 2]  # batch 3: none skipped
  assert float(total) == 2 * (0 + 1 + 2 + 3)


def test_prepare_runs_on_every_batch_before_its_step():
  def prepare(images, labels, step):
    return images * tf.cast(step, tf.float32), labels

  loop, iterator, total, _ = counting_loop(prepare=prepare)
  for count in (1, 3):
    loop(iterator, count, step_loop.zero_sums())
  # batches 0..3, the steps 10 (the first loop) and 10, 11, 12
  assert float(total) == 2 * (0 * 10 + 1 * 10 + 2 * 11 + 3 * 12)
  assert loop.tracing_count == 1


def test_only_cpus_take_the_augmentation_out_of_the_step():
  assert distribute.runs_on_cpus(tf.distribute.get_strategy())  # no GPU here
  assert distribute.runs_on_cpus(tf.distribute.OneDeviceStrategy("/cpu:0"))
  assert not distribute.runs_on_cpus(
      tf.distribute.OneDeviceStrategy("/gpu:0"))


def test_the_update_compiles_with_the_step_on_one_device_only():
  assert distribute.compiles_update(tf.distribute.get_strategy())
  assert distribute.compiles_update(tf.distribute.OneDeviceStrategy("/cpu:0"))
  assert not distribute.compiles_update(
      tf.distribute.MirroredStrategy(["/cpu:0"]))


def test_loops_start_at_a_step_and_end_where_checkpoints_fall_due():
  assert list(step_loop.loops(20, 7, first_step=12)) == [(12, 7), (19, 1)]
  # Cut at multiples of 5 (checkpoints), never longer than 7.
  assert list(step_loop.loops(20, 7, cut_every=5)) == [
      (0, 5), (5, 5), (10, 5), (15, 5)]
  assert list(step_loop.loops(20, 3, first_step=4, cut_every=5)) == [
      (4, 1), (5, 3), (8, 2), (10, 3), (13, 2), (15, 3), (18, 2)]
  assert list(step_loop.loops(8, 8, first_step=8)) == []
