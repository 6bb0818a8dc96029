"""Tests of `fit`: a user's own model on fastcifar's training path."""

from __future__ import annotations

import json
import sys
import textwrap

import keras
import numpy as np
import pytest

from fastcifar import doctor
from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.models import recipes
from fastcifar.training import fit

# A user's module, outside the package: a small ResNet (BatchNorm, residual
# adds) taking uint8 images. The command's tests import it too.
USER_MODULE = textwrap.dedent('''\
    import keras
    from keras import layers


    def block(x, width):
      y = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
      y = layers.BatchNormalization()(y)
      y = layers.ReLU()(y)
      y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
      y = layers.BatchNormalization()(y)
      return layers.ReLU()(layers.Add()([x, y]))


    def trunk(num_classes, image_shape):
      inputs = keras.Input(image_shape, dtype="uint8")
      x = layers.Rescaling(1 / 255)(inputs)
      x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
      x = layers.BatchNormalization()(x)
      x = block(layers.ReLU()(x), 8)
      x = layers.GlobalAveragePooling2D()(x)
      return inputs, layers.Dense(num_classes, dtype="float32")(x)


    def build(num_classes, image_shape):
      inputs, logits = trunk(num_classes, image_shape)
      return keras.Model(inputs, layers.Softmax(dtype="float32")(logits),
                         name="small_resnet")


    def build_logits(num_classes, image_shape):
      return keras.Model(*trunk(num_classes, image_shape))


    def not_a_model(num_classes, image_shape):
      return "a model"
    ''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  """USER_MODULE as mymodule.py in a folder on sys.path; imported."""
  folder = tmp_path / "user"
  folder.mkdir()
  (folder / "mymodule.py").write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(folder))
  monkeypatch.delitem(sys.modules, "mymodule", raising=False)
  import mymodule  # pylint: disable=g-import-not-at-top,import-error
  return mymodule


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("data") / "fastcifar-tiny.npz")
  sources.save_prepared(sources.load_synthetic(num_train=128, num_test=64,
                                               seed=0), path)
  return path


TINY = dict(epochs=1, batch_size=64, precision="float32", verbose=0,
            tensorboard=False)


def test_fit_trains_a_users_resnet_and_records_its_data(user_module,
                                                         tiny_npz, tmp_path):
  data = sources.load(data_dir=tiny_npz)
  out = tmp_path / "run"
  results = fit.fit(user_module.build, data, output_dir=str(out), **TINY)
  assert results["model"] == "mymodule:build"
  assert results["epochs"] == 1 and results["num_train_examples"] == 128
  assert np.isfinite(results["test_loss"])
  # Without a recipe: the default one (the seed's Adam with cosine decay).
  config = results["config"]
  assert (config["optimizer"], config["lr_schedule"],
          config["learning_rate"]) == ("adam", "cosine", 2e-3)
  assert config["data"] == {
      "name": "tiny", "class_names": list(data.class_names),
      "image_size": [32, 32], "test_split": "test", "dataset": "cifar10",
      "data_dir": tiny_npz, "resize": "crop", "seed": 0}
  assert json.loads((out / "run.json").read_text()) == config
  saved = keras.saving.load_model(out / "model.keras")
  assert any(isinstance(layer, keras.layers.BatchNormalization)
             for layer in saved.layers)
  assert saved.count_params() == results["num_parameters"]
  # The same call again finds the run finished and trains no more.
  again = fit.fit(user_module.build, data, output_dir=str(out), **TINY)
  assert again["test_accuracy"] == results["test_accuracy"]
  assert again["total_seconds"] == results["total_seconds"]


def test_a_builder_gets_the_precision_a_built_model_keeps_its_own(
    user_module, capsys):
  data = sources.load_synthetic(num_train=128, num_test=64, seed=0)
  settings = {**TINY, "precision": "mixed_bfloat16", "verbose": 1}
  built = fit.fit(user_module.build, data, **settings)
  assert built["precision"] == "mixed_bfloat16"
  model = user_module.build(10, (32, 32, 3))  # float32, the global policy
  kept = fit.fit(model, data, **settings)
  assert kept["precision"] == "float32" and kept["model"] == "small_resnet"
  out = capsys.readouterr().out
  assert ("the model was built before training: it keeps its own dtypes "
          "(float32), not the precision fastcifar chooses (mixed_bfloat16)"
          in out)
  assert model.dtype_policy.name == "float32"
  assert model.optimizer.iterations.numpy() == 2  # trained in place


def test_a_recipe_attribute_gives_defaults_and_logits(user_module):
  data = sources.load_synthetic(num_train=128, num_test=64, seed=0)
  model = user_module.build_logits(10, (32, 32, 3))
  model.recipe = recipes.Recipe(defaults=dict(from_logits=True,
                                              optimizer="sgd"))
  results = fit.fit(model, data, **TINY)
  config = results["config"]
  # sgd's rate from the default recipe's, since this one names none.
  assert (config["from_logits"], config["optimizer"],
          config["learning_rate"]) == (True, "sgd", 0.05)
  # The test loss is the cross-entropy of the logits, as Keras computes it.
  expected = keras.losses.CategoricalCrossentropy(from_logits=True)(
      keras.utils.to_categorical(data.test_labels, 10),
      model.predict(data.test_images, verbose=0))
  assert results["test_loss"] == pytest.approx(float(expected), rel=1e-4)
  # A recipe given to fit wins over the attribute.
  config = fit.fit(model, data, recipe=recipes.Recipe(
      defaults=dict(from_logits=True, optimizer="rmsprop")), **TINY)["config"]
  assert (config["optimizer"], config["learning_rate"]) == ("rmsprop", 1e-3)


def test_bad_models_and_settings_are_refused(user_module):
  data = sources.load_synthetic(num_train=128, num_test=64, seed=0)
  with pytest.raises(UsageError, match="unknown setting epoch;"):
    fit.fit(user_module.build, data, epoch=1)
  with pytest.raises(UsageError, match="returned str, not a keras.Model"):
    fit.fit(user_module.not_a_model, data, **TINY)
  with pytest.raises(UsageError, match=r"has 10 outputs but the data has 2"):
    two = sources.make_dataset("two", data.train_images, data.train_labels % 2,
                               data.test_images, data.test_labels % 2,
                               ["a", "b"], "test")
    fit.fit(user_module.build(10, (32, 32, 3)), two, **TINY)
  with pytest.raises(TypeError, match="not int"):
    fit.fit(42, data)


def test_the_doctor_refuses_a_model_that_cannot_learn():
  data = sources.load_synthetic(num_train=128, num_test=64, seed=0)

  def unscaled(num_classes, image_shape):  # pixels 0-255 into the conv
    inputs = keras.Input(image_shape, dtype="uint8")
    x = keras.layers.Conv2D(8, 3)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(
        num_classes, activation="softmax")(x))

  with pytest.raises(doctor.PreflightError,
                     match=r"integer-input.*preflight=False\) skips"):
    fit.fit(unscaled, data, **TINY)


@pytest.mark.parametrize("epochs,early_stopping", [("auto", True), (2, False)])
def test_the_doctor_knows_an_auto_epochs_fit_stops_early(monkeypatch, epochs,
                                                         early_stopping):
  # Its too-few-epochs advice: raise the limit, not "use --epochs=auto".
  seen = []

  def train_and_evaluate(config, data, output_dir, callbacks, **kwargs):
    del config, data, output_dir, kwargs
    seen.extend(c for c in callbacks if isinstance(c, doctor.Watch))
    return {}

  monkeypatch.setattr(fit.trainer, "train_and_evaluate", train_and_evaluate)
  data = sources.load_synthetic(num_train=64, num_test=8, seed=0)
  fit.fit("seed", data, epochs=epochs, verbose=0)
  assert [w.early_stopping for w in seen] == [early_stopping]
