"""Tests for fastcifar.layers: whitening whitens, BatchNorm matches Keras's,
Dropout drops as Keras's does, Standardize standardizes, FlipAndTranslate
augments as the training step does."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import augment
from fastcifar import layers as fast_layers
from fastcifar.training import policy
from fastcifar.training.policy import precision_scope

MEAN = [0.49, 0.48, 0.45]
STD = [0.25, 0.24, 0.26]


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


def _images(n: int = 4, seed: int = 0, size=(32, 32)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, *size, 3),
                                              dtype=np.uint8)


def test_standardize_computes_scaled_minus_mean_over_std():
  layer = fast_layers.Standardize(MEAN, STD)
  images = _images(3)
  got = keras.ops.convert_to_numpy(layer(images))
  want = (images.astype(np.float64) / 255.0 - MEAN) / STD
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not layer.weights  # constants of the config, not parameters


def test_standardize_under_bfloat16_casts_only_the_result():
  with precision_scope("mixed_bfloat16"):
    layer = fast_layers.Standardize(MEAN, STD)
  got = layer(_images(2))
  assert got.dtype == "bfloat16"
  want = (_images(2) / 255.0 - MEAN) / STD
  # bfloat16 keeps 8 bits of mantissa: within half a part in 128 of the value.
  np.testing.assert_allclose(
      keras.ops.convert_to_numpy(keras.ops.cast(got, "float32")), want,
      rtol=2**-8, atol=2**-8)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_standardize_compiled_for_training_gives_the_same_values(precision):
  # Training runs the layer compiled by XLA, inference as plain ops: the
  # same arithmetic, so the same numbers (to a rounding of the last bit).
  with precision_scope(precision):
    layer = fast_layers.Standardize(MEAN, STD)
  images = _images(8, size=(5, 7))  # a shape no other test traces
  traces = fast_layers._standardize_compiled.experimental_get_tracing_count()
  trained = keras.ops.convert_to_numpy(
      keras.ops.cast(layer(images, training=True), "float32"))
  assert (fast_layers._standardize_compiled.experimental_get_tracing_count()
          == traces + 1)  # the compiled function ran
  inferred = keras.ops.convert_to_numpy(
      keras.ops.cast(layer(images, training=False), "float32"))
  tolerance = 2**-8 if precision == "mixed_bfloat16" else 1e-6
  np.testing.assert_allclose(trained, inferred, rtol=tolerance,
                             atol=tolerance)


def test_standardize_config_round_trip():
  layer = fast_layers.Standardize(MEAN, STD, name="norm")
  clone = fast_layers.Standardize.from_config(layer.get_config())
  assert clone.mean == MEAN and clone.std == STD and clone.name == "norm"


def test_standardize_loads_from_a_file_saved_before_it_moved():
  # Written by fastcifar.models before Standardize moved to fastcifar.layers:
  # the registered name, not the module, finds the class.
  saved = {"module": "fastcifar.models", "class_name": "Standardize",
           "config": {"name": "standardize", "trainable": True,
                      "mean": MEAN, "std": STD},
           "registered_name": "fastcifar>Standardize"}
  layer = keras.saving.deserialize_keras_object(saved)
  assert isinstance(layer, fast_layers.Standardize)
  assert layer.mean == MEAN


def _augment_model(**kwargs) -> keras.Model:
  inputs = keras.Input((16, 16, 3), dtype="uint8")
  return keras.Model(inputs, fast_layers.FlipAndTranslate(**kwargs)(inputs))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_flip_and_translate_augments_as_the_training_step(jit_compile):
  # The step's augmentation for (seed, step): `augment.flip_and_translate`
  # seeded by (seed, step * replicas + replica), one replica here.
  images = _images(8, size=(16, 16))
  layer = _augment_model(seed=5).layers[1]
  call = tf.function(lambda x: layer(x, training=True),
                     jit_compile=jit_compile)
  for step in range(3):
    want = augment.flip_and_translate(images,
                                      tf.constant([5, step], tf.int64))
    np.testing.assert_array_equal(call(images).numpy(), want.numpy())
  assert int(layer.step.numpy()) == 3
  assert not np.array_equal(want.numpy(), images)  # it did augment


def test_flip_and_translate_alternates_flips_by_epoch():
  images = _images(8, size=(16, 16))
  layer = _augment_model(seed=2, alternating_flip=True,
                         steps_per_epoch=2).layers[1]
  for step in range(5):
    want = augment.flip_and_translate(
        images, tf.constant([2, step], tf.int64), epoch=step // 2)
    np.testing.assert_array_equal(
        layer(images, training=True).numpy(), want.numpy())
  with pytest.raises(ValueError, match="needs steps_per_epoch"):
    fast_layers.FlipAndTranslate(alternating_flip=True)


def test_flip_and_translate_passes_images_unchanged_outside_training():
  model = _augment_model(seed=1)
  images = _images(4, size=(16, 16))
  np.testing.assert_array_equal(model.predict(images, verbose=0), images)
  np.testing.assert_array_equal(model(images).numpy(), images)
  assert int(model.layers[1].step.numpy()) == 0  # no step counted


def test_flip_and_translate_saves_and_goes_on_from_its_step(tmp_path):
  model = _augment_model(seed=3, max_shift=1)
  images = _images(4, size=(16, 16))
  model(images, training=True)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  layer = loaded.layers[1]
  assert (layer.seed, layer.max_shift, int(layer.step.numpy())) == (3, 1, 1)
  want = augment.flip_and_translate(images, tf.constant([3, 1], tf.int64), 1)
  np.testing.assert_array_equal(loaded(images, training=True).numpy(),
                                want.numpy())
