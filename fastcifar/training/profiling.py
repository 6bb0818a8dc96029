"""A TensorFlow profile of chosen training steps, in whole loops.

Training runs `steps_per_loop` steps per call into TensorFlow
(`fastcifar.training.step_loop`), and the profiler can only start or stop
between calls. Keras's `TensorBoard(profile_batch=)` counts those calls, so
`--profile_steps=8,10` meant loops 8 to 10, and a run of fewer loops wrote no
profile and said nothing. `ProfileSteps` counts steps instead: it profiles
the loops that hold the steps asked for, and says in one line before the
first step which steps that covers when it is not exactly those asked (or
that the run is too short for any).
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf


def loop_span(step: int, steps_per_epoch: int,
              steps_per_loop: int) -> tuple[int, int]:
  """The first and last step (1-based, of the run) of the loop holding `step`.

  Loops start afresh each epoch, so an epoch's last loop may be shorter.
  """
  epoch, within = divmod(step - 1, steps_per_epoch)
  start = within // steps_per_loop * steps_per_loop
  end = min(start + steps_per_loop, steps_per_epoch)
  return epoch * steps_per_epoch + start + 1, epoch * steps_per_epoch + end


def profiled_span(first: int, last: int, steps_per_epoch: int,
                  steps_per_loop: int, total_steps: int
                  ) -> tuple[int, int] | None:
  """The steps profiled when steps `first`..`last` (1-based) are asked for.

  Args:
    first, last: the steps asked for.
    steps_per_epoch, steps_per_loop: how the run is cut into loops.
    total_steps: the run's length.

  Returns:
    `(first, last)` of the whole loops holding the asked steps that the run
    has; None when it has none of them.
  """
  if first > total_steps:
    return None
  return (loop_span(first, steps_per_epoch, steps_per_loop)[0],
          loop_span(min(last, total_steps), steps_per_epoch,
                    steps_per_loop)[1])


class ProfileSteps(keras.callbacks.Callback):
  """Profiles the loops holding steps `first`..`last` into `logdir`.

  Writes the `.xplane.pb` TensorBoard's profile plugin and
  `tools/profile_summary.py` read, as `keras.callbacks.TensorBoard` does (its
  own `tf.profiler.experimental` calls). Needs the callback params `steps`
  (per epoch), `epochs` and `steps_per_loop`, which fastcifar's training
  loop sets. Steps are counted from the run's first (a resumed run counts
  the epochs before it).

  Args:
    logdir: where the profile goes (under `plugins/profile/`).
    first, last: the steps to profile, 1-based, `1 <= first <= last`.
    say: prints the one line about what is profiled.
  """

  def __init__(self, logdir: str, first: int, last: int,
               say: Callable[[str], None] = print):
    super().__init__()
    self.logdir, self.first, self.last, self.say = logdir, first, last, say
    self.span: tuple[int, int] | None = None
    self._epoch = 0
    self._tracing = False
    self._step_trace = None

  def on_train_begin(self, logs=None):
    per_epoch = self.params["steps"]
    per_loop = self.params.get("steps_per_loop", 1)
    total = per_epoch * self.params["epochs"]
    self.span = profiled_span(self.first, self.last, per_epoch, per_loop,
                              total)
    asked = f"--profile_steps={self.first},{self.last}"
    if self.span is None:
      self.say(f"fastcifar: {asked}: the run has {total} steps, so nothing "
               f"is profiled; ask for steps up to {total}")
    elif self.span != (self.first, self.last):
      self.say(f"fastcifar: {asked}: training runs {per_loop} steps per loop "
               f"(--steps_per_loop) in {total} steps, so steps "
               f"{self.span[0]}-{self.span[1]} are profiled (the loops "
               "holding those asked)")

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def _step(self, batch: int) -> int:
    """The run's 1-based step number of this epoch's 0-based `batch`."""
    return self._epoch * self.params["steps"] + batch + 1

  def on_train_batch_begin(self, batch, logs=None):
    step = self._step(batch)
    if not self.span or not self.span[0] <= step <= self.span[1]:
      return
    if not self._tracing:
      tf.profiler.experimental.start(self.logdir)
      self._tracing = True
    # Marks the loop's steps in the profile's step view, as Keras does.
    self._step_trace = tf.profiler.experimental.Trace("train", step_num=step,
                                                      _r=1)
    self._step_trace.__enter__()

  def on_train_batch_end(self, batch, logs=None):
    if not self._tracing:
      return
    self._step_trace.__exit__(None, None, None)
    if self._step(batch) >= self.span[1]:
      self._stop()

  def on_train_end(self, logs=None):
    if self._tracing:  # stopped early: keep what was profiled
      self._stop()

  def _stop(self) -> None:
    tf.profiler.experimental.stop()
    self._tracing = False
