"""What a killed run needs to resume: weights, optimizer, position, history.

Written with TensorFlow's own `tf.train.CheckpointManager` at the end of every
epoch and, as `--checkpoint_every` asks, inside epochs: it writes a new
checkpoint beside the old and then atomically rewrites the index that names
the latest, so a kill at any moment leaves a complete checkpoint to resume
from. A checkpoint holds the data position as two integers (epoch, step), not
a `tf.data` iterator: the data order is a function of (seed, epoch), so the
pipeline can start there again by index arithmetic. The history, the
epoch's metric sums, the callbacks' state and the run's settings live inside
the checkpoint, so they can never disagree with the weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Sequence

import keras
import tensorflow as tf

from fastcifar.training import distribute, stopping
from fastcifar.errors import UsageError

CHECKPOINT_DIR = "checkpoints"
# Checkpoints kept: a few, so that a damaged latest one (a disk that lied
# about a write) still leaves an older one.
MAX_TO_KEEP = 3
# Where `tf.train.Checkpoint` keeps these variables' values.
_SETTINGS_KEY = "settings/.ATTRIBUTES/VARIABLE_VALUE"
_EPOCH_KEY = "epoch/.ATTRIBUTES/VARIABLE_VALUE"
_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"

# The latest checkpoint's position per checkpoint folder, as this process
# restored or saved it (None: there is none). The stop watchdog's resume hint
# reads it here: the disk may be what hangs.
_known_positions: dict[str, tuple[int, int] | None] = {}


@dataclasses.dataclass
class State:
  """A run's state besides its variables, at a point where it can resume."""

  epoch: int = 0  # epochs completed
  step: int = 0  # steps of epoch `epoch` (0-based) completed
  history: dict = dataclasses.field(default_factory=dict)
  # The unfinished epoch's loss and correct-count sums, as `step_loop` adds
  # them; [0, 0] at an epoch's start.
  sums: tuple[float, float] = (0.0, 0.0)
  # A callback set `model.stop_training`: a rerun trains no more.
  stopped: bool = False
  epoch_seconds: float = 0.0  # training time in the unfinished epoch
  # The logs of epoch `epoch`, when saved at its end before the caller's
  # callbacks saw them (so that one that raises there loses nothing): a
  # resumed run shows them to the callbacks whose state it restores.
  unseen_epoch_logs: dict | None = None


class OlderCheckpoint(UsageError):
  """The checkpoint was written by a fastcifar that did not store the data
  position (before mid-epoch checkpoints) or some setting compared now: it
  cannot resume exactly, and is left as it is."""

  def __init__(self, output_dir: str):
    super().__init__(
        f"--output_dir {output_dir} holds a checkpoint from an older "
        "fastcifar, which cannot resume here (it lacks the data position or "
        "settings this version stores); pass --restart to train anew there, "
        "or choose another --output_dir")


def _position(latest: str) -> tuple[int, int]:
  """(epochs completed, steps of the next) that checkpoint `latest` holds.

  Raises:
    OlderCheckpoint: it holds no step (written before steps were stored).
  """
  reader = tf.train.load_checkpoint(latest)
  if not reader.has_tensor(_STEP_KEY):
    # (latest: OUTPUT_DIR/checkpoints/ckpt-N)
    raise OlderCheckpoint(os.path.dirname(os.path.dirname(latest)))
  return int(reader.get_tensor(_EPOCH_KEY)), int(reader.get_tensor(_STEP_KEY))


class RunCheckpoint:
  """Saves and restores the training state of one run in `output_dir`."""

  def __init__(self, model: keras.Model, output_dir: str, settings: dict,
               restore_from: str | None = None, controls: Sequence = (),
               callbacks: Sequence = ()):
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
        `variables()` (`fastcifar.training.resumable`'s): their state is
        saved and restored with the weights.
      callbacks: the caller's callbacks with `state()` and `resume(state)`
        (the doctor's `Watch`): the same, each resumed only by a state its
        own class saved at its place.
    """
    self.directory = os.path.join(output_dir, CHECKPOINT_DIR)
    self._restore_directory = os.path.join(restore_from or output_dir,
                                           CHECKPOINT_DIR)
    self._settings = json.dumps(settings, sort_keys=True)
    self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._step = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._sums = tf.Variable([0.0, 0.0], dtype=tf.float32, trainable=False)
    self._history = tf.Variable("{}", dtype=tf.string, trainable=False)
    self._saved_settings = tf.Variable(self._settings, dtype=tf.string,
                                       trainable=False)
    self._controls = list(controls)
    self._callbacks = list(callbacks)
    # The controls' states, the stop and the epoch's time so far, as JSON.
    self._state = tf.Variable("{}", dtype=tf.string, trainable=False)
    # model.variables includes the dropout seed generators' state, so a
    # resumed run draws the same dropout masks as an uninterrupted one.
    checkpoint = tf.train.Checkpoint(
        model=list(model.variables),
        optimizer=list(model.optimizer.variables),
        epoch=self._epoch, step=self._step, sums=self._sums,
        history=self._history, settings=self._saved_settings,
        state=self._state,
        controls=[v for c in self._controls for v in c.variables()])
    # Numbered by the checkpoint's own save counter (restored with it), so
    # that a second save at one position never overwrites the latest.
    self._manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                               max_to_keep=MAX_TO_KEEP)
    self.save_seconds: list[float] = []  # each save's time, this process

  def restore(self) -> State:
    """Restores the latest checkpoint, if there is one.

    Returns:
      The saved `State`; `State()` (epoch 0, step 0) when there is none.

    Raises:
      UsageError: the checkpoint belongs to a run with other settings.
      OlderCheckpoint: it was written by an older fastcifar.
    """
    latest = tf.train.latest_checkpoint(self._restore_directory)
    if not latest:
      _known_positions[self._restore_directory] = None
      return State()
    # Position and settings first, read alone: an older checkpoint, or the
    # weights of another model or class count, would fail to restore with
    # an error that does not say why.
    _position(latest)
    saved = json.loads(tf.train.load_variable(latest, _SETTINGS_KEY))
    wanted = json.loads(self._settings)
    if any(k not in saved for k in wanted):  # a setting it did not store
      raise OlderCheckpoint(os.path.dirname(self._restore_directory))
    differing = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if differing:
      key = differing[0]
      raise UsageError(
          f"{self._restore_directory} holds an unfinished run with {key}="
          f"{saved.get(key)}, not {wanted[key]}; rerun with the same settings "
          "to resume, or pass --restart to train anew")
    self._manager.checkpoint.restore(latest).assert_existing_objects_matched()
    extra = json.loads(self._state.numpy().decode())
    for control, state in zip(self._controls, extra.get("controls", [])):
      control.resume(state)
    for callback, (name, state) in zip(self._callbacks,
                                       extra.get("callbacks", [])):
      if name == _name(callback):
        callback.resume(state)
    state = State(epoch=int(self._epoch.numpy()), step=int(self._step.numpy()),
                  history=json.loads(self._history.numpy().decode()),
                  sums=tuple(float(x) for x in self._sums.numpy()),
                  stopped=extra.get("stopped", False),
                  epoch_seconds=extra.get("epoch_seconds", 0.0),
                  unseen_epoch_logs=extra.get("unseen_epoch_logs"))
    _known_positions[self._restore_directory] = (state.epoch, state.step)
    return state

  def save(self, state: State) -> None:
    """Saves the variables with `state`; its time goes to `save_seconds`."""
    start = time.perf_counter()
    self._epoch.assign(state.epoch)
    self._step.assign(state.step)
    self._sums.assign(state.sums)
    self._history.assign(json.dumps(state.history))
    self._state.assign(json.dumps({
        "controls": [c.state() for c in self._controls],
        "callbacks": [[_name(c), c.state()] for c in self._callbacks],
        "stopped": state.stopped, "epoch_seconds": state.epoch_seconds,
        "unseen_epoch_logs": state.unseen_epoch_logs}))
    try:
      # A stop request waits for the save's end: TensorFlow's saver calls
      # back into Python, where a KeyboardInterrupt would be swallowed.
      with stopping.deferred():
        self._manager.save()
    except distribute.LOST_PEER_ERRORS:
      raise  # a lost worker, not a full disk: the entry point says which
    except (OSError, tf.errors.OpError) as e:
      raise UsageError(
          f"could not write a checkpoint in {self.directory} ({e}); free disk "
          "space, then rerun the command without --restart to resume from "
          "the last complete checkpoint") from e
    _known_positions[self.directory] = (state.epoch, state.step)
    self.save_seconds.append(time.perf_counter() - start)


def _name(callback) -> str:
  """Which class's state a saved callback state is."""
  return f"{type(callback).__module__}.{type(callback).__qualname__}"


def delete_checkpoints(output_dir: str) -> None:
  """Removes a run's checkpoints: after its final outputs, or to restart.

  A `RunCheckpoint` reads the folder when it is made, so delete first.
  """
  directory = os.path.join(output_dir, CHECKPOINT_DIR)
  shutil.rmtree(directory, ignore_errors=True)
  _known_positions[directory] = None


def latest_position(output_dir: str) -> tuple[int, int] | None:
  """(epochs completed, steps of the next) of the latest checkpoint on disk.

  Reads the checkpoint folder: not for a thread that must not block.

  Raises:
    OlderCheckpoint: the latest was written by an older fastcifar.
  """
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, CHECKPOINT_DIR))
  return _position(latest) if latest else None


def latest_epoch(output_dir: str) -> int | None:
  """Epochs completed in the latest checkpoint in `output_dir`, if any."""
  position = latest_position(output_dir)
  return position[0] if position else None


def known_position(output_dir: str) -> tuple[bool, tuple[int, int] | None]:
  """The latest checkpoint's position as this process last restored or saved
  it, without touching the disk (for the stop watchdog).

  Returns:
    `(known, position)`: `known` is False if this process has not yet
    looked; `position` is None when there is no checkpoint.
  """
  directory = os.path.join(output_dir, CHECKPOINT_DIR)
  return directory in _known_positions, _known_positions.get(directory)
