"""`Config`: every setting that defines a training run, and its checks."""

from __future__ import annotations

import dataclasses

from fastcifar import models, optimizers
from fastcifar.training import policy
from fastcifar.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run.

  The defaults are the seed model's recipe;
  `fastcifar.models.recipes.recipe` fills in another model's.
  """

  # "seed", "fast", or a user's model: `package.module:function` for the
  # command, the builder's or model's name for `fastcifar.fit`.
  model: str = "seed"
  epochs: int | str = 20  # or "auto": until the validation loss stalls
  batch_size: int = 128
  learning_rate: float = 2e-3
  augment: bool = True
  alternating_flip: bool = False
  label_smoothing: float = 0.0
  tta: bool = False
  lookahead: bool = True
  precision: str = "auto"
  jit_compile: str = "auto"
  seed: int = 0
  train_examples: int = 0
  # None: the training batch, as Keras's `fit` validates: evaluation then
  # needs no buffer larger than training's (on CPUs without oneDNN, Eigen's
  # convolution packs buffers in proportion to the batch: at 500 the
  # evaluation raised the seed CNN's peak by 100 MB over training's).
  eval_batch_size: int | None = None
  validation_freq: int = 1
  deterministic: bool = False
  # Training steps per call into TensorFlow (`fastcifar.training.step_loop`), or
  # "auto". It changes when Python hears back, not what is computed.
  steps_per_loop: int | str = "auto"
  # With an output dir: checkpoint at every epoch's end and inside epochs,
  # every N steps of an epoch ("50") or after that much training time
  # since the last checkpoint ("90s", "10m", "1h"); "epoch": at ends only.
  # Like steps_per_loop, it changes no number.
  checkpoint_every: str = "10m"
  # Held out of the training examples; 0: none, and the per-epoch curve is
  # the test set's (nothing may then be decided by it).
  validation_examples: int = 0
  # --epochs=auto: Keras's EarlyStopping on val_loss, best weights kept.
  max_epochs: int = 100
  patience: int = 5
  min_delta: float = 0.0
  # The optimizer and its learning-rate schedule (`fastcifar.optimizers`).
  optimizer: str = "adam"
  lr_schedule: str = "cosine"
  warmup_epochs: float | None = None  # None: the schedule's own
  momentum: float | None = None  # None: the optimizer's default
  weight_decay: float | None = None  # None: the optimizer's default
  # lr_schedule="plateau": Keras's ReduceLROnPlateau on val_loss.
  plateau_factor: float = 0.2
  plateau_patience: int = 2
  min_lr: float = 0.0
  # The model outputs logits, not probabilities (a user's model may).
  from_logits: bool = False

  @property
  def auto_epochs(self) -> bool:
    return self.epochs == "auto"

  @property
  def checkpoint_interval(self) -> tuple[int | None, float | None]:
    """`checkpoint_every` as (steps, seconds); (None, None) for "epoch".

    Raises:
      UsageError: it is none of epoch, N or a duration.
    """
    return parse_checkpoint_every(self.checkpoint_every)

  @property
  def evaluation_batch_size(self) -> int:
    """The evaluation batch: `eval_batch_size`, or the training batch."""
    return self.eval_batch_size or self.batch_size

  @property
  def epoch_limit(self) -> int:
    """The most epochs the run trains; what run-length schedules span."""
    return self.max_epochs if self.auto_epochs else self.epochs

  def validate(self) -> None:
    """Raises UsageError naming the first setting out of range."""
    checks = [
        # Whether a name is known is decided where it is resolved
        # (`recipes.recipe`): a user's model has a name of its own.
        ("model", isinstance(self.model, str) and bool(self.model),
         f"one of {', '.join(models.MODELS)} or package.module:function"),
        ("epochs", self.auto_epochs or (
            isinstance(self.epochs, int) and self.epochs >= 1),
         "at least 1, or auto"),
        ("batch_size", self.batch_size >= 1, "at least 1"),
        ("learning_rate", self.learning_rate > 0, "positive"),
        ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
        ("precision", self.precision in policy.PRECISIONS,
         f"one of {', '.join(policy.PRECISIONS)}"),
        ("jit_compile", self.jit_compile in policy.JIT_CHOICES,
         f"one of {', '.join(policy.JIT_CHOICES)}"),
        ("train_examples", self.train_examples >= 0, "0 (all) or more"),
        ("eval_batch_size", self.eval_batch_size is None
         or self.eval_batch_size >= 1, "at least 1"),
        ("validation_freq", self.validation_freq >= 1, "at least 1"),
        ("steps_per_loop", self.steps_per_loop == "auto" or (
            isinstance(self.steps_per_loop, int)
            and self.steps_per_loop >= 1), "at least 1, or auto"),
        ("validation_examples", self.validation_examples >= 0,
         "0 (none) or more"),
        ("max_epochs", self.max_epochs >= 1, "at least 1"),
        ("patience", self.patience >= 0, "0 or more"),
        ("min_delta", self.min_delta >= 0, "0 or more"),
        ("optimizer", self.optimizer in optimizers.OPTIMIZERS,
         f"one of {', '.join(optimizers.OPTIMIZERS)}"),
        ("lr_schedule", self.lr_schedule in optimizers.SCHEDULES,
         f"one of {', '.join(optimizers.SCHEDULES)}"),
        ("warmup_epochs", self.warmup_epochs is None or (
            0 <= self.warmup_epochs < self.epoch_limit),
         "0 or more and fewer than the run's epochs"),
        ("warmup_epochs", not self.warmup_epochs
         or self.lr_schedule in optimizers.WARMUP_SCHEDULES,
         f"0 with --lr_schedule={self.lr_schedule}; warm-ups go with "
         f"{', '.join(optimizers.WARMUP_SCHEDULES)}"),
        ("momentum", self.momentum is None or 0 <= self.momentum < 1,
         "in [0, 1)"),
        ("momentum", self.momentum is None
         or self.optimizer in optimizers.DEFAULT_MOMENTUM,
         f"left unset with --optimizer={self.optimizer}, which has none"),
        ("weight_decay", self.weight_decay is None or self.weight_decay >= 0,
         "0 or more"),
        ("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)"),
        ("plateau_patience", self.plateau_patience >= 0, "0 or more"),
        ("min_lr", self.min_lr >= 0, "0 or more"),
    ]
    self.checkpoint_interval  # pylint: disable=pointless-statement
    for field, ok, expected in checks:
      if not ok:
        raise UsageError(f"--{field}={getattr(self, field)} is out of range; "
                         f"it must be {expected}")
    self._check_decisions_have_a_validation_split()

  def _check_decisions_have_a_validation_split(self) -> None:
    """Whatever the run decides by validation loss needs it every epoch."""
    deciders = (["--epochs=auto"] if self.auto_epochs else []) + (
        ["--lr_schedule=plateau"] if self.lr_schedule == "plateau" else [])
    if not deciders:
      return
    if not self.validation_examples:
      raise UsageError(
          f"{deciders[0]} decides by the validation loss, which needs a "
          "held-out split: pass --validation_examples=N (e.g. 5000); the "
          "test set must not decide anything")
    if self.validation_freq != 1:
      raise UsageError(
          f"{deciders[0]} needs the validation loss after every epoch, not "
          f"--validation_freq={self.validation_freq}; drop --validation_freq")


# Units of a --checkpoint_every duration, in seconds.
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_checkpoint_every(value: str) -> tuple[int | None, float | None]:
  """epoch | N (steps) | a duration such as 90s, 10m, 1.5h.

  Returns:
    `(steps, None)`, `(None, seconds)`, or `(None, None)` for epoch.

  Raises:
    UsageError: none of these, or not positive.
  """
  value = str(value).strip()
  if value == "epoch":
    return None, None
  try:
    if value[-1:] in _UNITS:
      seconds = float(value[:-1]) * _UNITS[value[-1]]
      if seconds > 0:
        return None, seconds
    elif int(value) >= 1:
      return int(value), None
  except ValueError:
    pass
  raise UsageError(f"--checkpoint_every={value} is not epoch, a number of "
                   "steps (e.g. 500) or a positive duration (e.g. 90s, 10m, "
                   "1h)")
