"""Tests for fastcifar.cli.quiet: commands start without TensorFlow's log noise.

The end-to-end checks (a training run prints none of it; --verbose brings it
back) are in test_train.py; the installed scripts' in test_scripts.py.
"""

from __future__ import annotations

import os
import re
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

# A line logged rather than said: C++ or absl logging ("I1207 08:04:28.2897
# 6404 functional_saver.py:440] ..."), TensorFlow's older C++ format,
# Python's logging ("INFO:tensorflow:..."), a Python warning, absl's notice,
# and the TFLite converter's unprefixed note.
_LOG_LINE = re.compile(
    r"\s*([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    r"|(DEBUG|INFO|WARNING|ERROR):[\w.]+:"
    r"|.*\b\w*Warning: |WARNING: All log messages|fully_quantize: )")


def log_lines(output: str) -> list[str]:
  """The lines of `output` logged by TensorFlow, absl, TFDS or warnings."""
  return [line for line in re.split(r"[\r\n]", output)
          if _LOG_LINE.match(line)]


def test_log_lines_finds_each_kind_and_keeps_the_commands_own():
  logged = NOISE_LINES + (
      "I1207 08:04:28.289733 140011196533632 functional_saver.py:440] "
      "Sharding callback duration: 28 microseconds",
      "INFO:tensorflow:Assets written to: x/saved_model.tmp/assets",
      "/x/interpreter.py:457: UserWarning:     Warning: tf.lite.Interpreter "
      "is deprecated and is scheduled for deletion in",
      "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32")
  said = ("fastcifar: test accuracy 0.2266 after 2 epochs",
          "fastcifar.doctor: warning [too-few-epochs] accuracy was still "
          "rising", "Epoch 1/2", "fastcifar.export: wrote x/saved_model")
  assert log_lines("\n".join(logged + said)) == list(logged)


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


def test_another_program_run_with_dash_m_is_left_alone(tmp_path):
  # Python imports a -m module's packages with sys.argv[0] == "-m", as it
  # does fastcifar's when a command starts.
  (tmp_path / "tool").mkdir()
  (tmp_path / "tool" / "__init__.py").write_text("import fastcifar\n")
  (tmp_path / "tool" / "main.py").write_text(
      "import os, sys\n"
      "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'),"
      " 'tensorflow' in sys.modules)\n")
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(
      [sys.executable, "-m", "tool.main"], capture_output=True, text=True,
      env=dict(env, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{tmp_path}"),
      cwd=str(tmp_path), timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["None", "False"]
