"""Tests of the training path on small synthetic data."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fastcifar import models
from fastcifar.data import augment, sources
from fastcifar.models import recipes
from fastcifar.training import distribute, step_loop, trainer
from fastcifar.errors import UsageError
from tests.conftest import halved


@pytest.fixture(scope="module")
def small_data() -> sources.ImageDataset:
  return sources.load_synthetic(num_train=1024, num_test=300, seed=1)


@pytest.fixture(scope="module")
def small_data_16(small_data) -> sources.ImageDataset:
  """`small_data` at 16x16, for runs whose point is neither the pixels nor
  the size: a step and an evaluation cost a quarter."""
  return halved(small_data)


def tiny_config(**overrides) -> trainer.Config:
  settings = dict(epochs=2, batch_size=64, precision="float32",
                  eval_batch_size=128, seed=3)
  settings.update(overrides)
  return trainer.Config(**settings)


def test_learns_synthetic_data_and_writes_outputs(small_data_16, tmp_path):
  # 16x16: that it learns and what it writes are the point, not the pixels
  # (a quarter of a step's cost; the seed model's 32x32 count, 1,250,858
  # parameters, is test_models'). Config seed 3 reached 0.86 here, 0.88 at
  # 32x32 (seeds 4 and 5: 0.65 and 0.36, 0.52 and 0.77; 2026-12-08).
  results = trainer.train_and_evaluate(
      tiny_config(epochs=3), small_data_16, str(tmp_path), verbose=0)
  assert results["test_accuracy"] > 0.5  # chance is 0.1
  assert results["num_parameters"] == 202_282  # at 16x16
  assert results["num_train_examples"] == 1024
  assert results["num_test_examples"] == 300
  assert results["epochs"] == 3
  assert results["precision"] == "float32" and results["jit_compile"] is False
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["test_accuracy"] == results["test_accuracy"]
  history = json.loads((tmp_path / "history.json").read_text())
  assert len(history["val_accuracy"]) == 3
  assert sorted(os.listdir(tmp_path)) == ["history.json", "model.keras",
                                          "results.json", "run.json"]
  assert json.loads((tmp_path / "run.json").read_text()) == on_disk["config"]
  assert on_disk["config"]["data"]["class_names"] == list(
      small_data_16.class_names)
  # The saved model is compiled, takes raw uint8 and agrees with training's
  # own evaluation.
  model = keras.saving.load_model(tmp_path / "model.keras")
  y = keras.utils.to_categorical(small_data_16.test_labels, 10)
  _, accuracy = model.evaluate(small_data_16.test_images, y, verbose=0)
  assert accuracy == pytest.approx(results["test_accuracy"], abs=1e-6)


@pytest.fixture(scope="module")
def plain_run(small_data_16) -> dict:
  """One epoch on 256 examples without a validation split: its results.

  For the tests that need such a run, not one each (a run's tracing is
  most of its seconds).
  """
  return trainer.train_and_evaluate(
      tiny_config(epochs=1, train_examples=256), small_data_16, verbose=0)


def test_same_seed_same_metrics(small_data_16, plain_run):
  # 256 examples, 4 steps: that the runs agree is the point, not how long.
  second = trainer.train_and_evaluate(
      tiny_config(epochs=1, train_examples=256), small_data_16, verbose=0)
  assert plain_run["test_loss"] == pytest.approx(second["test_loss"],
                                                 rel=1e-4)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_restores_policy(precision):
  # float16 convolutions are emulated on CPUs and very slow: keep it tiny
  # (and 16x16: the policy is the point, not the pixels).
  tiny = halved(sources.load_synthetic(num_train=64, num_test=64, seed=1))
  keras.mixed_precision.set_global_policy("float32")
  results = trainer.train_and_evaluate(
      tiny_config(epochs=1, precision=precision, eval_batch_size=64), tiny,
      verbose=0)
  assert results["precision"] == precision
  assert np.isfinite(results["test_loss"])
  assert keras.mixed_precision.global_policy().name == "float32"


def test_every_loop_length_trains_the_same_run(small_data_16):
  # 320 examples, batch 32: 10 steps an epoch; 3 per loop leaves a loop of 1.
  histories = {}
  for steps_per_loop in (1, 3, "auto"):
    results = trainer.train_and_evaluate(
        tiny_config(train_examples=320, batch_size=32, deterministic=True,
                    steps_per_loop=steps_per_loop), small_data_16, verbose=0,
        callbacks=[history := keras.callbacks.History()])
    histories[results["steps_per_loop"]] = (history.history, results)
  assert sorted(histories) == [1, 3, 10]  # auto: the whole (short) epoch
  (first, first_results), *others = histories.values()
  for history, results in others:
    assert history == first  # the same numbers, bit for bit
    assert results["test_loss"] == first_results["test_loss"]


def train_tiny_model(jit_compile: bool, steps: int = 4,
                     augment: bool = False) -> list[np.ndarray]:
  """A few steps of a tiny model from fixed weights; its weights after."""
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(4, 3, activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(10, activation="softmax")])
  # No augmentation and no dropout: XLA's random numbers differ (its
  # stateless RNG is another algorithm), the arithmetic should not.
  config = tiny_config(augment=augment, batch_size=16)
  trainer.compile_model(model, config, steps_per_epoch=4)
  model.optimizer.build(model.trainable_variables)
  step = trainer.make_train_step(model, tf.distribute.get_strategy(), config,
                                  10, jit_compile, 4)
  data = sources.load_synthetic(num_train=64, num_test=16, seed=1)
  iterator = iter(tf.data.Dataset.from_tensor_slices(
      (data.train_images, data.train_labels)).batch(16))
  if steps:
    step(iterator, steps, step_loop.zero_sums())
  return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def tiny_plain() -> list[np.ndarray]:
  """`train_tiny_model` without XLA or augmentation, for the two tests
  that compare other steps with it."""
  return train_tiny_model(jit_compile=False)


def test_xla_over_the_whole_step_trains_as_without(monkeypatch, tiny_plain):
  whole = train_tiny_model(jit_compile=True)  # update compiled with the rest
  monkeypatch.setattr(distribute, "compiles_update", lambda strategy: False)
  split = train_tiny_model(jit_compile=True)  # as mirrored: update outside
  monkeypatch.undo()
  start = train_tiny_model(jit_compile=False, steps=0)
  for w_whole, w_split, w_plain, w_start in zip(whole, split, tiny_plain,
                                                start):
    assert not np.allclose(w_whole, w_start)  # it trained
    np.testing.assert_allclose(w_whole, w_split, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_whole, w_plain, rtol=1e-4, atol=1e-5)


def test_augmenting_a_step_ahead_trains_as_augmenting_in_the_step(
    monkeypatch, tiny_plain):
  # CPUs augment each batch a step ahead, beside the step before;
  # accelerators inside its own step. The same batches either way.
  ahead = train_tiny_model(jit_compile=False, augment=True)
  monkeypatch.setattr(distribute, "runs_on_cpus", lambda strategy: False)
  inside = train_tiny_model(jit_compile=False, augment=True)
  monkeypatch.undo()
  assert not all(np.array_equal(a, p) for a, p in zip(ahead, tiny_plain))
  for w_ahead, w_inside in zip(ahead, inside):
    np.testing.assert_array_equal(w_ahead, w_inside)


@pytest.mark.slow
def test_fast_model_step_under_xla_with_augmentation_and_tta():
  # 16x16: that the step compiles and runs is the point, not the pixels
  # (the fast model's parameters do not depend on the image size).
  tiny = halved(sources.load_synthetic(num_train=128, num_test=64, seed=1))
  config = trainer.recipe("fast", epochs=1, batch_size=64,
                           precision="mixed_bfloat16", jit_compile="true",
                           eval_batch_size=64, seed=2)
  assert config.augment and config.tta and config.lookahead
  results = trainer.train_and_evaluate(config, tiny, verbose=0)
  assert results["jit_compile"] is True and results["tta"] is True
  assert results["num_parameters"] == 1_973_944
  assert np.isfinite(results["test_loss"])
  assert 0 <= results["test_accuracy_without_tta"] <= 1


def test_tta_evaluation_averages_the_views(small_data):
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3)
  trainer.compile_model(model, tiny_config(), 10)
  strategy = tf.distribute.get_strategy()
  step = trainer.make_eval_step(model, strategy, 10, False, tta=True)
  images = small_data.test_images[:50]
  labels = small_data.test_labels[:50]
  _, correct, count = step((tf.constant(images), tf.constant(labels),
                            tf.ones(50)))
  probs = sum(w * model.predict(v.numpy(), verbose=0)
              for v, w in augment.test_time_views(tf.constant(images)))
  assert count == 50
  assert correct == np.sum(probs.argmax(-1) == labels)


def test_validation_freq_evaluates_every_nth_and_the_last_epoch(
    small_data_16, tmp_path):
  results = trainer.train_and_evaluate(
      tiny_config(epochs=3, validation_freq=2, train_examples=256),
      small_data_16, str(tmp_path), verbose=0)
  history = json.loads((tmp_path / "history.json").read_text())
  assert history["val_epochs"] == [2, 3]
  assert len(history["val_accuracy"]) == 2 and len(history["accuracy"]) == 3
  assert results["epochs"] == 3
  assert results["test_accuracy"] == history["val_accuracy"][-1]
  # Each target's time is that of the evaluation that first met it.
  times = {history["elapsed_seconds"][1], history["elapsed_seconds"][2]}
  assert set(results["seconds_to_accuracy"].values()) <= {
      round(t, 1) for t in times}


class StopAfterFirstEpoch(keras.callbacks.Callback):

  def on_epoch_end(self, epoch, logs=None):
    self.model.stop_training = True


def test_a_stop_between_evaluations_still_evaluates_the_last_epoch(
    small_data_16):
  stopper = StopAfterFirstEpoch()
  results = trainer.train_and_evaluate(
      tiny_config(epochs=3, validation_freq=5), small_data_16,
      callbacks=[stopper], verbose=0)
  assert results["epochs"] == 1
  # Evaluated after the epoch it stopped at, not left empty (one tiny epoch
  # may well be at chance, so the check is that the curve has that point):
  # the validation curve's one point is the final test evaluation's.
  assert results["best_test_accuracy"] == results["test_accuracy"]
  assert np.isfinite(results["test_loss"])


def test_recipe_defaults_and_overrides():
  fast = trainer.recipe("fast")
  assert (fast.epochs, fast.batch_size, fast.learning_rate,
          fast.label_smoothing, fast.tta, fast.validation_freq,
          fast.alternating_flip) == (10, 1024, 11.5, 0.2, True, 10, True)
  assert trainer.recipe("seed") == trainer.Config()
  assert trainer.recipe("fast", epochs=3, tta=None).epochs == 3
  assert trainer.recipe("fast", epochs=3, tta=None).tta is True
  with pytest.raises(UsageError, match="--model=vgg"):
    trainer.recipe("vgg")


def test_seconds_to_accuracy_takes_the_first_time_each_target_is_met():
  reached = trainer.seconds_to_accuracy(
      [0.7, 0.86, 0.84, 0.91], [10.0, 20.0, 30.0, 40.04],
      targets=(0.5, 0.85, 0.9, 0.95))
  assert reached == {"0.5": 10.0, "0.85": 20.0, "0.9": 40.0}


@pytest.mark.parametrize("field,value", [
    ("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0),
    ("precision", "float8"), ("jit_compile", "maybe"),
    ("train_examples", -5), ("validation_freq", 0), ("eval_batch_size", 0)])
def test_config_out_of_range(field, value):
  with pytest.raises(UsageError, match=field):
    tiny_config(**{field: value}).validate()



def test_evaluation_runs_at_the_training_batch_unless_told(small_data_16,
                                                           monkeypatch,
                                                           tmp_path):
  # As Keras's fit validates: evaluation then needs no larger buffers than
  # training (at 500 it raised the seed CNN's peak RSS by 100 MB on an AVX2
  # CPU, where Eigen's convolution buffers grow with the batch).
  from fastcifar.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = []
  eval_dataset = pipeline.eval_dataset

  def spy(images, labels, batch_size, **shard):
    batches.append(batch_size)
    return eval_dataset(images, labels, batch_size, **shard)

  monkeypatch.setattr(pipeline, "eval_dataset", spy)
  config = tiny_config(epochs=1, eval_batch_size=None)
  assert config.evaluation_batch_size == config.batch_size == 64
  trainer.train_and_evaluate(config, small_data_16, str(tmp_path), verbose=0)
  assert batches == [64]
  assert tiny_config(eval_batch_size=100).evaluation_batch_size == 100
  # A run finished with another evaluation batch (the old default, 500) is
  # the same run: asked again, it is found finished, not refused.
  with pytest.raises(trainer.AlreadyFinished):
    trainer.train_and_evaluate(
        tiny_config(epochs=1, eval_batch_size=500), small_data_16,
        str(tmp_path), verbose=0)


def test_an_unknown_model_name_is_refused_where_it_is_resolved():
  # Config no longer knows the model names (a user's module:function is a
  # model too): the recipe's lookup refuses an unknown one, in one line.
  with pytest.raises(UsageError, match="resnet"):
    recipes.recipe("resnet")


def test_fewer_examples_than_a_batch(small_data):
  with pytest.raises(UsageError, match="fewer than one batch"):
    trainer.train_and_evaluate(tiny_config(train_examples=10), small_data,
                                verbose=0)


def test_a_batch_leaving_out_much_of_the_data_is_said_first(small_data_16,
                                                             capsys):
  # 160 images at batch 128: one step, 32 images out of every epoch. (16x16:
  # what is said is the point, not the pixels.)
  trainer.train_and_evaluate(
      tiny_config(train_examples=160, batch_size=128, epochs=1),
      small_data_16, verbose=1)
  said = capsys.readouterr().out.splitlines()
  assert said[0] == (
      "fastcifar: batch 128 takes 128 of the 160 training examples per "
      "epoch (1 step): 32 (20%) are left out of every epoch, a different 32 "
      "each time; --batch_size=80 would leave out almost none")
  assert said[1].endswith(", 1 step per loop")  # one step an epoch


def test_unwritable_output_dir(small_data, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(UsageError, match="not writable"):
    trainer.train_and_evaluate(tiny_config(), small_data,
                                str(blocker / "out"), verbose=0)


@pytest.mark.parametrize("steps_per_loop,poisoned,step", [
    (1, 2, 3),
    (3, 3, 4)])  # the check runs once per loop, and names the step
def test_nan_loss_stops_at_once_and_keeps_last_checkpoint(
    small_data_16, tmp_path, steps_per_loop, poisoned, step):
  # A weight turned NaN stands in for a diverging run. (16x16 and 5 steps
  # an epoch: where the check stops and what it keeps are the point, not
  # the pixels; loops of 3 still leave one of 2.)
  class PoisonSecondEpoch(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
      if self.params and batch == poisoned and self.epoch == 1:
        self.model.layers[-1].kernel.assign(
            tf.fill(self.model.layers[-1].kernel.shape, float("nan")))

    def on_epoch_begin(self, epoch, logs=None):
      self.epoch = epoch

  with pytest.raises(trainer.TrainingDiverged,
                     match=rf"nan at epoch 2, step {step}\b.*checkpoint"):
    trainer.train_and_evaluate(tiny_config(epochs=3, train_examples=320,
                                            steps_per_loop=steps_per_loop),
                                small_data_16,
                                str(tmp_path), verbose=0,
                                callbacks=[PoisonSecondEpoch()])
  # pylint: disable-next=g-import-not-at-top
  from fastcifar.training import checkpointing
  assert checkpointing.latest_epoch(str(tmp_path)) == 1
  assert not (tmp_path / "results.json").exists()


def test_a_skipped_float16_step_still_advances_the_step_count():
  # Every step-based schedule (flips, seeds, learning rate, freeze, lookahead)
  # counts optimizer.iterations: a step the loss scaler skips must count.
  # (16x16: float16 convolutions are emulated on CPUs; the count is the
  # point, not the pixels.)
  tiny = halved(sources.load_synthetic(num_train=64, num_test=64, seed=1))
  config = tiny_config(batch_size=16, precision="mixed_float16")
  strategy = tf.distribute.get_strategy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3,
                             image_shape=tiny.image_shape)
  trainer.compile_model(model, config, steps_per_epoch=4)
  optimizer = model.optimizer
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  optimizer.build(model.trainable_variables)
  step = trainer.make_train_step(model, strategy, config, 10, False, 4)
  iterator = iter(tf.data.Dataset.from_tensor_slices(
      (tiny.train_images, tiny.train_labels)).batch(16).repeat())
  sums = step_loop.zero_sums()
  for forced_overflow in (False, True, False):
    scale = float(optimizer.dynamic_scale)
    if forced_overflow:  # the scaled loss overflows float16's gradients
      optimizer.dynamic_scale.assign(2.0**100)
    sums, _ = step(iterator, 1, sums)
    if forced_overflow:
      assert float(optimizer.dynamic_scale) == 2.0**99  # skipped: halved
      optimizer.dynamic_scale.assign(scale)
  assert int(optimizer.iterations) == 3
  # Inside one loop too: two skipped steps (the scale halves twice) count.
  optimizer.dynamic_scale.assign(2.0**100)
  step(iterator, 2, sums)
  assert float(optimizer.dynamic_scale) == 2.0**98
  assert int(optimizer.iterations) == 5


# --- Mirrored over logical CPU devices ----------------------------------------


# One test, one process with 4 logical CPUs for the 1, 2, 3 and 4 replica
# runs (tests/training/mirrored_runs.py, forked from the command server: a
# process of its own, as logical devices need, without the import): a
# fixture shared by two tests would run once on each pytest-xdist worker
# the two tests land on.
@pytest.mark.slow
def test_mirrored_matches_one_device_and_pads_over_3_and_4(command_server,
                                                          tmp_path):
  run = command_server.start("tests.training.mirrored_runs", [str(tmp_path)])
  assert run.wait(600) == 0, run.stderr[-3000:]
  found = json.loads(run.stdout.strip().splitlines()[-1])
  # Over 2 devices as on one: the same run.
  (replicas_one, loss_one, accuracy_one), (replicas_two, loss_two,
                                           accuracy_two), fed_as_is = (
                                               found["one_and_two"])
  assert (replicas_one, replicas_two) == (1, 2)
  assert not fed_as_is  # a distributed dataset, not the tf.data one
  assert accuracy_one > 0.3  # it learned: chance is 0.1
  assert loss_two == pytest.approx(loss_one, rel=1e-5)
  assert accuracy_two == accuracy_one

  # Over 3 and 4: the evaluation batch, the training one (48), pads the test
  # set's last batch (12 examples) to 48, split 16 a replica over 3 (the
  # first replica's 12 examples and 4 of padding, the others' padding only)
  # and 12 over 4 (the first replica's examples, three of padding only): the
  # seed model runs over 4, the fast one (BatchNorm) over 3. What is tested
  # is the padding, the statistics and the saved model. Over 4, not 8 as
  # before: replicas of padding only, and a count above 3, at half the
  # per-replica graphs (the 8 replicas' run took 27 s of CPU at 16x16
  # without augmentation, 2-core AMD EPYC, shared, 2026-12-07).
  for replicas in ("3", "4"):
    assert found[replicas][0] == int(replicas)
    assert np.isfinite(found[replicas][1])
  # Moving statistics are the same on every replica...
  assert len(found["stats"]) == 12  # 6 BatchNorms, mean and variance
  for replica_values in found["stats"]:
    for values in replica_values[1:]:
      np.testing.assert_allclose(values, replica_values[0], rtol=1e-6)
  # ...so the saved model, on one device, scores what training reported.
  reported, saved = found["accuracies"]
  assert round(reported, 4) == round(saved, 4)


# Each model at 64x64, and each folder: the mixed folder, resized, gives
# the fast model the same 64x64 batches as the 64x64 folder, so that pair
# proves nothing the others do not (and its model costs the most).
@pytest.mark.parametrize("model,sizes", [
    ("seed", [(64, 64)]), ("seed", [(64, 64), (50, 90), (80, 60)]),
    ("fast", [(64, 64)])])
def test_trains_on_64x64_and_mixed_size_image_folders(tmp_path, model, sizes):
  # pylint: disable-next=g-import-not-at-top
  from tests.data.test_images import write_sized_folder
  write_sized_folder(str(tmp_path), sizes, per_class=(12, 4))
  data = sources.load_path(str(tmp_path),
                           image_size=None if len(sizes) == 1 else (64, 64))
  assert data.image_shape == (64, 64, 3)
  config = trainer.recipe(model, epochs=1, batch_size=8, eval_batch_size=8)
  results = trainer.train_and_evaluate(config, data, verbose=0)
  assert np.isfinite(results["test_loss"])
  assert results["num_train_examples"] == 24
  # 2 classes: 8 outputs fewer than test_models' 10-class counts at 64x64.
  assert results["num_parameters"] == {"seed": 6_493_738 - 8 * 513,
                                       "fast": 1_973_944 - 8 * 256}[model]


# --- the validation split and --epochs=auto ----------------------------------


@pytest.fixture(scope="module")
def split_run(small_data_16, tmp_path_factory) -> tuple:
  """One epoch with a validation split of 256, and what the model saw.

  One run for the tests that check which examples each number and the
  statistics came from. (16x16: which set is the point, not the pixels.)

  Returns:
    `(results, output folder, {"mean", "images"} build_model was given)`.
  """
  seen = {}
  real_build = trainer.recipes.build_model

  def spy(config, num_classes, mean, std, train_images):
    seen["mean"], seen["images"] = mean, train_images
    return real_build(config, num_classes, mean, std, train_images)

  output_dir = tmp_path_factory.mktemp("split")
  with pytest.MonkeyPatch.context() as monkeypatch:
    monkeypatch.setattr(trainer.recipes, "build_model", spy)
    results = trainer.train_and_evaluate(
        tiny_config(epochs=1, validation_examples=256), small_data_16,
        str(output_dir), verbose=0)
  return results, output_dir, seen


def test_results_say_which_set_each_number_came_from(split_run, plain_run):
  results, output_dir, _ = split_run
  assert results["num_validation_examples"] == 256
  assert results["num_train_examples"] == 1024 - 256
  assert results["val_metrics_from"] == "validation"
  for key in ("validation_accuracy", "validation_loss",
              "best_validation_accuracy", "seconds_to_validation_accuracy",
              "test_accuracy", "test_loss"):
    assert key in results, key
  assert "best_test_accuracy" not in results
  assert "seconds_to_accuracy" not in results
  history = json.loads((output_dir / "history.json").read_text())
  assert history["val_accuracy"] == [results["validation_accuracy"]]
  assert history["test_accuracy"] == [results["test_accuracy"]]
  assert history["num_validation_examples"] == [256]
  # The test set (300 examples) and the split (256) are different sets.
  assert results["test_accuracy"] * 300 == pytest.approx(
      round(results["test_accuracy"] * 300))
  assert results["validation_accuracy"] * 256 == pytest.approx(
      round(results["validation_accuracy"] * 256))

  assert plain_run["num_validation_examples"] == 0
  assert plain_run["val_metrics_from"] == "test"
  assert not any(k.startswith("validation_") for k in plain_run)


def test_statistics_and_whitening_see_only_training_examples(
    small_data_16, split_run):
  _, _, seen = split_run
  _, held_out = trainer.pipeline.validation_split(
      small_data_16.train_labels, 256, 3)
  held = {small_data_16.train_images[i].tobytes() for i in held_out}
  assert len(seen["images"]) == 1024 - 256
  assert not held & {image.tobytes() for image in seen["images"]}
  assert seen["mean"] == trainer.pipeline.channel_stats(
      seen["images"])[0]


class Recorder(keras.callbacks.Callback):
  """Each epoch's end weights, and the weights training ends with."""

  def __init__(self):
    super().__init__()
    self.weights, self.final = [], None

  def on_epoch_end(self, epoch, logs=None):
    self.weights.append(self.model.get_weights())

  def on_train_end(self, logs=None):
    self.final = self.model.get_weights()


def constructed_val_loss(monkeypatch, curve, recorder):
  """Makes the loop's per-epoch validation loss follow `curve`."""
  real = trainer.evaluate
  calls = []

  def evaluate(step, dataset):
    result = real(step, dataset)
    if recorder.final is None:  # training: a val_* evaluation
      result["loss"] = curve[len(calls)]
      calls.append(result)
    return result

  monkeypatch.setattr(trainer, "evaluate", evaluate)


def test_auto_stops_on_the_constructed_curve_and_keeps_the_best_weights(
    small_data_16, monkeypatch, tmp_path):
  # 16x16 and 4 steps an epoch: the validation losses are constructed; what
  # is tested is where the run stops and which epoch's weights it keeps,
  # not the pixels.
  recorder = Recorder()
  constructed_val_loss(monkeypatch, [1.0, 0.8, 0.9, 0.85, 0.7, 0.6],
                       recorder)
  config = trainer.recipe("seed", epochs="auto", max_epochs=6, patience=2,
                           batch_size=64, precision="float32",
                           eval_batch_size=128, seed=3,
                           validation_examples=128, train_examples=256)
  results = trainer.train_and_evaluate(config, small_data_16, str(tmp_path),
                                        callbacks=[recorder], verbose=0)
  assert (results["best_epoch"], results["stopped_epoch"],
          results["epochs"], results["stopped_early"]) == (2, 4, 4, True)
  assert results["validation_loss"] == 0.8
  for final, best in zip(recorder.final, recorder.weights[1]):
    np.testing.assert_array_equal(final, best)
  assert not np.array_equal(recorder.weights[3][-1], recorder.weights[1][-1])
  # The saved model is the best epoch's.
  saved = keras.saving.load_model(tmp_path / "model.keras")
  np.testing.assert_array_equal(saved.get_weights()[-1],
                                recorder.weights[1][-1])


def test_a_run_killed_after_its_early_stop_resumes_to_the_same_results(
    small_data_16, monkeypatch, tmp_path):
  # 16x16, as the test above: the curve is constructed.
  curve = [1.0, 0.8, 0.9, 0.85, 0.7, 0.6]
  config = trainer.recipe("seed", epochs="auto", max_epochs=6, patience=2,
                           batch_size=64, precision="float32",
                           eval_batch_size=128, seed=3,
                           validation_examples=128, train_examples=256)

  class KilledBeforeOutputs(Recorder):
    def on_train_end(self, logs=None):
      super().on_train_end(logs)
      raise KeyboardInterrupt

  killed = KilledBeforeOutputs()
  constructed_val_loss(monkeypatch, curve, killed)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, small_data_16, str(tmp_path),
                                callbacks=[killed], verbose=0)
  resumed = Recorder()
  constructed_val_loss(monkeypatch, [], resumed)  # no epoch may evaluate
  results = trainer.train_and_evaluate(config, small_data_16, str(tmp_path),
                                        callbacks=[resumed], verbose=0)
  assert (results["best_epoch"], results["stopped_epoch"],
          results["resumed_after_epoch"]) == (2, 4, 4)
  for final, best in zip(resumed.final, killed.weights[1]):
    np.testing.assert_array_equal(final, best)


@pytest.mark.parametrize("settings,fragment", [
    (dict(epochs="auto", validation_examples=0), "--validation_examples=N"),
    (dict(epochs="auto", validation_examples=10, validation_freq=2),
     "after every epoch"),
    (dict(epochs="sometimes"), "--epochs=sometimes"),
    (dict(validation_examples=-1), "--validation_examples=-1"),
    (dict(max_epochs=0), "--max_epochs=0"),
    (dict(patience=-1), "--patience=-1"),
    (dict(min_delta=-0.1), "--min_delta=-0.1")])
def test_decisions_without_a_validation_split_are_refused(settings, fragment):
  with pytest.raises(UsageError, match=fragment):
    trainer.Config(**settings).validate()


def test_auto_defaults_to_a_5000_example_split_checked_every_epoch():
  config = trainer.recipe("fast", epochs="auto")
  assert (config.validation_examples, config.validation_freq,
          config.epoch_limit) == (5000, 1, 100)
  assert trainer.recipe("fast").validation_examples == 0
  assert trainer.recipe("seed", epochs="auto",
                         validation_examples=300).validation_examples == 300
  plateau = trainer.recipe("fast", lr_schedule="plateau",
                            validation_examples=300)
  assert (plateau.validation_examples, plateau.validation_freq) == (300, 1)
  plateau.validate()


def test_the_seed_recipe_uses_rmsprop_on_plateaus_under_auto_unless_told():
  # Its cosine decay would span --max_epochs, hardly decaying before a stop.
  assert trainer.recipe("seed").lr_schedule == "cosine"
  auto = trainer.recipe("seed", epochs="auto")
  assert (auto.optimizer, auto.lr_schedule, auto.learning_rate) == (
      "rmsprop", "plateau", 1e-3)
  told = trainer.recipe("seed", epochs="auto", optimizer="adam",
                         lr_schedule="cosine")
  assert (told.optimizer, told.lr_schedule, told.learning_rate) == (
      "adam", "cosine", 2e-3)
  assert trainer.recipe("fast", epochs="auto").lr_schedule == "onecycle"
  trainer.recipe("seed", epochs="auto").validate()


def test_plateau_lowers_the_rate_in_the_loop_as_keras_would(small_data_16,
                                                           monkeypatch):
  # 16x16: the validation losses are constructed; the rates are the point.
  recorder = Recorder()
  constructed_val_loss(monkeypatch, [1.0, 1.1, 1.2, 0.9, 1.0], recorder)
  config = trainer.recipe("seed", epochs=5, lr_schedule="plateau",
                           plateau_patience=2, plateau_factor=0.5,
                           learning_rate=1e-3, batch_size=64,
                           precision="float32", eval_batch_size=128, seed=3,
                           validation_examples=128, train_examples=256)
  rates = []

  class Rate(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      rates.append(float(self.model.optimizer.learning_rate.numpy()))

  trainer.train_and_evaluate(config, small_data_16, verbose=0,
                              callbacks=[recorder, Rate()])
  # Two epochs above 1.0 halve the rate after the third.
  np.testing.assert_allclose(rates, [1e-3, 1e-3, 5e-4, 5e-4, 5e-4],
                             rtol=1e-6)


# --- Streamed from shards -----------------------------------------------------


def _write_synthetic_shards(path: str, num_train: int, shape, seed: int = 0,
                            chunk: int = 500) -> int:
  """Random images written chunk by chunk (never all in memory at once).

  Returns:
    The decoded size of the train split in bytes.
  """
  rng = np.random.default_rng(seed)

  def chunks():
    for start in range(0, num_train, chunk):
      n = min(chunk, num_train - start)
      yield ("train", rng.integers(0, 256, (n, *shape), dtype=np.uint8),
             rng.integers(0, 10, n))
    yield "test", rng.integers(0, 256, (64, *shape), dtype=np.uint8), \
        rng.integers(0, 10, 64)

  sources.write_shards(path, "big", [f"c{i}" for i in range(10)], chunks(),
                       {"train": num_train, "test": 64})
  return num_train * int(np.prod(shape))


def test_streamed_shards_train_with_both_models(tmp_path):
  # 16x16: the shards' path through both models is the point, not pixels.
  small_data = halved(sources.load_synthetic(num_train=320, num_test=64,
                                             seed=1))
  path = sources.shards_path(str(tmp_path), "small")
  sources.write_shards(path, "small", small_data.class_names,
                       sources.array_chunks(small_data),
                       sources.array_counts(small_data))
  streamed = sources.load_path(str(tmp_path), "small", cache="disk",
                               shuffle_buffer=100)
  assert isinstance(streamed.train_images, sources.ShardedImages)
  in_memory = sources.load_path(path, cache="memory")
  np.testing.assert_array_equal(in_memory.train_images,
                                small_data.train_images)
  for model in models.MODELS:
    config = trainer.recipe(model, epochs=1, batch_size=32,
                             eval_batch_size=64, validation_examples=64,
                             precision="float32")
    results = trainer.train_and_evaluate(config, streamed, verbose=0)
    assert results["num_train_examples"] == 320 - 64
    assert results["num_validation_examples"] == 64
    assert np.isfinite(results["test_loss"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="needs Linux's /proc/self/clear_refs")
def test_streamed_training_holds_far_less_than_the_data(command_server,
                                                        tmp_path):
  # 96x96 images: 221 MB of decoded training data. The cap is half of
  # that above the process's own memory after a warm-up run on 320 images
  # of the same shape (TensorFlow alone is ~600 MB, more than the data,
  # so a cap on the whole process could not tell streaming from holding).
  shape = (96, 96, 3)
  small, big = str(tmp_path / "small"), str(tmp_path / "big")
  _write_synthetic_shards(small, 320, shape)
  decoded = _write_synthetic_shards(big, 8000, shape, seed=1)
  # Measured grown, for 211 MiB of data: 48 MiB (a Xeon), 76 MiB alone and
  # 111 MiB in a loaded CI run (a 2-core AVX2 AMD EPYC, 2026-12-07; 105 MiB
  # alone at aad5c3f): buffers fill further when the consumer is slow.
  cap = decoded * 3 // 5
  # A process of its own, its peak its own (VmHWM), forked from the
  # command server: tests/training/streamed_memory.py.
  run = command_server.start("tests.training.streamed_memory", [small, big])
  assert run.wait(300) == 0, run.stderr[-3000:]
  report = json.loads(run.stdout.splitlines()[-1])
  assert report["trained"] == 8000 and report["epochs"] == 1
  grown = report["peak"] - report["baseline"]
  print(f"baseline {report['baseline'] / 2**20:.0f} MiB, peak "
        f"{report['peak'] / 2**20:.0f} MiB, data {decoded / 2**20:.0f} MiB")
  assert grown < cap, (grown, cap, report)
