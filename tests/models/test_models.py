"""Tests for fastcifar.models: size, dtypes per policy, scaling, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fastcifar import layers as fast_layers
from fastcifar import models
from fastcifar.errors import UsageError
from fastcifar.training.policy import precision_scope

MEAN = [0.49, 0.48, 0.45]
STD = [0.25, 0.24, 0.26]


def _images(n: int = 4, seed: int = 0, size=(32, 32)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, *size, 3),
                                              dtype=np.uint8)


def test_seed_model_has_the_textbook_parameter_count():
  model = models.build_model("seed", 10, MEAN, STD)
  assert model.count_params() == 1_250_858
  assert model.inputs[0].dtype == "uint8"
  assert tuple(model.outputs[0].shape) == (None, 10)


def test_parameter_count_follows_the_classes():
  # Only the last Dense layer changes: 513 weights per extra class.
  model = models.build_model("seed", 100, MEAN, STD)
  assert model.count_params() == 1_250_858 + 90 * 513


def test_seed_model_at_64x64_has_a_dense_layer_for_that_size():
  # 64 -> conv 62 -> pool 31 -> conv 29 -> pool 14: the dense layer takes
  # 14*14*64 = 12,544 inputs (2,304 at 32x32), so 12,544*512 + 512 weights.
  model = models.build_model("seed", 10, MEAN, STD, image_shape=(64, 64, 3))
  assert model.count_params() == 6_493_738
  dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)][0]
  assert dense.kernel.shape == (12_544, 512)
  # Without image_shape the model takes the training images' size.
  built = models.build_model("seed", 10, MEAN, STD, _images(2, size=(48, 40)))
  assert tuple(built.inputs[0].shape) == (None, 48, 40, 3)
  assert built.count_params() == 896 + 9_248 + 18_496 + 36_928 + (
      10 * 8 * 64 * 512 + 512) + 5_130


def test_fast_model_takes_64x64_images_with_airbench94s_parameters():
  images = _images(8, size=(64, 64))
  model = models.build_model("fast", 10, MEAN, STD, images)
  # The global max-pool makes the weights independent of the image size.
  assert model.count_params() == 1_973_944
  shapes = [tuple(l.output.shape[1:3]) for l in model.layers
            if isinstance(l, keras.layers.MaxPooling2D)]
  assert shapes == [(31, 31), (15, 15), (7, 7)]  # after the 2x2 whitening: 63
  probs = model.predict(images, verbose=0)
  assert probs.shape == (8, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", models.MODELS)
def test_images_too_small_for_the_model_are_refused(name):
  side = models.MIN_IMAGE_SIDE[name]
  models.build_model(name, 10, MEAN, STD, _images(2, size=(side, side)))
  with pytest.raises(UsageError, match=f"at least {side}x{side}"):
    models.build_model(name, 10, MEAN, STD, _images(2, size=(side - 1, 40)))


def test_unknown_model():
  with pytest.raises(ValueError, match="unknown model 'resnet'"):
    models.build_model("resnet", 10, MEAN, STD)


def test_fast_model_has_airbench94s_parameter_count():
  model = models.build_model("fast", 10, MEAN, STD, _images(64))
  # airbench94: 1,971,352 trainable (its 24-filter whitening conv frozen);
  # plus 2 x 1,152 moving statistics and 288 fixed whitening weights.
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == 1_971_352
  assert model.count_params() == 1_973_944
  assert tuple(model.outputs[0].shape) == (None, 10)


def test_fast_model_needs_training_images():
  with pytest.raises(ValueError, match="needs train_images"):
    models.build_model("fast", 10, MEAN, STD)


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("policy,compute", [("float32", "float32"),
                                            ("mixed_float16", "float16"),
                                            ("mixed_bfloat16", "bfloat16")])
def test_outputs_are_float32_probabilities_under_every_policy(
    name, policy, compute):
  before = keras.mixed_precision.global_policy().name
  with precision_scope(policy):
    model = models.build_model(name, 10, MEAN, STD, _images(64))
  assert keras.mixed_precision.global_policy().name == before
  # The body really runs in the policy's dtype; only the softmax is float32.
  assert model.layers[1].compute_dtype == compute
  assert model.layers[-1].compute_dtype == "float32"
  assert model(_images(), training=True).dtype == "float32"
  probabilities = model(_images(), training=False)
  assert probabilities.dtype == "float32"
  probabilities = keras.ops.convert_to_numpy(probabilities)
  assert probabilities.shape == (4, 10)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_saved_fast_model_predicts_the_same(tmp_path):
  model = models.build_model("fast", 10, MEAN, STD, _images(64))
  images = _images(5)
  before = model.predict(images, verbose=0)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded.predict(images, verbose=0), before,
                             rtol=1e-5, atol=1e-6)


def test_saved_model_predicts_the_same_on_uint8(tmp_path):
  keras.utils.set_random_seed(0)
  model = models.build_model("seed", 10, MEAN, STD)
  images = _images(5)
  before = model.predict(images, verbose=0)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert loaded.count_params() == 1_250_858
  assert loaded.inputs[0].dtype == "uint8"
  assert isinstance(loaded.layers[0], models.Standardize)
  assert loaded.layers[0].mean == MEAN
  np.testing.assert_allclose(loaded.predict(images, verbose=0), before,
                             rtol=1e-6, atol=1e-6)


def test_whitening_is_fitted_to_a_random_sample_not_the_first_class():
  # As an image folder loads: sorted by class. Here the first 5,000 images
  # (one class) are dim and flat, the last 1,000 bright noise.
  rng = np.random.default_rng(0)
  images = np.concatenate([
      rng.integers(100, 120, (5000, 32, 32, 3), dtype=np.uint8),
      rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)])
  model = models.build_model("fast", 10, MEAN, STD, train_images=images)
  standardize, whitening = model.layers[:2]
  mixed = images[rng.choice(len(images), 300, replace=False)]
  outputs = keras.ops.convert_to_numpy(whitening(standardize(mixed)))
  first = outputs[..., :12].reshape(-1, 12)
  variances = np.diag(first.T @ first / len(first))
  # Fitted to the dim class alone, the mixture's variances were about 23.
  assert np.all((variances > 0.5) & (variances < 2.0)), variances


def test_seed_cnn_dropout_is_fastcifars_unless_asked():
  default = models.seed_cnn_layers(10)
  keras_own = models.seed_cnn_layers(10, dropout=keras.layers.Dropout)
  kinds = [type(layer) for layer in default]
  assert kinds.count(fast_layers.Dropout) == 3
  assert [type(layer) for layer in keras_own].count(keras.layers.Dropout) == 3
  assert [layer.rate for layer in default
          if isinstance(layer, keras.layers.Dropout)] == [0.25, 0.25, 0.5]


def test_load_saved_names_a_missing_or_unloadable_file(tmp_path):
  # The commands (evaluate, doctor, export) turn these into their one line
  # and exit 2 (their tests check that contract in a process).
  missing = tmp_path / "missing.keras"
  with pytest.raises(UsageError) as refused:
    models.load_saved(str(missing))
  assert str(refused.value) == (
      f"--model {missing} does not exist; give a .keras file saved by "
      "model.save (fastcifar.train writes OUTPUT_DIR/model.keras)")
  notes = tmp_path / "notes.keras"
  notes.write_text("not a model")
  with pytest.raises(UsageError,
                     match=f"--model {notes} is not a loadable .keras model"):
    models.load_saved(str(notes))
