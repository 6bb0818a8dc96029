"""Where a profiled run's CPU time went, by op type and by layer, as text.

    python -m fastcifar.train --output_dir=runs/p --epochs=2 --profile_steps=5,8
    python tools/profile_summary.py --logdir=runs/p/tensorboard [--top=20]

`--profile_steps` records a TensorFlow profile (an `.xplane.pb` file) that
TensorBoard's profile plugin shows; that plugin is a separate install and a
browser. This reads the newest such file under `--logdir` and prints the
time of the TensorFlow ops on the host's compute threads, summed per op type
(`_MklNativeFusedConv2D`, `ReluGrad`, ...; "grad" marks ops of the backward
pass) and per layer. Op time is summed over threads, so on a 2-core machine
it can reach twice the wall time; each row's share is of that sum. XLA
clusters appear as the ops that launch them. See docs/benchmarks.md for what
it showed for the seed CNN.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
from typing import Iterable

if __package__ in (None, ""):  # run as a script: make `fastcifar` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from fastcifar.cli import quiet  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  # Reading the profile loads TensorFlow: its start-up lines off first,
  # unless --verbose.
  quiet.start()

from fastcifar.cli import common as cli  # pylint: disable=g-import-not-at-top
from fastcifar.errors import UsageError  # pylint: disable=g-import-not-at-top

_LOGDIR = flags.DEFINE_string(
    "logdir", None, "A folder holding a profile: a run's tensorboard/ folder "
    "(or the run's --output_dir), searched for the newest *.xplane.pb.")
_TOP = flags.DEFINE_integer("top", 20, "Rows per table.", lower_bound=1)

# Events that contain others (the executor's, thread-pool work items) or are
# the Python side waiting: counting them would count the ops twice.
_CONTAINERS = ("ExecutorState::Process", "ParallelFor")
_COMPUTE_THREADS = "tf_Compute"


def newest_profile(logdir: str) -> str:
  """The newest `*.xplane.pb` under `logdir`.

  Raises:
    UsageError: there is none.
  """
  found = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  if not found:
    raise UsageError(f"no profile (*.xplane.pb) under {logdir}: train with "
                     "--output_dir=DIR --profile_steps=FIRST,LAST (steps the "
                     "run has; it says so as it starts if not) and pass "
                     "--logdir=DIR/tensorboard")
  return max(found, key=os.path.getmtime)


def read_op_events(path: str) -> Iterable[tuple[str, float]]:
  """`(event name, seconds)` of the ops on the host's compute threads.

  The file is parsed as an `XSpace` protocol buffer, data only.

  Raises:
    UsageError: the file is not a profile.
  """
  # pylint: disable=g-import-not-at-top
  from google.protobuf.message import DecodeError
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  space = xplane_pb2.XSpace()
  try:
    with open(path, "rb") as f:
      space.ParseFromString(f.read())
  except (OSError, DecodeError) as e:
    raise UsageError(f"{path} is not a readable TensorFlow profile ({e}); "
                     "profile again with --profile_steps") from None
  for plane in space.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if not line.name.startswith(_COMPUTE_THREADS):
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" in name and not name.startswith(_CONTAINERS):
          yield name, event.duration_ps / 1e12


def op_type_and_layer(name: str) -> tuple[str, str]:
  """Splits `scope/.../layer/op:OpType` into ("[grad ]OpType", layer).

  The layer is the scope element after the model's own (e.g. `conv2d_1`),
  with Keras's per-trace suffixes (`_1`, `_2`) as they are; the backward
  pass's ops, under `gradient_tape/`, are marked "grad".
  """
  scope, op_type = name.rsplit(":", 1)
  backward = "gradient_tape/" in scope
  parts = [p for p in scope.split("/")
           if p and not re.fullmatch(r"while|body|_\d+|gradient_tape", p)]
  layer = parts[1] if len(parts) > 2 else (parts[0] if parts else "?")
  return ("grad " if backward else "") + op_type, layer


def summarize(events: Iterable[tuple[str, float]]
              ) -> tuple[float, collections.Counter, collections.Counter]:
  """Total op seconds, and seconds per op type and per layer."""
  by_type, by_layer = collections.Counter(), collections.Counter()
  for name, seconds in events:
    op_type, layer = op_type_and_layer(name)
    by_type[op_type] += seconds
    by_layer[layer] += seconds
  return sum(by_type.values()), by_type, by_layer


def table(title: str, counts: collections.Counter, total: float,
          top: int) -> str:
  rows = [f"| {title} | seconds | share |", "|---|---|---|"]
  for key, seconds in counts.most_common(top):
    rows.append(f"| {key} | {seconds:.3f} | {100 * seconds / total:.1f}% |")
  return "\n".join(rows)


def main(argv: list[str]) -> int:
  """Prints the tables; UsageError for bad input (see `cli.run`)."""
  del argv
  if not _LOGDIR.value:
    raise UsageError("--logdir is required: the run's tensorboard/ folder")
  path = newest_profile(_LOGDIR.value)
  total, by_type, by_layer = summarize(read_op_events(path))
  if not total:
    raise UsageError(f"{path} holds no TensorFlow ops on the CPU's compute "
                     "threads (a GPU or TPU profile?): open it in "
                     "TensorBoard's profile plugin")
  print(f"{path}: {total:.3f} s of op time on the CPU's compute threads\n")
  print(table("op type", by_type, total, _TOP.value) + "\n")
  print(table("layer", by_layer, total, _TOP.value))
  return 0


if __name__ == "__main__":
  cli.run(main, "profile_summary")
