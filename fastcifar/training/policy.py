"""Precision and XLA choices for the present device.

Measured on a 2-core Sapphire Rapids CPU (AMX-BF16), TensorFlow 2.21: the
seed CNN trained about 1.9x faster under mixed_bfloat16 than float32, and
7-16x *slower* with `jit_compile=True`; so on CPUs `auto` means bfloat16 where
the CPU has bfloat16 units and no XLA over the whole step (the training step
still compiles its augmentation, see `training.make_train_step`). On
GPUs, `auto` follows the book: mixed_float16 from compute capability 7.0
(tensor cores) and XLA on.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_CHOICES = ("auto", "true", "false")


def detect_device() -> str:
  """'TPU', 'GPU' or 'CPU': the kind of device the training step runs on."""
  if tf.config.list_logical_devices("TPU"):
    return "TPU"
  if tf.config.list_physical_devices("GPU"):
    return "GPU"
  return "CPU"


def onednn_in_use() -> bool:
  """Whether TensorFlow runs its oneDNN CPU kernels in this process.

  TensorFlow decides once, as it starts, from the CPU and the variable
  TF_ENABLE_ONEDNN_OPTS (`fastcifar.cli.cpu`): Eigen's kernels otherwise.
  """
  # The only public trace of the choice is tf.test's, which needs the test
  # utilities imported; this is the function they call.
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.python.util import _pywrap_util_port
  return bool(_pywrap_util_port.IsMklEnabled())


def cpu_has_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
  """Whether the CPU has bfloat16 matrix units (AMX-BF16 or AVX512-BF16)."""
  try:
    with open(cpuinfo_path) as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return bool(flags & {"amx_bf16", "avx512_bf16"})
  except OSError:
    pass
  return False


def _gpu_compute_capability() -> tuple[int, int]:
  gpus = tf.config.list_physical_devices("GPU")
  capabilities = [tf.config.experimental.get_device_details(g).get(
      "compute_capability", (0, 0)) for g in gpus]
  return min(capabilities) if capabilities else (0, 0)


def resolve_precision(precision: str, device: str | None = None,
                      cpu_bfloat16: bool | None = None,
                      gpu_capability: tuple[int, int] | None = None) -> str:
  """Turns `auto` into a Keras mixed-precision policy name for the device.

  Args:
    precision: one of `PRECISIONS`.
    device: 'CPU', 'GPU' or 'TPU'; detected when None.
    cpu_bfloat16: whether the CPU has bfloat16 units; detected when None.
    gpu_capability: the lowest GPU compute capability; detected when None.

  Returns:
    "float32", "mixed_float16" or "mixed_bfloat16".
  """
  if precision not in PRECISIONS:
    raise ValueError(f"unknown precision {precision!r}; choose one of "
                     f"{PRECISIONS}")
  if precision != "auto":
    return precision
  device = device or detect_device()
  if device == "TPU":
    return "mixed_bfloat16"
  if device == "GPU":
    capability = gpu_capability or _gpu_compute_capability()
    return "mixed_float16" if capability >= (7, 0) else "float32"
  bf16 = cpu_has_bfloat16() if cpu_bfloat16 is None else cpu_bfloat16
  return "mixed_bfloat16" if bf16 else "float32"


def resolve_jit_compile(jit_compile: str, device: str | None = None) -> bool:
  """Turns `auto` into a yes or no: XLA on GPUs and TPUs, off on CPUs.

  Args:
    jit_compile: one of `JIT_CHOICES`.
    device: 'CPU', 'GPU' or 'TPU'; detected when None.

  Returns:
    Whether to compile the training step with XLA.
  """
  if jit_compile not in JIT_CHOICES:
    raise ValueError(f"unknown jit_compile {jit_compile!r}; choose one of "
                     f"{JIT_CHOICES}")
  if jit_compile != "auto":
    return jit_compile == "true"
  return (device or detect_device()) in ("GPU", "TPU")


@contextlib.contextmanager
def precision_scope(policy: str) -> Iterator[None]:
  """Sets Keras's global dtype policy for a block, then puts the old one back.

  Keras reads the policy when layers are built, so models built inside the
  block keep their dtypes after it; callers are not left with a changed policy.
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)
