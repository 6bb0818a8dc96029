"""Tests for fastcifar.cli.quiet: commands start without TensorFlow's log noise.

The end-to-end checks (a training run prints none of it; --verbose brings it
back) are in test_train.py; the installed scripts' in test_scripts.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastcifar.cli import quiet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796191317.845982    6404 port.cc:153] oneDNN custom "
    "operations are on.",
    "E0000 00:00:1796191321.667791    6404 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error",
    "W0000 00:00:1796191333.142524    6404 dataset.cc:997] Input of "
    "GeneratorDatasetOp::Dataset will not be optimized",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/"
    "cudart_stub.cc:32] Could not find cuda drivers on your machine",
)


@pytest.mark.parametrize("argv,expected", [
    (["prog"], False),
    (["prog", "--verbose"], True),
    (["prog", "-verbose"], True),
    (["prog", "--verbose=true"], True),
    (["prog", "--verbose=1"], True),
    (["prog", "--verbose=false"], False),
    (["prog", "--verbose", "--noverbose"], False),
    (["prog", "--noverbose", "--verbose"], True),
    (["prog", "--", "--verbose"], False),
    (["prog", "--verbose_extra"], False),
])
def test_verbose_requested(argv, expected):
  assert quiet.verbose_requested(argv) is expected


def test_filter_drops_tensorflow_start_up_lines_and_keeps_the_rest(capfd):
  real = ("UserWarning: numpy is older than this module needs\n"
          "F0000 00:00:1.5 1 cpu_feature_guard.cc:1] AVX missing: abort\n")
  with quiet.filtered_stderr():
    os.write(2, ("\n".join(NOISE_LINES) + "\n" + real).encode())
  assert capfd.readouterr().err == real


def test_importing_fastcifar_changes_no_global_state():
  code = ("import os, sys\n"
          "before = dict(os.environ)\n"
          "import fastcifar, fastcifar.cli.quiet, fastcifar.cli.scripts\n"
          "assert dict(os.environ) == before\n"
          "assert 'tensorflow' not in sys.modules\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                          timeout=60, check=False)
  assert result.returncode == 0, result.stderr


def test_start_respects_verbose_and_a_tensorflow_already_loaded(monkeypatch):
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  quiet.start(["prog", "--verbose"])
  assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  quiet.start(["prog"])  # too late to matter: changes nothing
  assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
