"""`Config`: every setting that defines a training run, and its checks."""

from __future__ import annotations

import dataclasses

from fastcifar import models, policy
from fastcifar.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run.

  The defaults are the seed model's recipe; `fastcifar.recipes.recipe` fills
  in another model's.
  """

  model: str = "seed"
  epochs: int = 20
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
  eval_batch_size: int = 500
  validation_freq: int = 1
  deterministic: bool = False

  def validate(self) -> None:
    """Raises UsageError naming the first setting out of range."""
    checks = [
        ("model", self.model in models.MODELS,
         f"one of {', '.join(models.MODELS)}"),
        ("epochs", self.epochs >= 1, "at least 1"),
        ("batch_size", self.batch_size >= 1, "at least 1"),
        ("learning_rate", self.learning_rate > 0, "positive"),
        ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
        ("precision", self.precision in policy.PRECISIONS,
         f"one of {', '.join(policy.PRECISIONS)}"),
        ("jit_compile", self.jit_compile in policy.JIT_CHOICES,
         f"one of {', '.join(policy.JIT_CHOICES)}"),
        ("train_examples", self.train_examples >= 0, "0 (all) or more"),
        ("eval_batch_size", self.eval_batch_size >= 1, "at least 1"),
        ("validation_freq", self.validation_freq >= 1, "at least 1"),
    ]
    for field, ok, expected in checks:
      if not ok:
        raise UsageError(f"--{field}={getattr(self, field)} is out of range; "
                         f"it must be {expected}")
