"""Keras's EarlyStopping and ReduceLROnPlateau, with state a checkpoint holds.

The decisions are Keras's own (these subclasses add no rule): what is added
is `state()` / `resume()`, so that a run killed and resumed carries on with
the same patience counters, best value and best weights, and so stops (or
lowers its rate) at the same epoch as a run never interrupted. Both watch
`val_loss`, which fastcifar computes on a held-out validation split.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


class _Resumable:
  """A Keras callback whose counters survive a resume.

  `STATE` names the attributes Keras resets in `on_train_begin`; `resume`
  sets them again right after that reset.
  """

  STATE: tuple[str, ...] = ()

  def state(self) -> dict[str, Any]:
    """The callback's counters, as JSON-able values."""
    return {name: _plain(getattr(self, name)) for name in self.STATE}

  def resume(self, state: dict[str, Any]) -> None:
    """Carries on from `state` (from `state()`) when training begins."""
    self._resume_state = dict(state)

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)  # Keras resets the counters here
    for name, value in getattr(self, "_resume_state", {}).items():
      setattr(self, name, value)
    self._resume_state = {}

  def variables(self) -> list[tf.Variable]:
    """Tensors the checkpoint holds beside `state()`."""
    return []

  @property
  def stopped(self) -> bool:
    """Whether the callback has ended training."""
    return False


def _plain(value):
  """A float or int from Keras's numpy or tensor values; None stays."""
  if value is None:
    return None
  return np.asarray(value).item()


class EarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
  """`keras.callbacks.EarlyStopping` on val_loss, best weights restored.

  Its best weights live in variables (copies of the model's weights) so the
  checkpoint holds them; call `track(model)` before making the checkpoint.
  """

  STATE = ("wait", "stopped_epoch", "best", "best_epoch")

  def __init__(self, patience: int, min_delta: float = 0.0, verbose: int = 0):
    super().__init__(monitor="val_loss", mode="min", patience=patience,
                     min_delta=min_delta, restore_best_weights=True,
                     verbose=verbose)
    self._best_copies: list[tf.Variable] = []

  def track(self, model: keras.Model) -> None:
    """Makes the variables that hold `model`'s best weights in checkpoints."""
    self._best_copies = [tf.Variable(w, trainable=False)
                         for w in model.get_weights()]

  def variables(self) -> list[tf.Variable]:
    return self._best_copies

  def state(self) -> dict[str, Any]:
    has_best = self.best_weights is not None
    if has_best:
      for copy, weight in zip(self._best_copies, self.best_weights):
        copy.assign(weight)
    return {**super().state(), "has_best_weights": has_best}

  def resume(self, state: dict[str, Any]) -> None:
    state = dict(state)
    if state.pop("has_best_weights"):
      state["best_weights"] = [v.numpy() for v in self._best_copies]
    super().resume(state)

  @property
  def stopped(self) -> bool:
    return self.stopped_epoch > 0


class ReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
  """`keras.callbacks.ReduceLROnPlateau` on val_loss.

  The rate itself is the optimizer's variable, which the checkpoint holds.
  """

  STATE = ("wait", "best", "cooldown_counter")

  def __init__(self, factor: float, patience: int, min_lr: float,
               min_delta: float = 1e-4, verbose: int = 0):
    super().__init__(monitor="val_loss", mode="min", factor=factor,
                     patience=patience, min_lr=min_lr, min_delta=min_delta,
                     verbose=verbose)
