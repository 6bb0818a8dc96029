"""Tests for fastcifar.layers: whitening whitens, BatchNorm matches Keras's,
Dropout drops as Keras's does."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastcifar import layers as fast_layers
from fastcifar.training import policy


def _correlated_images(n: int = 300, seed: int = 0) -> np.ndarray:
  """Smooth images (neighbouring pixels and channels correlated) plus noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.normal(size=(n, 8, 8, 1)) + 0.3 * rng.normal(size=(n, 8, 8, 3))
  smooth = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
  return (smooth + 0.3 * rng.normal(size=smooth.shape)).astype(np.float32)


def test_patch_vectors_are_in_kernel_order():
  images = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
  patches = fast_layers.patch_vectors(images, 2)
  assert patches.shape == (2 * 2 * 2, 8)
  np.testing.assert_array_equal(patches[0],
                                images[0, :2, :2, :].reshape(-1))
  np.testing.assert_array_equal(patches[3],
                                images[0, 1:3, 1:3, :].reshape(-1))


def test_whitening_outputs_have_identity_covariance():
  images = _correlated_images()
  layer = fast_layers.PatchWhitening(2)
  layer.build(images.shape)
  raw = fast_layers.patch_vectors(images, 2)
  assert np.abs(np.corrcoef(raw.T) - np.eye(12)).max() > 0.5  # correlated
  layer.adapt(images)
  outputs = keras.ops.convert_to_numpy(layer(images))
  assert outputs.shape == (300, 31, 31, 24)
  first = outputs[..., :12].reshape(-1, 12)
  covariance = first.T @ first / len(first)
  np.testing.assert_allclose(covariance, np.eye(12), atol=0.02)
  # The second half is the first, negated, for the GELU that follows.
  np.testing.assert_allclose(outputs[..., 12:], -outputs[..., :12], atol=1e-5)
  assert [w.name for w in layer.trainable_weights] == ["whitening_bias"]


def test_partial_identity_passes_the_first_channels():
  kernel = keras.ops.convert_to_numpy(
      fast_layers.PartialIdentity(seed=1)((3, 3, 4, 6)))
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
  y = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
  np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
  limit = 1 / np.sqrt(3 * 3 * 4)
  assert 0 < np.abs(kernel[..., 4:]).max() <= limit


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_keras(training):
  x = np.random.default_rng(2).normal(
      1.0, 3.0, size=(16, 4, 4, 5)).astype(np.float32)
  ours = fast_layers.BatchNorm(momentum=0.6)
  theirs = keras.layers.BatchNormalization(momentum=0.6, epsilon=1.001e-5,
                                           scale=False)
  for layer in (ours, theirs):
    layer.build(x.shape)
    layer.beta.assign(np.arange(5, dtype=np.float32) / 10)
    layer.moving_variance.assign(np.full(5, 2.0, np.float32))
  np.testing.assert_allclose(ours(x, training=training),
                             theirs(x, training=training), atol=1e-4)
  np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, atol=1e-5)
  # Fused batch norm keeps the unbiased variance (as PyTorch does); Keras
  # the biased one: n/(n-1) apart.
  n = 16 * 4 * 4
  np.testing.assert_allclose(
      ours.moving_variance,
      theirs.moving_variance + (n / (n - 1) - 1) * 0.4 * np.var(x, (0, 1, 2))
      if training else theirs.moving_variance, rtol=1e-4)


def test_gelu_is_exact_gelu_with_its_gradient():
  x = tf.constant(np.linspace(-4, 4, 101, dtype=np.float32))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    ours = fast_layers.GELU()(x)
    theirs = keras.activations.gelu(x, approximate=False)
  np.testing.assert_allclose(ours, theirs, atol=1e-6)
  np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(theirs, x),
                             atol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_dropout_keeps_one_minus_rate_scaled_as_keras(rate):
  layer = fast_layers.Dropout(rate, seed=3)
  x = tf.ones((200, 10, 10, 8))
  y = layer(x, training=True).numpy()
  zero, scale = np.unique(y)
  assert zero == 0 and scale == pytest.approx(1 / (1 - rate), abs=1e-4)
  if rate in (0.25, 0.5):  # a whole number of 2**-16: Keras's exact scale
    assert scale == np.float32(1 / (1 - rate))
  assert abs((y == 0).mean() - rate) < 0.01  # 160,000 draws
  assert abs(y.mean() - 1) < 0.02  # the expectation is kept
  assert (layer(x, training=True).numpy() != y).any()  # a new mask per call
  np.testing.assert_array_equal(layer(x, training=False), x)


def test_dropout_gradient_is_its_mask_and_noise_shape_broadcasts():
  layer = fast_layers.Dropout(0.5, noise_shape=(None, 1, 1, 8), seed=1)
  x = tf.random.stateless_normal((64, 4, 4, 8), seed=[0, 1])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=True)
  grad = tape.gradient(y, x).numpy()
  assert set(np.unique(grad)) == {0.0, 2.0}
  np.testing.assert_allclose(y, x * grad)  # the mask, as the gradient sees it
  # One draw per (example, channel), the same at every pixel.
  assert (grad == grad[:, :1, :1, :]).all()


def test_dropout_under_mixed_bfloat16_and_saved():
  with policy.precision_scope("mixed_bfloat16"):
    layer = fast_layers.Dropout(0.25, seed=0)
    y = layer(tf.ones((4, 8)), training=True)
  assert y.dtype == tf.bfloat16
  config = layer.get_config()
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(restored) is fast_layers.Dropout
  assert (restored.rate, restored.seed) == (config["rate"], config["seed"])


@pytest.mark.parametrize("size", [3, 7, 15])
def test_conv3x3_is_conv2d_with_the_same_gradients(size):
  # 3 and 7 take the matmul kernel gradient, 15 oneDNN's; all must agree.
  rng = np.random.default_rng(size)
  images = tf.constant(rng.normal(size=(6, size, size, 5)), tf.float32)
  upstream = tf.constant(rng.normal(size=(6, size, size, 4)), tf.float32)
  ours = fast_layers.Conv3x3(4, kernel_initializer="glorot_uniform")
  reference = keras.layers.Conv2D(4, 3, padding="same")
  ours.build(images.shape)
  reference.build(images.shape)
  reference.set_weights(ours.get_weights())
  results = []
  for layer in (ours, reference):
    with tf.GradientTape() as tape:
      tape.watch(images)
      outputs = layer(images)
      loss = tf.reduce_sum(outputs * upstream)
    results.append([outputs, *tape.gradient(
        loss, [images, *layer.trainable_variables])])
  for got, want in zip(*results):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  clone = fast_layers.Conv3x3.from_config(ours.get_config())
  assert (clone.kernel_size, clone.padding, clone.filters) == ((3, 3), "same",
                                                               4)


@pytest.mark.parametrize("device,kernel_gradient_op", [
    ("CPU", "MatMul"), ("GPU", "Conv2DBackpropFilter")])
def test_conv3x3_takes_the_matmul_gradient_only_on_cpus(
    monkeypatch, device, kernel_gradient_op):
  monkeypatch.setattr(fast_layers.policy, "detect_device", lambda: device)
  layer = fast_layers.Conv3x3(4)
  images = tf.zeros((2, 7, 7, 5))
  layer.build(images.shape)

  @tf.function
  def kernel_gradient(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x))
    return tape.gradient(loss, layer.kernel)

  graph = kernel_gradient.get_concrete_function(images).graph
  assert kernel_gradient_op in {op.type for op in graph.get_operations()}
