"""TensorFlow's oneDNN CPU kernels, on for fastcifar's commands on x86.

TensorFlow 2.21's x86 wheels run convolutions, matrix multiplies and batch
normalization through oneDNN by default only on Linux CPUs with AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX (tensorflow/core/util/util.cc); on the others
(AVX2 and plain AVX-512 CPUs: AMD EPYC before Zen 4, Intel before Cascade
Lake; any CPU on Windows) they use Eigen's kernels unless
`TF_ENABLE_ONEDNN_OPTS=1` is set before TensorFlow starts. On a 2-core AMD
EPYC (Zen 1, AVX2) oneDNN's made the seed CNN's training steps 1.27-1.35x
faster (docs/benchmarks.md) and a small ResNet's epochs 1.27x under plain
Keras (docs/library.md), 2026-12-07.

Commands call `enable_onednn` before TensorFlow is imported; a value the
user set (`TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen's kernels) stands. On CPUs
where TensorFlow turns oneDNN on itself the setting changes nothing.
Importing this module changes nothing; a program of your own sets the
variable itself, before it imports TensorFlow. Whether a process runs oneDNN's
kernels: `fastcifar.training.policy.onednn_in_use()` (results.json's
`onednn`).
"""

from __future__ import annotations

import os
import platform
from typing import MutableMapping

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# platform.machine()'s names for x86-64: Linux/macOS, Windows.
_X86_64 = ("x86_64", "AMD64")


def enable_onednn(environ: MutableMapping[str, str] | None = None,
                  machine: str | None = None) -> bool:
  """Sets `TF_ENABLE_ONEDNN_OPTS=1` for this process, unless already set.

  Only on x86-64: ARM builds choose their own kernels (Arm Compute Library).
  TensorFlow reads the variable once, as it starts: call this before it is
  imported.

  Args:
    environ: the environment to change; `os.environ` when None.
    machine: the processor architecture; `platform.machine()` when None.

  Returns:
    Whether the variable was set now.
  """
  environ = os.environ if environ is None else environ
  machine = platform.machine() if machine is None else machine
  if VARIABLE in environ or machine not in _X86_64:
    return False
  environ[VARIABLE] = "1"
  return True

