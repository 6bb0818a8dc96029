"""tools/plot_history.py: history.json in, a PNG of the curves out."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from fastcifar.training import evaluation
from fastcifar.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HISTORY = {
    "loss": [1.9, 1.4, 1.1, 0.9, 0.8],
    "accuracy": [0.30, 0.50, 0.61, 0.68, 0.72],
    "val_loss": [1.6, 1.2, 1.0, 0.95, 0.9],
    "val_accuracy": [0.42, 0.57, 0.65, 0.69, 0.70],
}
SIZE = (1100, 450)


def png_size(path: str) -> tuple[int, int]:
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


def assert_real_picture(path: str) -> None:
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  assert png_size(path) == SIZE
  pixels = image.imread(path)
  assert pixels.shape[:2] == (SIZE[1], SIZE[0])
  rgb = (pixels[..., :3] * 255).astype(np.uint32)
  colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
  assert len(colours) > 50, "the picture is (nearly) blank"


def test_plot_history_draws_both_panels(tmp_path):
  path = str(tmp_path / "history.png")
  evaluation.plot_history(HISTORY, path, title="run")
  assert_real_picture(path)


def test_plot_history_without_test_curves(tmp_path):
  path = str(tmp_path / "history.png")
  evaluation.plot_history({"loss": [2.0, 1.0], "accuracy": [0.2, 0.5]}, path)
  assert_real_picture(path)


def test_plot_history_puts_sparse_evaluations_at_their_epochs(monkeypatch):
  figures = []
  monkeypatch.setattr(evaluation, "_save_png",
                      lambda figure, path: figures.append(figure))
  evaluation.plot_history({**HISTORY, "val_loss": [1.0, 0.9],
                           "val_accuracy": [0.65, 0.70], "val_epochs": [3, 5]},
                          "unused.png")
  test_curves = [list(line.get_xdata()) for axes in figures[0].axes
                 for line in axes.get_lines() if line.get_label() == "test"]
  assert test_curves == [[3, 5], [3, 5]]


def test_plot_history_refuses_an_empty_history(tmp_path):
  with pytest.raises(UsageError, match="no loss or accuracy"):
    evaluation.plot_history({"lr": [0.1]}, str(tmp_path / "x.png"))


def run(args: list[str]) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


def test_runs_as_a_script_and_as_a_module(tmp_path):
  run_dir = tmp_path / "run1"
  run_dir.mkdir()
  (run_dir / "history.json").write_text(json.dumps(HISTORY))

  as_script = run(["tools/plot_history.py", f"--history={run_dir}"])
  assert as_script.returncode == 0, as_script.stderr
  assert as_script.stdout.strip() == (
      f"plot_history: wrote {run_dir / 'history.png'}")
  assert_real_picture(str(run_dir / "history.png"))

  output = tmp_path / "curves.png"
  as_module = run(["-m", "tools.plot_history",
                   f"--history={run_dir / 'history.json'}",
                   f"--output={output}", "--title=seed"])
  assert as_module.returncode == 0, as_module.stderr
  assert_real_picture(str(output))

  missing = run(["-m", "tools.plot_history", f"--history={tmp_path}"])
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1].startswith(
      "plot_history: error: --history")
