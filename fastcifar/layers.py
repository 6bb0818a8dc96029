"""Building blocks that Keras lacks or runs slowly here.

For a model of your own, `Standardize` (uint8 pixels in, standardized in the
model) and `FlipAndTranslate` (fastcifar's training augmentation) are the two to
start with (docs/library.md). Each is a plain Keras layer or initializer
(serializable, so a saved `.keras` model loads with them) written for speed on
the device the step runs on: measured on a 2-core Sapphire Rapids CPU,
TensorFlow 2.21, the fast model took 147 s per epoch with Keras's
BatchNormalization and GELU and 84 s with `BatchNorm` and `GELU` below
(bfloat16, batch 1024, XLA off).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import layers, ops
import numpy as np
import tensorflow as tf

from fastcifar.data import augment
from fastcifar.training import policy

# The name of `PatchWhitening`'s bias, for optimizers that treat it apart.
WHITENING_BIAS = "whitening_bias"


@keras.saving.register_keras_serializable(package="fastcifar")
class Standardize(layers.Layer):
  """uint8 pixels to `(x/255 - mean) / std` per channel, in the compute dtype.

  mean and std are constants of the config (fractions of 255), not weights, so
  the layer adds no parameters. The arithmetic runs in float32 and only the
  result is cast, so bfloat16 loses nothing in the subtraction.
  """

  def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
    super().__init__(**kwargs)
    self.mean = [float(m) for m in mean]
    self.std = [float(s) for s in std]

  def call(self, images, training=False):
    scale = [1.0 / (255.0 * s) for s in self.std]
    offset = [m / s for m, s in zip(self.mean, self.std)]
    if training:
      # In the training step, one pass compiled by XLA instead of four ops
      # (cast, multiply, subtract, cast): 1.024x the seed CNN's step (two
      # in-process A/B runs of 10 and 14 rounds, 2-core Xeon, 2026-12-03).
      # Elsewhere plain ops, so that an exported model needs no XLA.
      return _standardize_compiled(images, scale, offset, self.compute_dtype)
    return _standardize(images, scale, offset, self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "mean": self.mean, "std": self.std}


def _standardize(images, scale: Sequence[float], offset: Sequence[float],
                 dtype: str):
  """`cast(float32(images) * scale - offset, dtype)`, per channel."""
  return ops.cast(ops.cast(images, "float32") * scale - offset, dtype)


_standardize_compiled = tf.function(_standardize, jit_compile=True)


@keras.saving.register_keras_serializable(package="fastcifar")
class FlipAndTranslate(layers.Layer):
  """fastcifar's training augmentation as a layer: flips and 2 px shifts.

  In training only (`training=True`, as `fit` calls it); otherwise the
  images pass unchanged. The images are exactly those fastcifar's own
  training step makes (`augment.augment_step`) with the same seed at the
  same step: the layer counts its training calls in a variable (saved with
  the model, so a restored model goes on where it stopped), seeds each
  batch with `(seed, step)`, and runs the XLA-compiled `flip_and_translate`
  on uint8 pixels (put it before `Standardize`), inside a step compiled
  with XLA or not.

  Args (of the constructor):
    seed: the run's seed.
    max_shift: the largest shift in pixels; None: 2 px at 32x32, scaled.
    alternating_flip: airbench's flips, each image the other way round
      every other epoch; needs `steps_per_epoch`. False: random flips.
    steps_per_epoch: steps in an epoch, for `alternating_flip`.
  """

  def __init__(self, seed: int = 0, max_shift: int | None = None,
               alternating_flip: bool = False,
               steps_per_epoch: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if alternating_flip and not steps_per_epoch:
      raise ValueError("alternating_flip needs steps_per_epoch, to know "
                       "which epoch a step is in")
    self.seed = int(seed)
    self.max_shift = max_shift
    self.alternating_flip = alternating_flip
    self.steps_per_epoch = steps_per_epoch

  def build(self, input_shape):
    # As Keras's own step counter (`optimizer.iterations`): every replica
    # counts the same steps, the first one's count is the variable's value.
    self.step = self.add_weight(shape=(), name="step", dtype="int64",
                                initializer="zeros", trainable=False,
                                autocast=False,
                                aggregation="only_first_replica")

  def call(self, images, training=False):
    if not training:
      return images
    step = tf.convert_to_tensor(self.step.value)
    self.step.assign(step + 1)
    epoch = (step // self.steps_per_epoch if self.alternating_flip
             else None)
    return augment.augment_step(images, self.seed, step, epoch,
                                self.max_shift)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "seed": self.seed,
            "max_shift": self.max_shift,
            "alternating_flip": self.alternating_flip,
            "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="fastcifar")
class PartialIdentity(keras.initializers.Initializer):
  """A 3x3 conv kernel whose first `min(in, out)` filters pass their channel.

  The other filters are uniform in +-1/sqrt(fan_in) (PyTorch's default), as
  airbench initialises its convolutions: a deep stack of such convs starts
  close to the identity and trains at a high learning rate from step one.
  """

  def __init__(self, seed: int | None = None):
    self.seed = seed

  def __call__(self, shape, dtype=None):
    height, width, channels_in, channels_out = shape
    limit = 1.0 / math.sqrt(height * width * channels_in)
    kernel = np.random.default_rng(self.seed).uniform(
        -limit, limit, size=shape).astype(np.float32)
    kept = min(channels_in, channels_out)
    kernel[..., :kept] = 0.0
    kernel[height // 2, width // 2, np.arange(kept), np.arange(kept)] = 1.0
    return tf.constant(kernel, dtype=dtype or "float32")

  def get_config(self):
    return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="fastcifar")
class BatchNorm(layers.Layer):
  """Batch normalization with a fixed unit scale and a learned offset.

  Runs as one `FusedBatchNormV3` op (oneDNN on CPUs, cuDNN on GPUs, XLA
  compatible), where Keras's BatchNormalization runs a dozen separate ops in
  float32. Moving statistics follow `moving = momentum * moving + (1 -
  momentum) * batch`, as in Keras; under a strategy, once the replicas'
  copies are averaged (`distribute.sync_on_read`), `batch` is in effect the
  mean of the replicas' batch statistics (the average is linear).
  """

  def __init__(self, momentum: float = 0.6, epsilon: float = 1e-5, **kwargs):
    super().__init__(**kwargs)
    self.momentum = momentum
    # The fused kernels refuse an epsilon below 1e-5 (cuDNN's minimum).
    self.epsilon = max(epsilon, 1.001e-5)

  def build(self, input_shape):
    shape = (input_shape[-1],)
    self.beta = self.add_weight(shape=shape, name="beta", initializer="zeros",
                                autocast=False)
    self.moving_mean = self._moving_statistic(shape, "moving_mean", 0.0)
    self.moving_variance = self._moving_statistic(shape, "moving_variance",
                                                  1.0)

  def _moving_statistic(self, shape, name: str, value: float):
    # As tf.keras's BatchNormalization made them (Keras 3's add_weight takes
    # no `synchronization`): under a tf.distribute strategy each replica
    # updates its own copy, with no all-reduce per step, and a read outside
    # the replicas (a save, `distribute.sync_on_read`) gives their mean.
    # Without this each replica kept its own and only the first was saved.
    with keras.name_scope(self.name, caller=self):
      return keras.Variable(
          keras.initializers.Constant(value), shape=shape,
          dtype=self.variable_dtype, trainable=False, autocast=False,
          aggregation="mean", synchronization="on_read", name=name)

  def call(self, inputs, training=False):
    scale = tf.ones(self.beta.shape, tf.float32)
    if not training:
      return tf.compat.v1.nn.fused_batch_norm(
          inputs, scale, self.beta.value, self.moving_mean.value,
          self.moving_variance.value, epsilon=self.epsilon,
          is_training=False)[0]
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, self.beta.value, epsilon=self.epsilon,
        is_training=True)
    for moving, batch in ((self.moving_mean, mean),
                          (self.moving_variance, variance)):
      moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
    return outputs

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "momentum": self.momentum,
            "epsilon": self.epsilon}


@tf.function(jit_compile=True)
def _gelu(x):
  return tf.nn.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="fastcifar")
class GELU(layers.Layer):
  """Exact GELU, always compiled with XLA, even inside a step that is not.

  Uncompiled, TensorFlow runs GELU and its gradient as about ten elementwise
  ops, each a pass over memory; XLA fuses them into one. On the CPU above this
  took the step (batch 1024) from 2.9 s to 1.7 s, while XLA for the whole
  step (its CPU convolutions) made it twice as slow.
  """

  def call(self, inputs):
    return _gelu(inputs)

  def compute_output_shape(self, input_shape):
    return input_shape


_DRAWS = 2**16  # values of one 16-bit dropout draw


@keras.saving.register_keras_serializable(package="fastcifar")
class Dropout(layers.Dropout):
  """Keras's `Dropout` (same rate, noise_shape, seed), computed in fewer passes.

  Keras draws a float uniform per unit in the compute dtype, compares,
  multiplies and selects, and its gradient runs the select and the multiply
  again: bfloat16 element-wise passes that TensorFlow runs slowly on a CPU.
  Here each unit gets 16 random bits (two per 32-bit Philox draw), one
  comparison makes the mask `0 or 1/keep` in the compute dtype, and the
  layer is one multiply forward and one backward. A unit is dropped with
  probability `round(rate * 2**16) / 2**16` (exactly `rate` for 0.25 and
  0.5, within 2**-17 otherwise) and kept ones are scaled by the inverse of
  the probability actually kept, so the expectation is exact. The seed
  CNN's training step measured 1.125x faster than with Keras's layer
  (batch 128, mixed_bfloat16, 2-core AMD EPYC, 2026-12-03;
  docs/benchmarks.md).
  """

  def call(self, inputs, training=False):
    dropped = round(self.rate * _DRAWS)  # draws below this drop their unit
    if not training or dropped == 0:
      return inputs
    if dropped == _DRAWS:
      return tf.zeros_like(inputs)
    shape = tf.shape(inputs)
    if self.noise_shape is not None:  # one draw along each axis given as 1
      shape = tf.stack([shape[i] if size is None else size
                        for i, size in enumerate(self.noise_shape)])
    size = tf.reduce_prod(shape)
    # Keras's own conversion of a SeedGenerator's state (int32, for XLA).
    seed = tf.cast(tf.math.floormod(self.seed_generator.next(),
                                    tf.int32.max - 1), tf.int32)
    words = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None,
                                        maxval=None, dtype=tf.uint32)
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])
    draws = tf.reshape(halves[:size], shape)
    kept = tf.constant(dropped, tf.uint16) <= draws
    mask = tf.cast(tf.where(kept, _DRAWS / (_DRAWS - dropped), 0.0),
                   inputs.dtype)
    return _times_mask(inputs, mask)


def _times_mask(inputs: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """`inputs * mask`, whose gradient skips the mask (it is not trained)."""

  @tf.custom_gradient
  def multiply(x):
    return x * mask, lambda upstream: upstream * mask

  return multiply(inputs)


def _patch_rows(images: tf.Tensor) -> tf.Tensor:
  """Every 3x3 "same" patch as a row, `(N*H*W, 9*C)`, in kernel order."""
  height, width, channels = images.shape[1:]
  padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
  patches = tf.concat([padded[:, i:i + height, j:j + width, :]
                       for i in range(3) for j in range(3)], axis=-1)
  return tf.reshape(patches, [-1, 9 * channels])


@tf.custom_gradient
def _conv3x3_with_matmul_kernel_gradient(images, kernel):
  outputs = tf.nn.conv2d(images, kernel, 1, "SAME")

  def gradient(upstream):
    images_gradient = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(images), filter=kernel, out_backprop=upstream,
        strides=[1, 1, 1, 1], padding="SAME")
    kernel_gradient = tf.matmul(
        _patch_rows(images), tf.reshape(upstream, [-1, upstream.shape[-1]]),
        transpose_a=True)
    return images_gradient, tf.reshape(kernel_gradient, kernel.shape)

  return outputs, gradient


@keras.saving.register_keras_serializable(package="fastcifar")
class Conv3x3(layers.Conv2D):
  """A 3x3 stride-1 "same" `Conv2D` with a faster kernel gradient on small maps.

  On maps at most `matmul_gradient_width` wide, the kernel's gradient is one
  matrix product of the image patches with the output gradient, instead of
  oneDNN's backward-weights convolution, which handles small maps poorly: on
  a 2-core Sapphire Rapids CPU (TensorFlow 2.21, bfloat16, batch 1024, 256
  channels) 37 ms instead of 152 at 3x3 and 111 instead of 133 at 7x7, but
  slower at 15x15 and 31x31 (the patches cost more than they save there).
  Only where the step runs on the CPU: GPUs and TPUs keep their own kernels.
  Forward and input gradient are the usual convolutions; the result is the
  same convolution, and it saves and loads as a `Conv2D` does.
  """

  def __init__(self, filters: int, matmul_gradient_width: int = 8, **kwargs):
    super().__init__(filters, 3, padding="same", **kwargs)
    self.matmul_gradient_width = matmul_gradient_width

  def convolution_op(self, inputs, kernel):
    if (inputs.shape[2] is None or inputs.shape[2] > self.matmul_gradient_width
        or self.strides != (1, 1) or self.dilation_rate != (1, 1)
        or self.groups != 1 or self.data_format != "channels_last"
        or policy.detect_device() != "CPU"):  # cuDNN and TPUs: theirs
      return super().convolution_op(inputs, kernel)
    return _conv3x3_with_matmul_kernel_gradient(
        inputs, tf.cast(kernel, inputs.dtype))

  def get_config(self):
    config = super().get_config()
    for fixed in ("kernel_size", "padding"):
      config.pop(fixed)
    return {**config, "matmul_gradient_width": self.matmul_gradient_width}


@keras.saving.register_keras_serializable(package="fastcifar")
class PatchWhitening(layers.Layer):
  """A fixed convolution that whitens `k x k` patches, then a learned bias.

  `adapt(images)` sets the kernel from the eigendecomposition of the
  patches' second-moment matrix: the first `C*k*k` filters project onto the
  eigenvectors scaled by `1/sqrt(eigenvalue + epsilon)`, so their outputs are
  uncorrelated with unit variance; the other `C*k*k` are their negatives, so a
  following GELU keeps both signs. The kernel is not trained; the bias is.
  """

  def __init__(self, kernel_size: int = 2, epsilon: float = 5e-4, **kwargs):
    super().__init__(**kwargs)
    self.kernel_size = kernel_size
    self.epsilon = epsilon

  def build(self, input_shape):
    patch = self.kernel_size**2 * input_shape[-1]
    self.kernel = self.add_weight(
        shape=(self.kernel_size, self.kernel_size, input_shape[-1], 2 * patch),
        name="kernel", initializer="zeros", trainable=False)
    self.bias = self.add_weight(shape=(2 * patch,), name=WHITENING_BIAS,
                                initializer="zeros")

  def adapt(self, images: np.ndarray) -> None:
    """Sets the kernel from `images`, `(N, H, W, C)` as this layer sees them.

    Args:
      images: float images after the preceding layers (standardized), a few
        thousand suffice.
    """
    if not self.built:
      self.build(images.shape)
    size = self.kernel_size**2 * images.shape[-1]
    moments, count = np.zeros((size, size)), 0
    for start in range(0, len(images), 256):  # chunks bound the scratch
      patches = patch_vectors(
          np.asarray(images[start:start + 256], np.float64), self.kernel_size)
      moments += patches.T @ patches
      count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(moments / count)
    filters = eigenvectors / np.sqrt(eigenvalues + self.epsilon)
    kernel = filters.reshape(self.kernel_size, self.kernel_size,
                             images.shape[-1], -1)
    self.kernel.assign(np.concatenate([kernel, -kernel], axis=-1))

  def call(self, inputs):
    outputs = tf.nn.conv2d(inputs, tf.cast(self.kernel, inputs.dtype), 1,
                           "VALID")
    return tf.nn.bias_add(outputs, tf.cast(self.bias, inputs.dtype))

  def compute_output_shape(self, input_shape):
    batch, height, width, channels = input_shape
    shrink = self.kernel_size - 1
    return (batch, None if height is None else height - shrink,
            None if width is None else width - shrink,
            2 * self.kernel_size**2 * channels)

  def get_config(self):
    return {**super().get_config(), "kernel_size": self.kernel_size,
            "epsilon": self.epsilon}


def patch_vectors(images: np.ndarray, size: int) -> np.ndarray:
  """Every `size x size` patch of `images` as a row, in conv-kernel order.

  Args:
    images: `(N, H, W, C)`.
    size: the patch side.

  Returns:
    `(N * (H-size+1) * (W-size+1), size*size*C)`, each row flattened as
    `(row, column, channel)`, the order of a Keras conv kernel's first axes.
  """
  windows = np.lib.stride_tricks.sliding_window_view(images, (size, size),
                                                     axis=(1, 2))
  # windows: (N, H', W', C, size, size) -> rows of (size, size, C)
  return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size *
                                                     images.shape[-1])
