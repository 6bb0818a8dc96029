"""What every benchmark records beside its numbers: hardware and versions."""

from __future__ import annotations

import json
import platform
import sys

import numpy as np
import tensorflow as tf

import fastcifar
from fastcifar.training import policy


def cpu_model() -> str:
  """The CPU's model name, from /proc/cpuinfo where there is one."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> dict:
  """Device, CPU, GPU names and library versions, for one JSON record."""
  import os  # pylint: disable=g-import-not-at-top
  gpus = tf.config.list_physical_devices("GPU")
  gpu_names = [tf.config.experimental.get_device_details(g).get("device_name",
                                                                g.name)
               for g in gpus]
  return {
      "device": "GPU" if gpus else "CPU",
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "gpu": ", ".join(gpu_names) or None,
      # Eigen's or oneDNN's CPU kernels in this process (TensorFlow reads
      # TF_ENABLE_ONEDNN_OPTS once); child processes inherit the variable,
      # and fastcifar's commands set it to 1 on x86 when it is unset.
      "onednn": policy.onednn_in_use(),
      "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
      "tensorflow_version": tf.__version__,
      "keras_version": __import__("keras").__version__,
      "numpy_version": np.__version__,
      "python_version": sys.version.split()[0],
      "fastcifar_version": fastcifar.__version__,
  }


def emit(record: dict, output: str | None) -> None:
  """Prints one measurement as a JSON line, and appends it to `output`."""
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if output:
    with open(output, "a") as f:
      f.write(line + "\n")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
  """Renders rows as a markdown table with the given columns."""
  def cell(value):
    if isinstance(value, float):
      return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)

  lines = ["| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |"
            for r in rows]
  return "\n".join(lines)
