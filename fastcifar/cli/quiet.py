"""Quiet start-up for fastcifar's commands: no TensorFlow log noise.

TensorFlow 2.21 writes a dozen C++ log lines to stderr before a command says
anything: the oneDNN and CPU-instruction notices, "Could not find cuda
drivers", an `E0000 ... failed call to cuInit` on every CPU-only machine with
the CUDA wheel, GeneratorDatasetOp warnings. A newcomer reads the E line as a
failure. Commands call `start()` before TensorFlow is imported:

- `TF_CPP_MIN_LOG_LEVEL=3` (unless you set it yourself) turns TensorFlow's
  C++ logging off. An error still reaches you, as the Python exception that
  TensorFlow raises; Python warnings are untouched.
- The lines TensorFlow's libraries log while they load, before absl logging
  is set up, ignore that variable (tensorflow/tensorflow#100442); they are
  filtered out of stderr while `import tensorflow` runs, and every other line
  written then (a Python warning, a crash message) passes through.

Once the flags are parsed, `quiet_logging` keeps Python logging at WARNING:
absl's `app.run` raises it to INFO when -v/--verbosity is not given, and
TensorFlow and TFDS log INFO lines at every checkpoint, export and dataset
read ("Sharding callback duration", "Assets written to", "Constructing
tf.data.Dataset"), which then land inside Keras's progress bar.

`--verbose` (or `start(verbose=True)`) leaves everything as TensorFlow does
it. Importing this module changes nothing; only commands call `start`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from typing import Sequence

from absl import flags
from absl import logging

# absl's C++ log line ("I0000 00:00:1796191317.845982 6404 port.cc:153] ..."),
# TensorFlow's older one ("2025-09-17 14:44:05.157831: I path.cc:32] ...")
# and absl's notice that logging is not initialized yet.
NOISE = (r"(WARNING: All log messages before absl::InitializeLog\(\)"
         r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
         r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] )")
# The TFLite converter's C++ line on every int8 calibration, unprefixed.
CONVERTER_NOISE = NOISE[:-1] + r"|fully_quantize: \d+, inference_type: )"

# Runs in a child process, so that what it has read still reaches the
# terminal if TensorFlow aborts the parent while loading.
_FILTER = """
import re, sys
noise = re.compile(sys.argv[1].encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
  if not noise.match(line):
    out.write(line)
    out.flush()
"""

_TRUE = ("", "true", "t", "1")


def define_verbose_flag(flag_values: flags.FlagValues = flags.FLAGS
                        ) -> flags.FlagHolder:
  """Defines --verbose, which `start` reads from the command line."""
  return flags.DEFINE_boolean(
      "verbose", False, "Show TensorFlow's start-up and C++ log lines, and "
      "the full traceback of an error.", flag_values=flag_values)


def verbose_requested(argv: Sequence[str]) -> bool:
  """Whether the command line sets --verbose (absl's spellings; last wins).

  Read before the flags are parsed: TensorFlow is imported by then.
  """
  verbose = False
  for arg in argv[1:]:
    if arg == "--":
      break
    name, equals, value = arg.lstrip("-").partition("=")
    if name == "verbose":
      verbose = not equals or value.lower() in _TRUE
    elif name == "noverbose":
      verbose = False
  return verbose


@contextlib.contextmanager
def filtered_stderr(pattern: str = NOISE):
  """Drops lines matching `pattern` from whatever writes to file descriptor 2.

  C++ libraries write to the descriptor, not to `sys.stderr`, hence the
  descriptor is redirected through a filtering child process.
  """
  sys.stderr.flush()
  try:
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _FILTER, pattern],
        stdin=subprocess.PIPE, stdout=2)
  except OSError:  # no interpreter to run it
    yield
    return
  saved = os.dup(2)
  os.dup2(child.stdin.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    child.stdin.close()
    child.wait()


def start(argv: Sequence[str] | None = None, *,
          verbose: bool | None = None) -> None:
  """Silences TensorFlow's logging, then imports it (see the module doc).

  Args:
    argv: the command line; `sys.argv` when None.
    verbose: overrides `--verbose` on the command line.
  """
  if verbose is None:
    verbose = verbose_requested(sys.argv if argv is None else argv)
  if verbose or "tensorflow" in sys.modules:  # not wanted, or too late
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if os.name != "posix":
    return
  with filtered_stderr():
    importlib.import_module("tensorflow")


def quiet_logging(verbose: bool,
                  flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Keeps Python logging at WARNING after absl has parsed the flags.

  `absl.app.run` sets the verbosity to INFO, once the flags are parsed,
  unless -v/--verbosity was given; TensorFlow's and TFDS's INFO lines are
  for their developers. Call it from the flags parser `app.run` is given.

  Args:
    verbose: --verbose: keep absl's choice.
    flag_values: where -v/--verbosity is defined.
  """
  if not verbose and not flag_values["verbosity"].present:
    # Assigning the flag marks it set, so app.run leaves it be.
    logging.set_verbosity(logging.WARNING)
