"""Every convolution of both models, pass by pass: where a training step goes.

For each convolution of the seed CNN and the fast model (or of your own
model, `--model=package.module:function`), at its model's batch size and
precision (bfloat16 where fastcifar's `auto` picks it), in one process:

  forward         `tf.nn.conv2d`, the pass oneDNN is best at;
  input_grad      `Conv2DBackpropInput` (the first layer has none in
                  training: its input is the image);
  weight_grad     `Conv2DBackpropFilter`, oneDNN's backward-weights;
  layer_step      the layer as the model trains it: its own `call` under a
                  `GradientTape`, forward plus both gradients, with whatever
                  custom gradient the layer has (`fastcifar.layers.Conv3x3`).

Each pass is compiled once (`tf.function`), warmed up, then timed over
`--repeats` rounds of `--iterations` calls, round-robin across passes so
that a slow spell of a shared machine falls on all of them; the median
round is reported with the multiply-adds, the achieved FLOP/s (2 FLOPs per
multiply-add), its `fraction_of_peak` (the device's peak at the precision,
`benchmarks.flops`) and `forward_ratio`, the pass's time over the forward
pass's (the same number of multiply-adds in all three passes).

    python -m benchmarks.conv_passes --quick
    python -m benchmarks.conv_passes --model=fast --output=runs/passes.jsonl
    python -m benchmarks.conv_passes --model=benchmarks.library:build
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from benchmarks import flops, harness
from fastcifar.training import policy

FLAGS = harness.FLAGS
MODEL_BATCH = {"seed": 128, "fast": 1024}
DEFAULT_BATCH = 128  # a builder's: the default recipe's batch
PASSES = ("forward", "input_grad", "weight_grad", "layer_step")


@dataclasses.dataclass(frozen=True)
class ConvShape:
  """One convolution as a training step sees it."""
  model: str
  index: int          # the convolution's place in its model, from 0
  layer: keras.layers.Conv2D
  input_shape: tuple[int, int, int, int]   # (batch, H, W, C_in)
  output_shape: tuple[int, int, int, int]  # (batch, H', W', C_out)

  @property
  def multiply_adds(self) -> int:
    """Multiply-adds of the forward pass (and of each gradient pass)."""
    return self.output_shape[0] * flops.layer_multiply_adds(
        self.layer, self.output_shape)

  @property
  def name(self) -> str:
    _, h, w, c_in = self.input_shape
    kh, kw, _, c_out = self.layer.kernel.shape
    return f"{self.model}#{self.index} {c_in}->{c_out} {kh}x{kw} at {h}x{w}"


def model_convolutions(model: keras.Model, label: str, batch_size: int,
                       image_shape=(32, 32, 3)) -> list[ConvShape]:
  """The convolutions of a model with the shapes they train at.

  Args:
    model: a built model (`flops.build_model`): a stack or a graph (a ResNet's
      shortcut convolutions read their block's input).
    label: the model's name in the records.
    batch_size: the batch the shapes carry.
    image_shape: (H, W, C) of the model's input images.

  Returns:
    One `ConvShape` per `Conv2D` (fixed whitening convolution excluded: it
    has no trained kernel), in model order.
  """
  convs = [(layer, shape_in, shape_out) for layer, shape_in, shape_out
           in flops.layer_shapes(model.layers, image_shape)
           if isinstance(layer, keras.layers.Conv2D)]
  return [ConvShape(label, index, layer, (batch_size, *shape_in[1:]),
                    (batch_size, *shape_out[1:]))
          for index, (layer, shape_in, shape_out) in enumerate(convs)]


def pass_functions(conv: ConvShape, dtype: tf.DType
                   ) -> dict[str, Callable[[], tf.Tensor]]:
  """The four passes of one convolution, each a compiled no-argument call.

  Args:
    conv: the convolution.
    dtype: the compute dtype (bfloat16 under mixed_bfloat16).

  Returns:
    Pass name -> function; `input_grad` is left out for a model's first
    convolution, whose input is the image.
  """
  rng = np.random.default_rng(conv.index)
  x = tf.constant(rng.standard_normal(conv.input_shape), dtype)
  dy = tf.constant(rng.standard_normal(conv.output_shape), dtype)
  kernel = tf.cast(conv.layer.kernel, dtype)
  padding = conv.layer.padding.upper()
  strides = [1, *conv.layer.strides, 1]

  @tf.function
  def forward():
    return tf.nn.conv2d(x, kernel, strides, padding)

  @tf.function
  def input_grad():
    return tf.raw_ops.Conv2DBackpropInput(
        input_sizes=conv.input_shape, filter=kernel, out_backprop=dy,
        strides=strides, padding=padding)

  @tf.function
  def weight_grad():
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=kernel.shape, out_backprop=dy,
        strides=strides, padding=padding)

  @tf.function
  def layer_step():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = conv.layer(x)
    return tape.gradient(y, [x, conv.layer.kernel], output_gradients=dy)

  passes = {"forward": forward, "input_grad": input_grad,
            "weight_grad": weight_grad, "layer_step": layer_step}
  if conv.index == 0:
    del passes["input_grad"]
  return passes


def _seconds(function: Callable[[], tf.Tensor], iterations: int) -> float:
  """Wall seconds per call of `function`, over `iterations` calls."""
  start = time.perf_counter()
  for _ in range(iterations):
    result = function()
  tf.nest.map_structure(lambda t: t.numpy(), result)  # wait for the work
  return (time.perf_counter() - start) / iterations


def time_passes(passes: dict[str, Callable[[], tf.Tensor]], iterations: int,
                repeats: int) -> dict[str, float]:
  """Median seconds per call of each pass, measured round-robin.

  Args:
    passes: name -> compiled call.
    iterations: calls per round.
    repeats: rounds; every pass is timed once per round.

  Returns:
    Name -> median seconds per call.
  """
  for function in passes.values():  # trace, compile, first-call set-up
    _seconds(function, 2)
  rounds = {name: [] for name in passes}
  for _ in range(repeats):
    for name, function in passes.items():
      rounds[name].append(_seconds(function, iterations))
  return {name: harness.median(times) for name, times in rounds.items()}


def main(argv: list[str]) -> None:
  del argv
  report = harness.Report("conv_passes", FLAGS.output)
  precision = policy.resolve_precision("auto", policy.detect_device())
  dtype = tf.bfloat16 if precision == "mixed_bfloat16" else (
      tf.float16 if precision == "mixed_float16" else tf.float32)
  peak = flops.peak(precision)
  names = ["seed", "fast"] if FLAGS.model == "both" else [FLAGS.model]
  iterations = harness.setting("iterations", 2)
  repeats = harness.setting("repeats", 1)
  for name in names:
    batch = (harness.setting("batch_size", 8)
             or MODEL_BATCH.get(name, DEFAULT_BATCH))
    with policy.precision_scope(precision):
      convs = model_convolutions(flops.build_model(name), name, batch)
    for conv in convs:
      seconds = time_passes(pass_functions(conv, dtype), iterations, repeats)
      for pass_name, s in seconds.items():
        # layer_step holds all three passes' multiply-adds.
        rate = ((3 if pass_name == "layer_step" else 1) * 2
                * conv.multiply_adds / s)
        report.add(conv=conv.name, model=name, batch_size=batch,
                   precision=precision, pass_=pass_name, ms=s * 1e3,
                   multiply_adds=conv.multiply_adds, gflops_per_s=rate / 1e9,
                   fraction_of_peak=(rate / peak.flops_per_second
                                     if peak else None),
                   peak_unit=peak.unit if peak else None,
                   forward_ratio=s / seconds["forward"])
  report.print_table("Convolutions pass by pass",
                     ["conv", "batch_size", "pass_", "ms", "gflops_per_s",
                      "fraction_of_peak", "forward_ratio"])


def define_flags() -> None:
  flags.DEFINE_string("model", "both",
                      "Whose convolutions: both, seed, fast, or a builder "
                      "package.module:function (as fastcifar.train's "
                      "--model).", flag_values=FLAGS)
  flags.DEFINE_integer("batch_size", 0,
                       "0: each model's own batch (seed 128, fast 1024, a "
                       "builder's 128).", flag_values=FLAGS)
  flags.DEFINE_integer("iterations", 10, "Calls per timed round.",
                       flag_values=FLAGS)
  flags.DEFINE_integer("repeats", 5, "Timed rounds, round-robin over passes.",
                       flag_values=FLAGS)


if __name__ == "__main__":
  harness.run_main(main, define_flags)
