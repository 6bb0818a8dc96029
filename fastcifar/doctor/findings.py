"""What the doctor reports: findings, their stable codes, and the refusal."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from fastcifar.errors import UsageError

# An error is wrong whatever the intent: training crashes, stays at chance or
# loses much accuracy; Watch(stop=True) refuses to train. A warning is very
# likely a mistake that costs accuracy or time, but can be meant.
ERROR = "error"
WARNING = "warning"

CODES = {
    "unnormalized-input": "pixels reach the first layer as 0-255 floats "
                          "(or scaled twice)",
    "integer-input": "uint8/int images reach the first layer without scaling "
                     "inside the model",
    "nan-input": "the batch holds NaN or infinite values",
    "label-loss-mismatch": "labels in the form the loss does not take",
    "label-shape": "labels of a shape the loss or the training step mishandles",
    "label-range": "class ids outside [0, number of model outputs)",
    "logits-mismatch": "softmax output with from_logits=True, or logits with "
                       "from_logits=False",
    "float16-output": "half-precision model output under mixed precision",
    "no-conv-on-images": "a dense-only net on images",
    "learning-rate": "a learning rate far off for the optimizer",
    "accuracy-metric": "keras.metrics.Accuracy() on probabilities (reads ~0)",
    "single-class-batch": "a batch of one class: data sorted, not shuffled",
    "not-learning": "loss at log(classes) or accuracy at chance after "
                    "`after_steps` steps",
    "nan-loss": "the training loss or the weights became NaN or infinite",
    "too-few-epochs": "accuracy still rising when training ended",
}


@dataclasses.dataclass(frozen=True)
class Finding:
  """One mistake found: what is wrong and how to fix it, one line each.

  Attributes:
    code: a key of `CODES`; stable, so scripts and tests can match on it.
    severity: `ERROR` or `WARNING`.
    message: what is wrong, with the numbers that show it.
    fix: what to change, as code where it can be.
  """

  code: str
  severity: str
  message: str
  fix: str

  def __str__(self) -> str:
    return f"{self.severity} [{self.code}] {self.message}\n  fix: {self.fix}"


class PreflightError(UsageError):
  """Training refused to start: `findings` holds the errors found."""

  def __init__(self, findings: Sequence[Finding], hint: str = ""):
    self.findings = list(findings)
    first = self.findings[0]
    more = (f" (and {len(self.findings) - 1} more, listed above)"
            if len(self.findings) > 1 else "")
    hint = f" ({hint})" if hint else ""
    super().__init__(
        f"[{first.code}] {first.message}; fix: {first.fix}{more}{hint}")


def format_findings(findings: Sequence[Finding]) -> str:
  """Findings as lines a person reads, or a line saying there were none."""
  if not findings:
    return "fastcifar.doctor: no problems found"
  return "\n".join(f"fastcifar.doctor: {f}" for f in findings)
