"""Rewrites results.json and model.keras until killed: `rewrite_forever DIR`.

A command for `tests.forked.CommandServer` (test_outputs' kill during
saves): after each round of both files in DIR it prints the round's number.
"""

from __future__ import annotations

import sys

from fastcifar import models
from fastcifar.training import outputs


def run() -> None:
  """Rewrites both files in sys.argv[1] until killed."""
  folder = sys.argv[1]
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3)
  i = 0
  while True:
    i += 1
    outputs.write_json(folder + "/results.json", {"i": i, "pad": "x" * 10**6})
    outputs.save_model(model, folder + "/model.keras")
    print(i, flush=True)
