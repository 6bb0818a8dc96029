"""fastcifar.training.resumable's callbacks decide as Keras's do, and across
resumes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fastcifar.training import resumable

# A constructed validation-loss curve: best at epoch index 4 (0.7), with
# stalls before and after.
CURVE = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.705, 0.76, 0.77, 0.78]


def tiny_model() -> keras.Model:
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
  model.optimizer.build(model.trainable_variables)
  return model


def drive(callback, model, curve, epochs=None, start=0):
  """Runs `callback` as a loop would; each epoch's weights are its index.

  Returns:
    The epochs run (0-based, last first stops) and the final kernel value.
  """
  callback.set_model(model)
  model.stop_training = False
  callback.on_train_begin()
  ran = []
  for epoch in range(start, epochs or len(curve)):
    model.layers[0].kernel.assign(np.full((1, 1), epoch, np.float32))
    callback.on_epoch_end(epoch, {"val_loss": curve[epoch]})
    ran.append(epoch)
    if model.stop_training:
      break
  return ran


def finish(callback, model) -> float:
  callback.on_train_end()
  return float(model.layers[0].kernel.numpy()[0, 0])


@pytest.mark.parametrize("patience,min_delta", [(0, 0.0), (1, 0.0), (2, 0.0),
                                                (2, 0.06), (3, 0.0)])
def test_early_stopping_decides_as_keras_does(patience, min_delta):
  ours, theirs = tiny_model(), tiny_model()
  early = resumable.EarlyStopping(patience, min_delta)
  early.track(ours)
  keras_early = keras.callbacks.EarlyStopping(
      monitor="val_loss", patience=patience, min_delta=min_delta,
      restore_best_weights=True)
  assert drive(early, ours, CURVE) == drive(keras_early, theirs, CURVE)
  assert finish(early, ours) == finish(keras_early, theirs)
  assert early.best_epoch == keras_early.best_epoch


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best():
  model = tiny_model()
  early = resumable.EarlyStopping(patience=2)
  early.track(model)
  # Best 0.8 at index 1; 0.9 and 0.85 are two epochs without improvement.
  assert drive(early, model, CURVE)[-1] == 3 and early.stopped
  assert finish(early, model) == 1.0  # epoch index 1's weights
  model, early = tiny_model(), resumable.EarlyStopping(patience=3)
  early.track(model)
  # 0.7 at index 4 resets the wait; 0.705 is not lower: stop at index 7.
  assert drive(early, model, CURVE)[-1] == 7
  assert finish(early, model) == 4.0


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_early_stopping_resumed_from_its_state_decides_the_same(cut):
  model = tiny_model()
  whole = resumable.EarlyStopping(patience=3)
  whole.track(model)
  uninterrupted = drive(whole, model, CURVE)
  expected = finish(whole, model)

  first = resumable.EarlyStopping(patience=3)
  first.track(model)
  drive(first, model, CURVE, epochs=cut)
  state = first.state()  # what the checkpoint stores, with variables()
  resumed = resumable.EarlyStopping(patience=3)
  resumed.track(model)
  for mine, saved in zip(resumed.variables(), first.variables()):
    mine.assign(saved)
  resumed.resume(state)
  assert drive(resumed, model, CURVE, start=cut)[-1] == uninterrupted[-1]
  assert finish(resumed, model) == expected
  assert resumed.best_epoch == whole.best_epoch


def rates(callback, model, curve, start=0, epochs=None) -> list[float]:
  """The learning rate after each epoch's end as `callback` sets it."""
  callback.set_model(model)
  callback.on_train_begin()
  seen = []
  for epoch in range(start, epochs or len(curve)):
    callback.on_epoch_end(epoch, {"val_loss": curve[epoch]})
    seen.append(float(model.optimizer.learning_rate.numpy()))
  return seen


PLATEAU_CURVE = [1.0, 0.9, 0.95, 0.93, 0.92, 0.8, 0.85, 0.86, 0.87, 0.88]


def test_plateau_lowers_the_rate_exactly_when_keras_does():
  ours, theirs = tiny_model(), tiny_model()
  plateau = resumable.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.02)
  keras_plateau = keras.callbacks.ReduceLROnPlateau(
      monitor="val_loss", factor=0.5, patience=2, min_lr=0.02)
  seen = rates(plateau, ours, PLATEAU_CURVE)
  assert seen == rates(keras_plateau, theirs, PLATEAU_CURVE)
  # 0.95, 0.93 do not beat 0.9: halved after index 3; 0.92 and (after the
  # halving resets the wait) 0.8 beats it; 0.85, 0.86 halve again, then the
  # floor 0.02 holds.
  np.testing.assert_allclose(
      seen, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02],
      rtol=1e-6)


def test_plateau_resumed_from_its_state_lowers_the_rate_at_the_same_epochs():
  model = tiny_model()
  expected = rates(resumable.ReduceLROnPlateau(0.5, 2, 0.0), model,
                   PLATEAU_CURVE)
  model = tiny_model()
  first = resumable.ReduceLROnPlateau(0.5, 2, 0.0)
  before = rates(first, model, PLATEAU_CURVE, epochs=3)
  resumed = resumable.ReduceLROnPlateau(0.5, 2, 0.0)
  resumed.resume(first.state())  # the rate itself is the optimizer's
  after = rates(resumed, model, PLATEAU_CURVE, start=3)
  assert before + after == expected
