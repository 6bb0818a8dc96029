"""Optimizers and learning-rate schedules, by the names the flags use.

Keras's own where Keras has one (Adam, AdamW, SGD, RMSprop; cosine, step).
The fast model's optimizer is airbench's: airbench94 (Keller Jordan) trains
with PyTorch's SGD: weight decay added to the gradient before momentum,
Nesterov momentum, batch-norm offsets at a much higher learning rate, and
every few steps the weights pulled towards (and replaced by) a running
average. Keras's SGD differs in each of these, so this is the PyTorch
update, written as a Keras optimizer so that it compiles, checkpoints and
saves like any other.
"""

from __future__ import annotations

import keras
from keras import ops

OPTIMIZERS = ("adam", "adamw", "sgd", "nesterov", "rmsprop", "airbench")
# plateau: a constant rate that `ReduceLROnPlateau` lowers.
SCHEDULES = ("cosine", "constant", "step", "plateau", "onecycle")
# Schedules that can start with a linear warm-up.
WARMUP_SCHEDULES = ("cosine", "constant", "onecycle")
# Optimizers that take a momentum, and theirs when none is given.
DEFAULT_MOMENTUM = {"sgd": 0.9, "nesterov": 0.9, "rmsprop": 0.0,
                    "airbench": 0.85}
# The fraction of a one-cycle run spent warming up, as in airbench94.
ONECYCLE_WARMUP = 0.23


def make_schedule(name: str, peak: float, total_steps: int,
                  warmup_steps: int | None = None):
  """A learning rate by schedule name: a float or a Keras schedule.

  Args:
    name: one of `SCHEDULES`.
    peak: the highest rate.
    total_steps: the run's length (under --epochs=auto, --max_epochs').
    warmup_steps: steps of linear rise first (`WARMUP_SCHEDULES` only);
      None: none, or for onecycle 23% of the run.

  Returns:
    What a Keras optimizer takes as `learning_rate`.
  """
  warmup = warmup_steps or 0
  if name == "cosine":
    if not warmup:
      return keras.optimizers.schedules.CosineDecay(peak, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup, 1), warmup_target=peak,
        warmup_steps=warmup)
  if name == "onecycle":
    return WarmupLinearDecay(peak, total_steps, warmup_steps=warmup_steps)
  if name == "step":  # a tenth at half the run, a hundredth at 3/4
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [total_steps // 2, 3 * total_steps // 4],
        [peak, peak / 10, peak / 100])
  if name == "constant" and warmup:
    return WarmupLinearDecay(peak, total_steps, warmup_steps=warmup,
                             start=0.0, end=1.0)
  if name in ("constant", "plateau"):
    return float(peak)
  raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def make_optimizer(name: str, learning_rate, *, momentum: float | None = None,
                   weight_decay: float | None = None
                   ) -> keras.optimizers.Optimizer:
  """One of Keras's optimizers by name (airbench's: `airbench_optimizer`).

  Args:
    name: adam, adamw, sgd, nesterov or rmsprop.
    learning_rate: a float or a schedule.
    momentum: for sgd, nesterov and rmsprop; None: `DEFAULT_MOMENTUM`.
    weight_decay: Keras's decoupled weight decay; None: the optimizer's
      default (AdamW's 0.004, none for the others).
  """
  decay = {} if weight_decay is None else {"weight_decay": weight_decay}
  momentum = DEFAULT_MOMENTUM.get(name) if momentum is None else momentum
  if name == "adam":
    return keras.optimizers.Adam(learning_rate, **decay)
  if name == "adamw":
    return keras.optimizers.AdamW(learning_rate, **decay)
  if name in ("sgd", "nesterov"):
    return keras.optimizers.SGD(learning_rate, momentum=momentum,
                                nesterov=name == "nesterov", **decay)
  if name == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate, momentum=momentum, **decay)
  raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


@keras.saving.register_keras_serializable(package="fastcifar")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear from `start * peak` up to `peak`, then linear down to `end * peak`.

  airbench94 warms up over the first 23% of steps from 0.2 of the peak and
  decays to 0.07 of it.

  Args:
    peak: the highest rate.
    total_steps: the run's length.
    warmup: the fraction of the run spent rising, rounded down to whole
      steps (at least one) as airbench94 does.
    start, end: the first and the last rate, as fractions of the peak.
    warmup_steps: the steps spent rising, exactly (0: none, the run starts
      at the peak); None: `warmup` decides. Given in steps because a
      fraction of the run, multiplied back, can fall a step short.
  """

  def __init__(self, peak: float, total_steps: int,
               warmup: float = ONECYCLE_WARMUP,
               start: float = 0.2, end: float = 0.07,
               warmup_steps: int | None = None):
    self.peak = peak
    self.total_steps = total_steps
    self.warmup = warmup
    self.start = start
    self.end = end
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = ops.cast(step, "float32")
    warmup_steps = (max(int(self.total_steps * self.warmup), 1)
                    if self.warmup_steps is None else self.warmup_steps)
    up = step / max(warmup_steps, 1)
    down = (step - warmup_steps) / max(self.total_steps - warmup_steps, 1)
    factor = ops.where(
        step < warmup_steps, self.start + (1.0 - self.start) * up,
        1.0 + (self.end - 1.0) * ops.minimum(down, 1.0))
    return self.peak * factor

  def get_config(self):
    return {"peak": self.peak, "total_steps": self.total_steps,
            "warmup": self.warmup, "start": self.start, "end": self.end,
            "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="fastcifar")
class LookaheadSGD(keras.optimizers.Optimizer):
  """PyTorch-style Nesterov SGD with coupled weight decay, plus lookahead.

  Per step, for each variable `p` with gradient `g`, momentum buffer `b` and
  learning rate `lr` (times `bias_lr_multiplier` for variables named `beta`,
  the batch-norm offsets):

      g = g + weight_decay / base_lr * p     (so the decay per step is
                                              weight_decay * lr / base_lr,
                                              the same for every variable)
      b = momentum * b + g
      p = p - lr * (g + momentum * b)

  A variable named in `freeze_after` stops changing after that many steps
  (airbench94 trains its whitening bias for 3 epochs only).

  Every `lookahead_every` steps, a running average `a` of the weights moves
  towards them, `a = d * a + (1 - d) * p`, and the weights become `a`; the
  decay `d` grows as `lookahead_decay * (step / total_steps)**3`; a last
  step that falls between updates returns the weights to the average
  (airbench94's schedule).

  Args:
    learning_rate: a float or `WarmupLinearDecay`, for gradients of the
      *mean* loss.
    total_steps: the run's length, for the lookahead schedule.
    momentum: Nesterov momentum.
    weight_decay: the decay per step at the base learning rate.
    bias_lr_multiplier: learning-rate factor for the batch-norm offsets.
    lookahead_every: steps between lookahead updates; 0 turns it off.
    lookahead_decay: the average's decay at the last step.
    freeze_after: `{variable name: steps}`: train those variables for that
      many steps only.
    base_learning_rate: the rate the weight decay is given at; None: the
      schedule's peak (a `WarmupLinearDecay`) or the constant rate.
  """

  def __init__(self, learning_rate, total_steps: int, momentum: float = 0.85,
               weight_decay: float = 0.0, bias_lr_multiplier: float = 1.0,
               lookahead_every: int = 5, lookahead_decay: float = 0.95**5,
               freeze_after: dict[str, int] | None = None,
               base_learning_rate: float | None = None,
               name: str = "lookahead_sgd", **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.total_steps = total_steps
    self.momentum = momentum
    self.coupled_weight_decay = weight_decay
    self.bias_lr_multiplier = bias_lr_multiplier
    self.lookahead_every = lookahead_every
    self.lookahead_decay = lookahead_decay
    self.freeze_after = dict(freeze_after or {})
    if base_learning_rate is None:
      base_learning_rate = (
          learning_rate.peak if isinstance(learning_rate, WarmupLinearDecay)
          else float(learning_rate))
    self.base_learning_rate = base_learning_rate

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")
    # Decided here: update_step sees the backend's variables, whose names
    # differ from the Keras ones.
    self.lr_multipliers = [
        self.bias_lr_multiplier if v.name == "beta" else 1.0
        for v in variables]
    self.freeze_steps = [self.freeze_after.get(v.name) for v in variables]
    self.averages = [
        self.add_variable_from_reference(v, "average") for v in variables
    ] if self.lookahead_every else []
    for average, variable in zip(self.averages, variables):
      average.assign(variable)

  def update_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    dtype = variable.dtype
    multiplier = self.lr_multipliers[index]
    lr = ops.cast(learning_rate, dtype) * multiplier
    decay = self.coupled_weight_decay / (self.base_learning_rate * multiplier)
    gradient = ops.cast(gradient, dtype) + decay * variable
    buffer = self.momentums[index]
    new_buffer = self.momentum * buffer + gradient
    new_variable = variable - lr * (gradient + self.momentum * new_buffer)
    if self.freeze_steps[index] is not None:
      training = self.iterations < self.freeze_steps[index]
      new_buffer = ops.where(training, new_buffer, buffer)
      new_variable = ops.where(training, new_variable, variable)
    self.assign(buffer, new_buffer)
    self.assign(variable, new_variable)
    if not self.lookahead_every:
      return
    step = ops.cast(self.iterations + 1, "float32")
    regular = ops.equal(ops.mod(self.iterations + 1, self.lookahead_every), 0)
    due = ops.logical_or(regular, step >= self.total_steps)
    # At a last step off the beat, mixing 1.0 returns to the average.
    mix = ops.cast(ops.where(
        regular, self.lookahead_decay * (step / self.total_steps)**3, 1.0),
                   dtype)
    average = self.averages[index]
    new_average = mix * average + (1.0 - mix) * variable
    self.assign(average, ops.where(due, new_average, average))
    self.assign(variable, ops.where(due, new_average, variable))

  def get_config(self):
    return {**super().get_config(), "total_steps": self.total_steps,
            "momentum": self.momentum,
            "weight_decay": self.coupled_weight_decay,
            "bias_lr_multiplier": self.bias_lr_multiplier,
            "lookahead_every": self.lookahead_every,
            "lookahead_decay": self.lookahead_decay,
            "freeze_after": self.freeze_after,
            "base_learning_rate": self.base_learning_rate}


def apply_and_count(optimizer: keras.optimizers.Optimizer, gradients,
                    variables) -> None:
  """Applies `gradients` and advances `optimizer.iterations` by exactly one.

  A `LossScaleOptimizer` (mixed_float16) skips a step whose gradients are
  not finite without counting it, yet every step-based schedule (alternating
  flips, step seeds, the learning rate, the whitening bias's freeze,
  lookahead's final average) counts `iterations`: counting skipped steps too
  keeps them all on the data's own clock.

  Args:
    optimizer: a built optimizer, possibly a `LossScaleOptimizer`, whose
      `iterations` is then its inner optimizer's.
    gradients, variables: as `apply_gradients` takes them, zipped.
  """
  next_step = optimizer.iterations + 1  # read before the update
  optimizer.apply_gradients(zip(gradients, variables))
  optimizer.iterations.assign(next_step)


def airbench_optimizer(lr_per_1024: float, batch_size: int, total_steps: int,
                       lookahead: bool = True, momentum: float = 0.85,
                       weight_decay_per_1024: float = 0.0153,
                       bias_lr_multiplier: float = 64.0,
                       freeze_after: dict[str, int] | None = None,
                       schedule: str = "onecycle",
                       warmup_steps: int | None = None) -> LookaheadSGD:
  """airbench94's optimizer, its rates given per 1,024 examples.

  airbench sums the loss over the batch and divides its rates by
  `1024 * (1 + 1 / (1 - momentum))`, the factor by which Nesterov momentum
  lengthens a step when gradients hold still; our step averages the loss,
  hence the extra `batch_size`.

  Args:
    lr_per_1024: airbench's `lr` (11.5 in airbench94).
    batch_size: the global batch size.
    total_steps: steps in the whole run.
    lookahead: average the weights every 5 steps.
    momentum: Nesterov momentum.
    weight_decay_per_1024: airbench's `weight_decay`.
    bias_lr_multiplier: airbench's `bias_scaler` for batch-norm offsets.
    freeze_after: `{variable name: steps}` to train for that long only.
    schedule, warmup_steps: as for `make_schedule`; airbench94's is
      onecycle (a `WarmupLinearDecay`).

  Returns:
    The optimizer.
  """
  kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
  peak = lr_per_1024 / kilostep_scale * batch_size
  return LookaheadSGD(
      make_schedule(schedule, peak, total_steps, warmup_steps), total_steps,
      momentum=momentum,
      weight_decay=weight_decay_per_1024 * batch_size / kilostep_scale,
      bias_lr_multiplier=bias_lr_multiplier,
      lookahead_every=5 if lookahead else 0, freeze_after=freeze_after,
      base_learning_rate=peak)
