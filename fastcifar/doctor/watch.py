"""`Watch`: a Keras callback naming the mistakes before and during training."""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from typing import Any, Callable, Iterable, Sequence

import keras
import numpy as np

from fastcifar.doctor.checks import check
from fastcifar.doctor.findings import ERROR, WARNING, Finding, PreflightError

# Steps between looks at the weights. Max-pooling skips NaN activations, so a
# net whose first weights went NaN can still show a finite loss, about
# log(classes), as it predicts one class: the loss alone does not tell.
_WEIGHT_CHECK_STEPS = 25


def print_stderr(text: str) -> None:
  """Writes a line to stderr at once, between progress-bar updates."""
  print(text, file=sys.stderr, flush=True)


class Watch(keras.callbacks.Callback):
  """A Keras callback that names the mistakes before and during training.

  At train begin it runs `check` (pass the training data to have the inputs
  and labels checked too). During training it names `nan-loss` when the loss
  or the weights become NaN or infinite, and `not-learning` when, after
  `after_steps` steps, the last `window` steps average chance accuracy (or,
  without an accuracy metric, a loss within 2% of log(classes)). At train end
  it names `too-few-epochs` when accuracy was still clearly rising (and had
  room to: not within a point of 100%). Every finding is printed and kept in
  `findings`.

  Warns by default. With `stop=True`, errors at train begin raise
  `PreflightError` before the first step, and `nan-loss` or `not-learning`
  set `model.stop_training`.

  Per-step values are recovered from the running epoch averages that `fit`
  (and fastcifar's loop) put in the batch logs; pass `running_means=False`
  when your loop logs each step's own values.

  `state()` and `resume(state)` carry its counters over a resume (fastcifar's
  checkpoints hold them): a watch started afresh inside a resumed run would
  judge `not-learning` again, on other steps, and could stop a run the
  uninterrupted one let go on, or the other way round.
  """

  def __init__(self, data: Any = None, labels: Any = None, *,
               stop: bool = False, after_steps: int = 200, window: int = 50,
               one_hot_on_device: bool = False, num_classes: int | None = None,
               running_means: bool = True, early_stopping: bool = False,
               hint: str = "", print_fn: Callable[[str], None] = print_stderr):
    """Configures the watch.

    Args:
      data, labels: the training data, as for `check`; None checks the
        model alone.
      stop: stop training on errors instead of only warning.
      after_steps: training steps before judging whether the net learns.
      window: the last steps averaged for that judgement.
      one_hot_on_device: as for `check`.
      num_classes: the number of classes; the model's output width if None.
      running_means: batch logs hold running epoch averages (as in `fit`).
      early_stopping: the run stops itself when the validation loss stalls
        (EarlyStopping, fastcifar.train --epochs=auto): ending still rising,
        it ran out of its epoch limit, and the fix is to raise that.
      hint: added to the `PreflightError` message, e.g. how to skip the check.
      print_fn: where findings are written; stderr by default.
    """
    super().__init__()
    self.data = data
    self.labels = labels
    self.stop = stop
    self.after_steps = after_steps
    self.window = window
    self.one_hot_on_device = one_hot_on_device
    self.num_classes = num_classes
    self.running_means = running_means
    self.early_stopping = early_stopping
    self.hint = hint
    self.print_fn = print_fn
    self._resume_state: dict[str, Any] = {}
    self._reset()

  def state(self) -> dict[str, Any]:
    """Its counters and findings so far, as JSON-able values."""
    return {"findings": [dataclasses.astuple(f) for f in self.findings],
            "step": self._step, "recent": list(self._recent),
            "epoch_steps": self._epoch_steps, "previous": self._previous,
            "epoch_metric": self._epoch_metric,
            "epoch_val_metric": self._epoch_val_metric,
            "judged": self._judged, "epoch": self._epoch}

  def resume(self, state: dict[str, Any]) -> None:
    """Carries on from `state` (from `state()`) when training begins."""
    self._resume_state = dict(state)

  def _carry_on(self) -> None:
    """Sets the counters a `resume` gave, once, after train begin's reset."""
    state, self._resume_state = self._resume_state, {}
    if not state:
      return
    self.findings = [Finding(*f) for f in state["findings"]]
    self._step, self._judged = state["step"], state["judged"]
    self._recent.extend(tuple(r) for r in state["recent"])
    self._epoch_steps = [tuple(s) for s in state["epoch_steps"]]
    self._previous = state["previous"] and tuple(state["previous"])
    self._epoch_metric = state["epoch_metric"]
    self._epoch_val_metric = state["epoch_val_metric"]
    self._epoch = state["epoch"]

  def _reset(self) -> None:
    self.findings: list[Finding] = []
    self._step = 0
    self._recent = collections.deque(maxlen=self.window)
    self._epoch_steps: list[tuple[float, float | None]] = []
    self._previous: tuple[int, float, float | None] | None = None
    self._epoch_metric: list[float] = []  # training accuracy per epoch
    self._epoch_val_metric: list[float] = []  # at the epochs evaluated
    self._judged = False
    self._epoch: int | None = None  # whose steps _previous counts from

  @property
  def codes(self) -> list[str]:
    """The codes found so far, in order."""
    return [f.code for f in self.findings]

  def _report(self, findings: Iterable[Finding]) -> None:
    for finding in findings:
      if finding.code in self.codes:
        continue  # once per run is enough
      self.findings.append(finding)
      self.print_fn(f"fastcifar.doctor: {finding}")

  def on_train_begin(self, logs=None):
    self._reset()
    self._carry_on()  # before the check: findings are named once a run
    found = check(self.model, self.data, self.labels,
                  one_hot_on_device=self.one_hot_on_device)
    self._report(found)
    errors = [f for f in found if f.severity == ERROR]
    if self.stop and errors:
      raise PreflightError(errors, self.hint)

  def on_epoch_begin(self, epoch, logs=None):
    if epoch != self._epoch:  # (the same: resumed inside it, steps kept)
      self._previous = None
      self._epoch_steps = []
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    logs = logs or {}
    if "loss" not in logs:
      return
    loss = float(logs["loss"])
    accuracy = _accuracy_of(logs)
    steps = max(batch + 1 - (self._previous[0] if self._previous else 0), 1)
    before = self._step
    self._step += steps
    if not math.isfinite(loss):
      self._nan(f"the training loss is {loss} at step {self._step}")
      return
    if self._step // _WEIGHT_CHECK_STEPS > before // _WEIGHT_CHECK_STEPS:
      self._check_weights()
    step_loss, step_accuracy = self._per_step(batch, loss, accuracy, steps)
    self._recent.append((step_loss, step_accuracy))
    self._epoch_steps.append((step_loss, step_accuracy))
    if not self._judged and self._step >= self.after_steps:
      self._judged = True
      if not self._check_weights():
        self._judge_learning()

  def on_epoch_end(self, epoch, logs=None):
    self._check_weights()
    logs = logs or {}
    validation = {k: v for k, v in logs.items() if k.startswith("val_")}
    for series, metric in (
        (self._epoch_metric, _accuracy_of(logs)),
        (self._epoch_val_metric,
         _accuracy_of(validation, prefer_validation=True))):
      if metric is not None:
        series.append(metric)

  def on_train_end(self, logs=None):
    if any(f.code in ("nan-loss", "not-learning") for f in self.findings):
      return
    if getattr(self.model, "stop_training", False):
      return  # stopped early (EarlyStopping): it was not cut short
    # Validation accuracy when every epoch had one (validation_freq may skip
    # epochs, and the gain is per epoch), else training accuracy.
    series = (self._epoch_val_metric if len(self._epoch_val_metric) ==
              len(self._epoch_metric) else self._epoch_metric)
    gain = _recent_gain(series, self._epoch_steps)
    # Under a point a epoch, or a point from 100%: more epochs cannot add one.
    if gain is None or gain <= 0.01 or (series and series[-1] > 0.99):
      return
    epochs = len(self._epoch_metric) or 1
    self._report([Finding(
        "too-few-epochs", WARNING,
        f"accuracy was still rising when training ended ({100 * gain:+.1f} "
        "points per epoch at the end): more epochs will raise it",
        self._more_epochs(2 * epochs))])

  def _more_epochs(self, epochs: int) -> str:
    """The too-few-epochs fix: stop early, or raise the early stop's limit."""
    if self.early_stopping:
      return ("the validation loss was still improving when the epoch limit "
              f"ended the run: raise it, to at least {epochs} "
              f"(fastcifar.train --max_epochs={epochs}; Keras: "
              f"fit(epochs={epochs}) beside EarlyStopping)")
    return ("train until the validation loss stops improving: fastcifar.train"
            " --epochs=auto (it holds out a validation split and keeps the "
            "best epoch; Keras: EarlyStopping(restore_best_weights=True)), or "
            f"at least --epochs={epochs}")

  def _per_step(self, batch: int, loss: float, accuracy: float | None,
                steps: int) -> tuple[float, float | None]:
    """The mean over the steps since the last log, from running means."""
    previous, self._previous = self._previous, (batch + 1, loss, accuracy)
    if not self.running_means or previous is None:
      return loss, accuracy
    seen, old_loss, old_accuracy = previous
    step_loss = ((batch + 1) * loss - seen * old_loss) / steps
    step_accuracy = None
    if accuracy is not None and old_accuracy is not None:
      step_accuracy = ((batch + 1) * accuracy - seen * old_accuracy) / steps
    return step_loss, step_accuracy

  def _check_weights(self) -> bool:
    """Reports `nan-loss` when a weight is NaN or infinite; True if so."""
    if "nan-loss" in self.codes:
      return True
    for weight in self.model.trainable_weights:
      if not bool(keras.ops.all(keras.ops.isfinite(weight))):
        self._nan(f"the weights are NaN or infinite ({weight.path}) by step "
                  f"{self._step}; the loss can still look finite (about "
                  "log(classes)) because max-pooling skips NaN")
        return True
    return False

  def _nan(self, message: str) -> None:
    self._report([Finding(
        "nan-loss", ERROR, message,
        "look for NaN/inf in the inputs (np.isfinite(x).all()), lower the "
        "learning rate 10x, and under mixed_float16 keep the last layer "
        "float32")])
    self._stop_if_asked()

  def _judge_learning(self) -> None:
    classes = max(self.num_classes or _output_width(self.model) or 0, 2)
    chance = 1.0 / classes
    accuracies = [a for _, a in self._recent if a is not None]
    if accuracies:  # accuracy is the plainer signal where it is logged
      accuracy = float(np.mean(accuracies))
      stuck = accuracy < chance + 0.03
      measure = f"accuracy {accuracy:.3f} (chance {chance:.3f})"
    else:
      loss = float(np.mean([loss for loss, _ in self._recent]))
      stuck = abs(loss - math.log(classes)) < 0.02 * math.log(classes)
      measure = f"loss {loss:.3f} (log({classes}) = {math.log(classes):.3f})"
    if not stuck:
      return
    if any(f.severity == ERROR for f in self.findings):
      hint = "fix the errors named at the start of training"
    elif self.data is None:
      hint = ("pass the training data, Watch(x, y), to have inputs, labels "
              "and loss checked; else lower the learning rate 10x")
    else:
      hint = ("inputs, labels and loss passed the checks: lower the learning "
              "rate 10x and check that the labels belong to the images")
    self._report([Finding(
        "not-learning", ERROR,
        f"after {self._step} steps the last {len(self._recent)} average "
        f"{measure}: the net is not learning",
        f"{hint}; the usual causes are pixels fed as 0-255, labels that do "
        "not match the loss, from_logits, and a learning rate far off")])
    self._stop_if_asked()

  def _stop_if_asked(self) -> None:
    if self.stop:
      self.model.stop_training = True


# Top-1 accuracy under the names Keras gives it (top-k has another chance).
_ACCURACY_KEYS = ("accuracy", "acc", "categorical_accuracy",
                  "sparse_categorical_accuracy")


def _accuracy_of(logs: dict, prefer_validation: bool = False) -> float | None:
  """The accuracy in `logs` (the validation one first if asked), or None."""
  keys = list(_ACCURACY_KEYS)
  if prefer_validation:
    keys = [f"val_{k}" for k in _ACCURACY_KEYS] + keys
  for key in keys:
    if key in logs and math.isfinite(float(logs[key])):
      return float(logs[key])
  return None


def _output_width(model: keras.Model) -> int | None:
  """The model's number of outputs, when its structure says."""
  try:
    return int(model.outputs[0].shape[-1])
  except (AttributeError, IndexError, TypeError, ValueError):
    return None


def _recent_gain(epoch_metric: Sequence[float],
                 last_epoch_steps: Sequence[tuple[float, float | None]]
                 ) -> float | None:
  """Accuracy gained per epoch at the end of training, when it is clear.

  Over several epochs: the mean gain of the last (up to) three, which must be
  over a point each. In a single epoch: the per-step accuracy of the last
  quarter against the third, when the rise is more than twice its standard
  error (one step's accuracy is noisy), scaled to a whole epoch.
  """
  if len(epoch_metric) >= 2:
    span = min(3, len(epoch_metric) - 1)
    return (epoch_metric[-1] - epoch_metric[-1 - span]) / span
  accuracies = np.array([a for _, a in last_epoch_steps if a is not None])
  if len(accuracies) < 40:
    return None
  quarter = len(accuracies) // 4
  last = accuracies[-quarter:]
  before = accuracies[-2 * quarter:-quarter]
  rise = float(np.mean(last) - np.mean(before))
  noise = math.sqrt((np.var(last) + np.var(before)) / quarter)
  return 4 * rise if rise > max(2 * noise, 0.01) else None
