"""Many training steps per call: the loop runs on the device, not in Python.

A call from Python into TensorFlow, its wait for the result and the Keras
callbacks after it cost about a millisecond whatever the step does: on a GPU,
where a small CNN's step takes less, that cost is the whole step. So, as
Keras's `steps_per_execution` and Orbit's `steps_per_loop` with
`use_tf_while_loop` do, one `tf.function` runs N steps in a `tf.while_loop`
(autograph over `tf.range`) and Python hears back once per loop: the loss
and accuracy sums, kept on the device, and the first step whose loss was not
finite. The loop length is a tensor argument, so one trace serves every
length, the epoch's shorter last loop included.
"""

from __future__ import annotations

from typing import Callable, Iterator

import tensorflow as tf

AUTO = "auto"
# CPU: the loop ends after about this many examples. A step's time grows
# with its batch there, so this bounds a loop's time (the seed CNN: ~1.7 s
# at 2,400 images/s; the progress bar and a clean SIGTERM stop wait for a
# loop's end, and the stop's watchdog for 7 s) while the ~1 ms per call is
# spread over enough steps to vanish: 64 steps at batch 64, where a tiny
# model's step costs about that millisecond itself. Longer loops gain nothing
# measurable on a CPU, where the host is also the device.
AUTO_CPU_EXAMPLES = 4096
# GPUs and TPUs: a whole epoch, at most this many steps (a loop of 500 steps
# of 10 ms still ends inside the stop's 7 s).
AUTO_ACCELERATOR_STEPS = 500


def resolve(steps_per_loop: int | str, device: str, steps_per_epoch: int,
            batch_size: int) -> int:
  """Turns `auto` into a number of steps; no loop is longer than an epoch.

  Args:
    steps_per_loop: a positive number of steps, or `auto`.
    device: 'CPU', 'GPU' or 'TPU'.
    steps_per_epoch: steps in one epoch (loops end with their epoch).
    batch_size: the global batch.

  Returns:
    Steps per loop, between 1 and `steps_per_epoch`.
  """
  if steps_per_loop == AUTO:
    steps_per_loop = (max(1, AUTO_CPU_EXAMPLES // batch_size)
                      if device == "CPU" else AUTO_ACCELERATOR_STEPS)
  return max(1, min(steps_per_loop, steps_per_epoch))


def loops(steps_per_epoch: int, steps_per_loop: int, first_step: int = 0,
          cut_every: int | None = None) -> Iterator[tuple[int, int]]:
  """`(first, count)` of each loop of an epoch; the last may be shorter.

  Args:
    steps_per_epoch: the epoch's steps.
    steps_per_loop: the longest loop.
    first_step: where the epoch starts (a resumed one, later than 0).
    cut_every: also end a loop at every multiple of this many steps (where
      checkpoints are due); loop lengths change no number.
  """
  first = first_step
  while first < steps_per_epoch:
    end = min(first + steps_per_loop, steps_per_epoch)
    if cut_every:
      end = min(end, (first // cut_every + 1) * cut_every)
    yield first, end - first
    first = end


class TrainLoop:
  """Runs a per-replica training step `num_steps` times in one call.

  `loop(iterator, num_steps, sums) -> (sums, first_nonfinite)` takes
  `num_steps` batches from the distributed iterator and trains on each.
  `sums` is a float32 `[loss_sum, correct]` tensor, the epoch's so far
  (`zero_sums()` at its start): each step adds to it in turn, so the epoch's
  totals are the same additions in the same order whatever the loop length;
  pass the returned `sums` to the next call. `first_nonfinite` is the index,
  within this loop, of the first step whose loss was NaN or infinite, -1 if
  none.

  Each batch is taken from the iterator (and `prepare`d) one step ahead, in
  the step before the one that trains on it, and nothing in the step it
  runs beside depends on it: TensorFlow's executor runs the two at once, so
  on a CPU `prepare`'s work runs on a core the step leaves free. A loop
  takes exactly its `num_steps` batches: the last step fetches none.
  """

  def __init__(self, replica_step: Callable, strategy: tf.distribute.Strategy,
               first_step: Callable[[], tf.Tensor],
               prepare: Callable | None = None):
    """Wraps the step.

    Args:
      replica_step: `(*batch) -> (loss_sum, correct)` for one replica's
        batch; it applies the update. `batch` is what `prepare` returns, or
        without `prepare` `(images, labels, step)`.
      strategy: runs `replica_step` (and `prepare`) on every replica.
      first_step: `() -> int tensor`, the number of a loop's first step
        (e.g. the optimizer's `iterations`), read as the loop starts; each
        batch goes with its own step's number.
      prepare: `(images, labels, step) -> batch`, one replica's work on a
        batch that does not need the model (augmentation), run one step
        ahead beside the step before; None: the step does all.
    """

    def fetch(iterator, step):
      images, labels = next(iterator)
      if prepare is None:
        return images, labels, step
      return strategy.run(prepare, args=(images, labels, step))

    @tf.function
    def train(batch, i, sums, first_nonfinite):
      loss_sum, correct = strategy.run(replica_step, args=batch)
      step_sums = tf.stack([strategy.reduce("SUM", loss_sum, axis=None),
                            strategy.reduce("SUM", correct, axis=None)])
      first_nonfinite = tf.where(
          tf.logical_and(first_nonfinite < 0,
                         tf.logical_not(tf.math.is_finite(step_sums[0]))),
          i, first_nonfinite)
      return sums + step_sums, first_nonfinite

    @tf.function
    def loop(iterator, num_steps, sums):
      step = tf.cast(first_step(), tf.int64)
      batch = fetch(iterator, step)
      first_nonfinite = tf.constant(-1, tf.int32)
      for i in tf.range(num_steps - 1):
        # Taken before this step's update and independent of it: the two
        # run at once. (`train` is one function, traced once, called twice.)
        following = fetch(iterator, step + tf.cast(i, tf.int64) + 1)
        sums, first_nonfinite = train(batch, i, sums, first_nonfinite)
        batch = following
      return train(batch, num_steps - 1, sums, first_nonfinite)

    self._loop = loop

  def __call__(self, iterator, num_steps: int, sums: tf.Tensor
               ) -> tuple[tf.Tensor, tf.Tensor]:
    # A tensor, not a Python int: an int would trace once per loop length.
    return self._loop(iterator, tf.constant(num_steps, tf.int32), sums)

  @property
  def tracing_count(self) -> int:
    """How many times the loop was traced (once per run, as it should)."""
    return self._loop.experimental_get_tracing_count()


def zero_sums() -> tf.Tensor:
  """The `sums` an epoch starts with."""
  return tf.zeros([2], tf.float32)
