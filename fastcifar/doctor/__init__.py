"""fastcifar.doctor: names the mistakes that leave a Keras classifier at chance.

The answers to "my accuracy is 10%" are always the same few mistakes: pixels
fed as 0-255, labels that do not match the loss, `from_logits` the wrong way
round, a float16 output, a net without convolutions, a learning rate far off,
data sorted by class, too few epochs. `check` finds them in a compiled model
and one batch of its data, before training; `Watch` is a Keras callback that
runs `check` at the start of training and then watches the loss for NaN, for
no learning at all and, at the end, for a run stopped while still improving.

    findings = doctor.check(model, x_train, y_train)
    model.fit(x_train, y_train, callbacks=[doctor.Watch(x_train, y_train)])

Each `Finding` has a stable `code` (see `CODES`), a severity, a one-line
message and the fix. Works for any single-output Keras classifier, fastcifar's
own models included: they take uint8 images and scale them inside, and the
training step one-hots int labels on the device (`one_hot_on_device=True`).
"""

from __future__ import annotations

from typing import Any, Callable

import keras

from fastcifar.doctor.checks import check
from fastcifar.doctor.findings import (CODES, ERROR, WARNING, Finding,
                                       PreflightError, format_findings)
from fastcifar.doctor.watch import Watch, print_stderr

__all__ = ["CODES", "ERROR", "WARNING", "Finding", "PreflightError", "Watch",
           "check", "format_findings", "preflight"]


def preflight(model: keras.Model, data: Any, labels: Any = None, *,
              one_hot_on_device: bool = False,
              print_fn: Callable[[str], None] = print_stderr,
              skip_hint: str = "") -> list[Finding]:
  """Runs `check` before training: prints every finding, raises on errors.

  Args:
    model, data, labels, one_hot_on_device: as for `check`.
    print_fn: where findings are written; stderr by default.
    skip_hint: appended to the error, e.g. "--nopreflight skips this check".

  Returns:
    The findings (warnings only) when there is no error.

  Raises:
    PreflightError: the errors found, the first one in the message.
  """
  findings = check(model, data, labels, one_hot_on_device=one_hot_on_device)
  for finding in findings:
    print_fn(f"fastcifar.doctor: {finding}")
  errors = [f for f in findings if f.severity == ERROR]
  if errors:
    raise PreflightError(errors, skip_hint)
  return findings
