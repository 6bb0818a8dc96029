"""What a killed run needs to resume: weights, optimizer, epoch, history.

Written with TensorFlow's own `tf.train.CheckpointManager` at the end of every
epoch: it writes a new checkpoint beside the old and then atomically rewrites
the index that names the latest, so a kill at any moment leaves a complete
checkpoint to resume from. The history and the run's settings live inside the
checkpoint, so they can never disagree with the weights.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

import keras
import tensorflow as tf

from fastcifar.training import distribute, stopping
from fastcifar.errors import UsageError

CHECKPOINT_DIR = "checkpoints"
# Where `tf.train.Checkpoint` keeps the `settings` variable's value.
_SETTINGS_KEY = "settings/.ATTRIBUTES/VARIABLE_VALUE"


class RunCheckpoint:
  """Saves and restores the training state of one run in `output_dir`."""

  def __init__(self, model: keras.Model, output_dir: str, settings: dict,
               restore_from: str | None = None, controls: Sequence = ()):
    """Tracks the model's and optimizer's variables.

    Args:
      model: a compiled model whose optimizer is built.
      output_dir: the run's output folder; checkpoints go in a subfolder.
      settings: the run's settings; a checkpoint saved with other settings
        is refused rather than silently mixed into this run.
      restore_from: the output folder to resume from, if not `output_dir`
        (a non-chief worker saves to a folder of its own but resumes from
        the chief's).
      controls: callbacks with `state()`, `resume(state)` and
        `variables()` (`fastcifar.training.resumable`'s): their state is saved and
        restored with the weights.
    """
    self.directory = os.path.join(output_dir, CHECKPOINT_DIR)
    self._restore_directory = os.path.join(restore_from or output_dir,
                                           CHECKPOINT_DIR)
    self._settings = json.dumps(settings, sort_keys=True)
    self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._history = tf.Variable("{}", dtype=tf.string, trainable=False)
    self._saved_settings = tf.Variable(self._settings, dtype=tf.string,
                                       trainable=False)
    self._controls = list(controls)
    self._control_states = tf.Variable("[]", dtype=tf.string,
                                       trainable=False)
    # model.variables includes the dropout seed generators' state, so a
    # resumed run draws the same dropout masks as an uninterrupted one.
    checkpoint = tf.train.Checkpoint(
        model=list(model.variables),
        optimizer=list(model.optimizer.variables),
        epoch=self._epoch, history=self._history,
        settings=self._saved_settings, control_states=self._control_states,
        controls=[v for c in self._controls for v in c.variables()])
    self._manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                               max_to_keep=2)

  def restore(self) -> tuple[int, dict[str, list[float]]]:
    """Restores the latest checkpoint, if there is one.

    Returns:
      `(epochs_completed, history)`; `(0, {})` when there is no checkpoint.

    Raises:
      UsageError: the checkpoint belongs to a run with other settings.
    """
    latest = tf.train.latest_checkpoint(self._restore_directory)
    if not latest:
      return 0, {}
    # Settings first, read alone: weights of another model or class count
    # would fail to restore with an error that does not say why.
    saved = json.loads(tf.train.load_variable(latest, _SETTINGS_KEY))
    wanted = json.loads(self._settings)
    differing = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if differing:
      key = differing[0]
      raise UsageError(
          f"{self._restore_directory} holds an unfinished run with {key}="
          f"{saved.get(key)}, not {wanted[key]}; rerun with the same settings "
          "to resume, or pass --restart to train anew")
    self._manager.checkpoint.restore(latest).assert_existing_objects_matched()
    states = json.loads(self._control_states.numpy().decode())
    for control, state in zip(self._controls, states):
      control.resume(state)
    return int(self._epoch.numpy()), json.loads(self._history.numpy().decode())

  def save(self, epochs_completed: int, history: dict) -> None:
    """Saves the state after `epochs_completed` epochs."""
    self._epoch.assign(epochs_completed)
    self._history.assign(json.dumps(history))
    self._control_states.assign(json.dumps([c.state() for c in self._controls]))
    try:
      # A stop request waits for the save's end: TensorFlow's saver calls
      # back into Python, where a KeyboardInterrupt would be swallowed.
      with stopping.deferred():
        self._manager.save(checkpoint_number=epochs_completed)
    except distribute.LOST_PEER_ERRORS:
      raise  # a lost worker, not a full disk: the entry point says which
    except (OSError, tf.errors.OpError) as e:
      raise UsageError(
          f"could not write a checkpoint in {self.directory} ({e}); free disk "
          "space, then rerun the command without --restart to resume from "
          "the last complete checkpoint") from e



def delete_checkpoints(output_dir: str) -> None:
  """Removes a run's checkpoints: after its final outputs, or to restart.

  A `RunCheckpoint` reads the folder when it is made, so delete first.
  """
  shutil.rmtree(os.path.join(output_dir, CHECKPOINT_DIR), ignore_errors=True)


def latest_epoch(output_dir: str) -> int | None:
  """The epoch of the latest checkpoint in `output_dir`, without loading it."""
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, CHECKPOINT_DIR))
  return int(latest.rsplit("-", 1)[1]) if latest else None
