"""Draws a run's loss and accuracy curves from its history.json as a PNG.

    python -m tools.plot_history --history=runs/x            # the output dir
    python tools/plot_history.py --history=runs/x/history.json --output=x.png

Writes history.png beside history.json unless `--output` says where. Needs
matplotlib: pip install 'fastcifar[plot]'.
"""

from __future__ import annotations

import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make `fastcifar` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fastcifar.cli import common as cli  # pylint: disable=g-import-not-at-top
from fastcifar.training import evaluation
from fastcifar.errors import UsageError  # pylint: disable=g-import-not-at-top

_HISTORY = flags.DEFINE_string(
    "history", None,
    "history.json as fastcifar.train writes it, or the --output_dir that "
    "holds it.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "The PNG to write. Default: history.png beside the json.")
_TITLE = flags.DEFINE_string(
    "title", None, "The picture's title. Default: the run's folder name.")


def history_path(path: str) -> str:
  """The history.json that `path` names, itself or inside a run folder.

  Raises:
    UsageError: there is no such file.
  """
  if os.path.isdir(path):
    path = os.path.join(path, "history.json")
  if not os.path.isfile(path):
    raise UsageError(f"--history {path} does not exist; give the history.json "
                     "that fastcifar.train writes into --output_dir")
  return path


def read_history(path: str) -> dict[str, list[float]]:
  """The per-epoch lists in a history.json.

  Raises:
    UsageError: the file is not JSON or not a dict of lists.
  """
  try:
    with open(path) as f:
      history = json.load(f)
  except (OSError, ValueError) as e:
    raise UsageError(f"{path} is not readable JSON ({e})") from e
  if not isinstance(history, dict) or not all(
      isinstance(v, list) for v in history.values()):
    raise UsageError(f"{path} is not a history: expected lists per epoch "
                     "under loss, accuracy, val_loss, val_accuracy")
  return history


def main(argv: list[str]) -> int:
  """Draws as the flags say; UsageError for bad input (see `cli.run`)."""
  del argv
  if not _HISTORY.value:
    raise UsageError("--history is required: a history.json or the run "
                     "folder holding it")
  path = history_path(_HISTORY.value)
  output = _OUTPUT.value or os.path.join(os.path.dirname(path),
                                         "history.png")
  title = _TITLE.value
  if title is None:
    title = os.path.basename(os.path.dirname(os.path.abspath(path)))
  evaluation.plot_history(read_history(path), output, title=title)
  print(f"plot_history: wrote {output}")
  return 0


if __name__ == "__main__":
  cli.run(main, "plot_history")
