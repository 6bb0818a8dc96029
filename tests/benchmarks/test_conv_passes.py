"""benchmarks.conv_passes: the convolutions' shapes and multiply-adds, and a
quick run that reports every pass."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from benchmarks import conv_passes, flops
from fastcifar.errors import UsageError
from tests.benchmarks.test_benchmarks import run_benchmark


def test_seed_cnn_convolutions_and_multiply_adds():
  convs = conv_passes.model_convolutions(flops.build_model("seed"), "seed",
                                         batch_size=2)
  assert [c.input_shape for c in convs] == [
      (2, 32, 32, 3), (2, 32, 32, 32), (2, 15, 15, 32), (2, 15, 15, 64)]
  assert [c.output_shape for c in convs] == [
      (2, 32, 32, 32), (2, 30, 30, 32), (2, 15, 15, 64), (2, 13, 13, 64)]
  # 32*32*32*27 + 30*30*32*288 + 15*15*64*288 + 13*13*64*576, per image.
  assert sum(c.multiply_adds for c in convs) == 2 * (
      884_736 + 8_294_400 + 4_147_200 + 6_230_016)


def test_fast_model_has_six_trained_convolutions():
  convs = conv_passes.model_convolutions(flops.build_model("fast"), "fast",
                                         batch_size=1)
  assert [(c.input_shape[1], c.layer.kernel.shape[2:]) for c in convs] == [
      (31, (24, 64)), (15, (64, 64)), (15, (64, 256)), (7, (256, 256)),
      (7, (256, 256)), (3, (256, 256))]


def test_a_builders_resnet_with_strided_and_shortcut_convolutions():
  convs = conv_passes.model_convolutions(
      flops.build_model("benchmarks.library:build"), "resnet", batch_size=2)
  # Each shortcut (1x1, strided) reads its block's input, not the conv
  # before it in the list (Keras lists a graph's layers by depth).
  assert [(c.input_shape[1:], c.output_shape[1:], c.layer.strides)
          for c in convs] == [
              ((32, 32, 3), (32, 32, 32), (1, 1)),
              ((32, 32, 32), (32, 32, 32), (1, 1)),
              ((32, 32, 32), (32, 32, 32), (1, 1)),
              ((32, 32, 32), (16, 16, 64), (2, 2)),
              ((32, 32, 32), (16, 16, 64), (2, 2)),  # shortcut
              ((16, 16, 64), (16, 16, 64), (1, 1)),
              ((16, 16, 64), (8, 8, 128), (2, 2)),
              ((16, 16, 64), (8, 8, 128), (2, 2)),  # shortcut
              ((8, 8, 128), (8, 8, 128), (1, 1))]
  # Every pass of a strided convolution runs at its stride.
  strided = convs[3]
  passes = conv_passes.pass_functions(strided, tf.float32)
  assert passes["forward"]().shape == strided.output_shape
  assert passes["input_grad"]().shape == strided.input_shape
  assert passes["weight_grad"]().shape == strided.layer.kernel.shape


def test_an_unknown_model_is_one_usage_error():
  with pytest.raises(UsageError, match="neither one of seed, fast nor"):
    flops.build_model("resnet")


def test_quick_run_reports_every_pass(tmp_path, capsys):
  out = tmp_path / "passes.jsonl"
  # In this process, as `python -m benchmarks.conv_passes` runs it (see
  # test_benchmarks.py): a process of its own would add only its start-up.
  run_benchmark(conv_passes, capsys, "--quick", "--model=seed",
                f"--output={out}")
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  # 4 convolutions x 4 passes, less the first one's input gradient.
  assert len(rows) == 15
  assert {r["pass_"] for r in rows} == set(conv_passes.PASSES)
  assert all(r["ms"] > 0 and r["cpu_model"] for r in rows)
  assert all(r["forward_ratio"] == 1.0 for r in rows
             if r["pass_"] == "forward")
