"""The console scripts `pip install` puts on PATH (see pyproject.toml).

Each turns TensorFlow's oneDNN kernels on (`fastcifar.cli.cpu`) and silences
its start-up logging (`fastcifar.cli.quiet`) before the command's module, and
with it TensorFlow, is imported; then runs it exactly
as `python -m MODULE` would.
"""

from __future__ import annotations

import importlib

from fastcifar.cli import cpu, quiet


def _run(module: str) -> None:
  cpu.enable_onednn()
  quiet.start()
  importlib.import_module(module).run()


def train() -> None:
  """fastcifar-train: `python -m fastcifar.train`."""
  _run("fastcifar.train")


def evaluate() -> None:
  """fastcifar-evaluate: `python -m fastcifar.evaluate`."""
  _run("fastcifar.evaluate")


def doctor() -> None:
  """fastcifar-doctor: `python -m fastcifar.doctor`."""
  _run("fastcifar.doctor.__main__")


def export() -> None:
  """fastcifar-export: `python -m fastcifar.export`."""
  _run("fastcifar.export")
