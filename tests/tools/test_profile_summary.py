"""tools/profile_summary.py: a profile's op time by op type and by layer."""

from __future__ import annotations

import os
import subprocess
import sys

from absl.testing import flagsaver
import pytest
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from fastcifar.errors import UsageError
from tests.cli.test_quiet import log_lines
from tools import profile_summary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

PS = 10**12  # picoseconds per second, the profile's unit
# (thread, event name, seconds) as a seed-CNN step names them.
EVENTS = [
    ("tf_Compute/1", "while/body/_1/while/seed_cnn_1/conv2d_1_2/Relu:"
     "_MklNativeFusedConv2D", 3.0),
    ("tf_Compute/2", "while/body/_1/gradient_tape/while/seed_cnn_1/"
     "conv2d_1_2/convolution/Conv2DBackpropFilter:"
     "_MklNativeConv2DBackpropFilterWithBias", 5.0),
    ("tf_Compute/2", "while/body/_1/gradient_tape/while/seed_cnn_1/"
     "conv2d_1_2/ReluGrad:ReluGrad", 1.0),
    ("tf_Compute/1", "while/body/_1/while/adam/Sub:Sub", 0.5),
    ("tf_Compute/1", "while/body/_1/while/MirrorPad:MirrorPad", 0.5),
    # Containers and other threads are not ops: left out.
    ("tf_Compute/1", "ExecutorState::Process", 9.0),
    ("tf_Compute/2", "ParallelFor", 2.0),
    ("python", "EagerExecute:foo", 7.0),
    ("tf_data_iterator_get_next/3", "Iterator::Root:Prefetch", 4.0),
]


def write_profile(folder, events=EVENTS, plane_name="/host:CPU") -> str:
  space = xplane_pb2.XSpace()
  plane = space.planes.add(name=plane_name)
  lines = {}
  for i, (thread, name, seconds) in enumerate(events, start=1):
    plane.event_metadata[i].id = i
    plane.event_metadata[i].name = name
    if thread not in lines:
      lines[thread] = plane.lines.add(name=thread)
    lines[thread].events.add(metadata_id=i, offset_ps=0,
                             duration_ps=int(seconds * PS))
  path = os.path.join(folder, "plugins", "profile", "run1",
                      "host.xplane.pb")
  os.makedirs(os.path.dirname(path))
  with open(path, "wb") as f:
    f.write(space.SerializeToString())
  return path


def test_op_types_and_layers_are_read_from_the_names():
  assert profile_summary.op_type_and_layer(EVENTS[1][1]) == (
      "grad _MklNativeConv2DBackpropFilterWithBias", "conv2d_1_2")
  assert profile_summary.op_type_and_layer(EVENTS[0][1]) == (
      "_MklNativeFusedConv2D", "conv2d_1_2")
  assert profile_summary.op_type_and_layer(EVENTS[3][1]) == ("Sub", "adam")
  assert profile_summary.op_type_and_layer(EVENTS[4][1]) == (
      "MirrorPad", "MirrorPad")


def test_sums_only_the_ops_on_compute_threads(tmp_path):
  path = write_profile(str(tmp_path))
  total, by_type, by_layer = profile_summary.summarize(
      profile_summary.read_op_events(path))
  assert total == pytest.approx(10.0)
  assert by_type["grad _MklNativeConv2DBackpropFilterWithBias"] == (
      pytest.approx(5.0))
  assert by_layer["conv2d_1_2"] == pytest.approx(9.0)
  assert by_layer["adam"] == pytest.approx(0.5)


def test_main_prints_both_tables(tmp_path, capsys):
  write_profile(str(tmp_path))
  with flagsaver.flagsaver(logdir=str(tmp_path), top=3):
    assert profile_summary.main([]) == 0
  out = capsys.readouterr().out
  assert "10.000 s of op time" in out
  assert ("| grad _MklNativeConv2DBackpropFilterWithBias | 5.000 | 50.0% |"
          in out)
  assert "| conv2d_1_2 | 9.000 | 90.0% |" in out
  assert "MirrorPad" not in out.split("| layer |")[0]  # beyond --top=3


def test_runs_as_the_docs_say_without_tensorflow_log_lines(tmp_path):
  # It reads the profile with TensorFlow's protobufs, so TensorFlow loads:
  # its start-up lines (an "E0000 ... failed call to cuInit" among them)
  # must be silenced as in every other command.
  write_profile(str(tmp_path))
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
  result = subprocess.run([sys.executable, "tools/profile_summary.py",
                           f"--logdir={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "10.000 s of op time" in result.stdout
  assert not log_lines(result.stdout + result.stderr), result.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no profile"),
    (lambda d: open(write_profile(d), "wb").write(b"\xff not a proto"),
     "not a readable TensorFlow profile"),
    (lambda d: write_profile(d, plane_name="/device:GPU:0"),
     "holds no TensorFlow ops"),
])
def test_bad_input_is_a_usage_error(tmp_path, make, message):
  make(str(tmp_path))
  with flagsaver.flagsaver(logdir=str(tmp_path)):
    with pytest.raises(UsageError, match=message):
      profile_summary.main([])
