"""fastcifar.doctor: each classic mistake is named by its code, and only it.

Every mistake is a small script on synthetic data: the setup with the mistake
must give exactly that code, and the same setup with the finding's fix
applied must come back clean. Correct setups (fastcifar's own, the textbook
Keras recipe) must raise nothing.
"""

from __future__ import annotations


import keras
import numpy as np
import pytest
import tensorflow as tf

from fastcifar import doctor, models
from fastcifar.data import pipeline
from fastcifar.training import policy, trainer
from fastcifar.errors import UsageError
from fastcifar.data.sources import make_dataset, save_prepared

NUM_CLASSES = 10


def easy_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images whose class is a bright 8x8 patch at its own place.

  A tiny CNN learns them in a few dozen steps, so a run that stays at chance
  is a broken run, not a slow one.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  images = rng.normal(100, 25, (n, 32, 32, 3))
  for k in range(NUM_CLASSES):
    row, col = divmod(k, 4)
    images[labels == k, 8 * row:8 * row + 8, 8 * col:8 * col + 8, :] += 120
  return np.clip(images, 0, 255).astype(np.uint8), labels


def tiny_cnn(input_dtype: str = "float32", head: str | None = "softmax",
             first: tuple = (), head_dtype: str | None = None
             ) -> keras.Sequential:
  """The textbook CNN shape, shrunk: conv, pool, dense softmax."""
  return keras.Sequential([
      keras.Input((32, 32, 3), dtype=input_dtype), *first,
      keras.layers.Conv2D(8, 3, activation="relu"),
      keras.layers.MaxPooling2D(4),
      keras.layers.Flatten(),
      keras.layers.Dense(NUM_CLASSES, activation=head, dtype=head_dtype)])


def compiled(model: keras.Model, loss="categorical_crossentropy",
             optimizer=None, metrics=("accuracy",)) -> keras.Model:
  model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3),
                loss=loss, metrics=list(metrics))
  return model


@pytest.fixture(scope="module")
def data():
  """(uint8 images, int labels, float 0-1 images, one-hot labels)."""
  images, labels = easy_images(256)
  return (images, labels, images.astype("float32") / 255,
          keras.utils.to_categorical(labels, NUM_CLASSES))


def codes(findings) -> list[str]:
  return [f.code for f in findings]


# --- one script per mistake: (mistake, fixed) -> the code, then nothing ---


def unnormalized_input(data, fixed):
  images, _, unit, onehot = data
  x = unit if fixed else images.astype("float32")  # the fix: x / 255
  return compiled(tiny_cnn()), x, onehot, {}


def float01_into_a_model_that_scales_0_255(data, fixed):
  # fastcifar's models take uint8 and standardize inside: 0-1 floats (the
  # doctor's --pixels=float01) are truncated to 0 or 1 on the way in.
  images, labels, unit, _ = data
  mean, std = pipeline.channel_stats(images)
  model = models.build_model("seed", NUM_CLASSES, mean, std)
  trainer.compile_model(model, trainer.Config(), 10)
  return model, images if fixed else unit, labels, {"one_hot_on_device": True}


def float01_into_a_model_standardizing_cifar_channels(data, fixed):
  # The same with CIFAR-10's own channel statistics, as a trained fastcifar
  # model holds them: the channels' means differ, so the 0-1 pixels reach
  # the first conv spread over 0.3 in all (-2.0 to -1.7), but by only 1/63
  # within each channel. Seen on a real model.keras: "no problems found".
  images, labels, unit, _ = data
  model = models.build_model("seed", NUM_CLASSES, (125.3, 123.0, 113.9),
                             (63.0, 62.1, 66.7))
  trainer.compile_model(model, trainer.Config(), 10)
  return model, images if fixed else unit, labels, {"one_hot_on_device": True}


def integer_input(data, fixed):
  images, _, _, onehot = data
  first = (keras.layers.Rescaling(1 / 255),) if fixed else ()
  return compiled(tiny_cnn(first=first)), images, onehot, {}


def integer_input_uint8_model(data, fixed):
  # A uint8 Input straight into Conv2D: Keras refuses it; the doctor says why.
  images, _, _, onehot = data
  first = (keras.layers.Rescaling(1 / 255),) if fixed else ()
  return compiled(tiny_cnn("uint8", first=first)), images, onehot, {}


def ids_with_categorical_loss(data, fixed):
  _, labels, unit, _ = data
  loss = ("sparse_categorical_crossentropy" if fixed
          else "categorical_crossentropy")
  return compiled(tiny_cnn(), loss), unit, labels, {}


def one_hot_with_sparse_loss(data, fixed):
  _, _, unit, onehot = data
  loss = ("categorical_crossentropy" if fixed
          else "sparse_categorical_crossentropy")
  return compiled(tiny_cnn(), loss), unit, onehot, {}


def binary_loss_on_softmax(data, fixed):
  _, _, unit, onehot = data
  loss = "categorical_crossentropy" if fixed else "binary_crossentropy"
  return compiled(tiny_cnn(), loss), unit, onehot, {}


def label_column(data, fixed):
  # keras.datasets.cifar10 gives labels of shape (N, 1).
  _, labels, unit, _ = data
  y = labels if fixed else labels.reshape(-1, 1)
  return compiled(tiny_cnn(), "sparse_categorical_crossentropy"), unit, y, {}


def label_column_one_hot_on_device(data, fixed):
  images, labels, _, _ = data
  y = labels if fixed else labels.reshape(-1, 1)
  model = compiled(tiny_cnn("uint8", first=(keras.layers.Rescaling(1 / 255),)))
  return model, images, y, {"one_hot_on_device": True}


def softmax_with_from_logits(data, fixed):
  _, _, unit, onehot = data
  loss = keras.losses.CategoricalCrossentropy(from_logits=not fixed)
  return compiled(tiny_cnn(), loss), unit, onehot, {}


def logits_without_from_logits(data, fixed):
  _, labels, unit, _ = data
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=fixed)
  return compiled(tiny_cnn(head=None), loss), unit, labels, {}


def float16_output(data, fixed):
  _, _, unit, onehot = data
  with policy.precision_scope("mixed_float16"):
    model = tiny_cnn(head_dtype="float32" if fixed else None)
  return compiled(model), unit, onehot, {}


def dense_only_net(data, fixed):
  _, _, unit, onehot = data
  if fixed:
    return compiled(tiny_cnn()), unit, onehot, {}
  mlp = keras.Sequential([
      keras.Input((32, 32, 3)), keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(NUM_CLASSES, activation="softmax")])
  return compiled(mlp), unit, onehot, {}


def learning_rate_far_too_high(data, fixed):
  # Adam(0.01) left the textbook CIFAR-10 CNN at chance in a measured run.
  _, _, unit, onehot = data
  optimizer = keras.optimizers.Adam(1e-3 if fixed else 0.01)
  return compiled(tiny_cnn(), optimizer=optimizer), unit, onehot, {}


def warm_up_to_a_high_rate(data, fixed):
  # The schedule starts near 0: the peak it warms up to is what counts.
  _, _, unit, onehot = data
  schedule = keras.optimizers.schedules.CosineDecay(
      1e-5, decay_steps=1000, warmup_target=1e-3 if fixed else 0.05,
      warmup_steps=100)
  optimizer = keras.optimizers.AdamW(schedule)
  return compiled(tiny_cnn(), optimizer=optimizer), unit, onehot, {}


def sgd_learning_rate_far_too_low(data, fixed):
  _, _, unit, onehot = data
  optimizer = keras.optimizers.SGD(0.05 if fixed else 1e-6, momentum=0.9)
  return compiled(tiny_cnn(), optimizer=optimizer), unit, onehot, {}


def sorted_unshuffled_dataset(data, fixed):
  _, labels, unit, onehot = data
  order = np.argsort(labels, kind="stable")
  ds = tf.data.Dataset.from_tensor_slices((unit[order], onehot[order]))
  if fixed:
    ds = ds.shuffle(len(order), seed=0)
  return compiled(tiny_cnn()), ds.batch(16), None, {}


def labels_from_one(data, fixed):
  _, labels, unit, _ = data
  y = labels if fixed else labels + 1  # 1..10: the fix renumbers from 0
  return compiled(tiny_cnn(), "sparse_categorical_crossentropy"), unit, y, {}


def accuracy_class_metric(data, fixed):
  _, _, unit, onehot = data
  metrics = ["accuracy"] if fixed else [keras.metrics.Accuracy()]
  return compiled(tiny_cnn(), metrics=metrics), unit, onehot, {}


def nan_in_batch(data, fixed):
  _, _, unit, onehot = data
  x = unit.copy()
  x[3, 0, 0, 0] = np.nan
  if fixed:
    keep = np.isfinite(x).all(axis=(1, 2, 3))
    x, onehot = x[keep], onehot[keep]
  return compiled(tiny_cnn()), x, onehot, {}


MISTAKES = [
    (unnormalized_input, "unnormalized-input", doctor.ERROR),
    (float01_into_a_model_that_scales_0_255, "unnormalized-input",
     doctor.ERROR),
    (float01_into_a_model_standardizing_cifar_channels, "unnormalized-input",
     doctor.ERROR),
    (integer_input, "integer-input", doctor.ERROR),
    (integer_input_uint8_model, "integer-input", doctor.ERROR),
    (ids_with_categorical_loss, "label-loss-mismatch", doctor.ERROR),
    (one_hot_with_sparse_loss, "label-loss-mismatch", doctor.ERROR),
    (binary_loss_on_softmax, "label-loss-mismatch", doctor.ERROR),
    (label_column, "label-shape", doctor.WARNING),
    (label_column_one_hot_on_device, "label-shape", doctor.ERROR),
    (softmax_with_from_logits, "logits-mismatch", doctor.ERROR),
    (logits_without_from_logits, "logits-mismatch", doctor.ERROR),
    (float16_output, "float16-output", doctor.WARNING),
    (dense_only_net, "no-conv-on-images", doctor.WARNING),
    (learning_rate_far_too_high, "learning-rate", doctor.ERROR),
    (warm_up_to_a_high_rate, "learning-rate", doctor.ERROR),
    (sgd_learning_rate_far_too_low, "learning-rate", doctor.WARNING),
    (sorted_unshuffled_dataset, "single-class-batch", doctor.ERROR),
    (labels_from_one, "label-range", doctor.ERROR),
    (accuracy_class_metric, "accuracy-metric", doctor.ERROR),
    (nan_in_batch, "nan-input", doctor.ERROR),
]


@pytest.mark.parametrize("script,code,severity", MISTAKES,
                         ids=[m[0].__name__ for m in MISTAKES])
def test_each_mistake_is_named_by_its_code_alone(data, script, code,
                                                 severity):
  model, x, y, kwargs = script(data, fixed=False)
  findings = doctor.check(model, x, y, **kwargs)
  assert codes(findings) == [code], doctor.format_findings(findings)
  assert findings[0].severity == severity
  assert findings[0].message and findings[0].fix
  assert "\n" not in findings[0].message + findings[0].fix  # one line each


@pytest.mark.parametrize("script,code,severity", MISTAKES,
                         ids=[m[0].__name__ for m in MISTAKES])
def test_the_fix_clears_the_finding(data, script, code, severity):
  del code, severity
  model, x, y, kwargs = script(data, fixed=True)
  findings = doctor.check(model, x, y, **kwargs)
  assert findings == [], doctor.format_findings(findings)


def test_every_code_is_documented(data):
  emitted = {code for _, code, _ in MISTAKES}
  watched = {"not-learning", "nan-loss", "too-few-epochs"}
  assert emitted | watched == set(doctor.CODES)


# --- correct setups: no false alarms ---------------------------------------


def test_textbook_setup_is_clean(data):
  # benchmarks/recipe.py: x / 255 floats, to_categorical, softmax, Adam.
  _, _, unit, onehot = data
  model = compiled(keras.Sequential([
      keras.Input((32, 32, 3)),
      *models.seed_cnn_layers(NUM_CLASSES)]))
  assert doctor.check(model, unit, onehot) == []
  assert doctor.check(model, (unit, onehot)) == []
  ds = tf.data.Dataset.from_tensor_slices((unit, onehot)).shuffle(256).batch(32)
  assert doctor.check(model, ds) == []
  assert doctor.check(model, ds.unbatch()) == []  # batched for the check


@pytest.mark.parametrize("setup", [
    "sparse", "logits", "uint8_rescaling_inside", "batchnorm_first",
    "functional", "sorted_arrays_fit_shuffles"])
def test_other_correct_setups_are_clean(data, setup):
  images, labels, unit, onehot = data
  x, y, model = unit, onehot, None
  if setup == "sparse":
    model, y = compiled(tiny_cnn(), "sparse_categorical_crossentropy"), labels
  elif setup == "logits":
    model = compiled(tiny_cnn(head=None), keras.losses.CategoricalCrossentropy(
        from_logits=True))
  elif setup == "uint8_rescaling_inside":
    model = compiled(tiny_cnn("uint8",
                              first=(keras.layers.Rescaling(1 / 255),)))
    x = images
  elif setup == "batchnorm_first":  # BatchNorm normalizes raw pixels itself
    model = compiled(tiny_cnn(first=(keras.layers.BatchNormalization(),)))
    x = images.astype("float32")
  elif setup == "functional":
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = compiled(keras.Model(inputs, keras.layers.Dense(
        NUM_CLASSES, activation="softmax")(h)))
    x = images
  elif setup == "sorted_arrays_fit_shuffles":
    order = np.argsort(labels[:64])  # not one class in the first batch
    model, x, y = compiled(tiny_cnn()), unit[order], onehot[order]
  assert doctor.check(model, x, y) == [], setup


def fastcifar_setup(precision: str, train_examples: int = 256):
  """fastcifar's own model, compiled as training does, and its pipeline."""
  images, labels = easy_images(train_examples)
  config = trainer.Config(batch_size=64, precision=precision)
  steps = len(images) // config.batch_size
  mean, std = pipeline.channel_stats(images)
  with policy.precision_scope(precision):
    model = models.build_model("seed", NUM_CLASSES, mean, std)
    trainer.compile_model(model, config, steps)
  data = pipeline.train_dataset(images, labels, config.batch_size,
                                      config.seed, config.epochs)
  return model, data


@pytest.mark.parametrize("precision",
                         ["float32", "mixed_bfloat16", "mixed_float16"])
def test_fastcifar_default_setup_is_clean(precision):
  model, data = fastcifar_setup(precision)
  findings = doctor.check(model, data, one_hot_on_device=True)
  assert findings == [], doctor.format_findings(findings)
  assert doctor.preflight(model, data, one_hot_on_device=True) == []


def test_fastcifar_without_one_hot_on_device_sees_the_mismatch():
  # The same int labels with a categorical loss are wrong for a plain fit.
  model, data = fastcifar_setup("float32")
  assert codes(doctor.check(model, data)) == ["label-loss-mismatch"]


def test_fastcifar_bad_learning_rate_fails_preflight():
  images, labels = easy_images(128)
  mean, std = pipeline.channel_stats(images)
  model = models.build_model("seed", NUM_CLASSES, mean, std)
  trainer.compile_model(model, trainer.Config(learning_rate=5.0), 2)
  lines = []
  with pytest.raises(UsageError, match=r"\[learning-rate\].*--nopreflight"):
    doctor.preflight(model, (images, labels), one_hot_on_device=True,
                     print_fn=lines.append, skip_hint="--nopreflight skips it")
  assert len(lines) == 1 and "learning-rate" in lines[0]


def test_model_only_check_needs_no_data():
  model = compiled(tiny_cnn(), optimizer=keras.optimizers.Adam(0.5))
  assert codes(doctor.check(model)) == ["learning-rate"]
  assert doctor.check(compiled(tiny_cnn())) == []


def test_a_batch_the_model_cannot_take_is_a_usage_error(data):
  _, _, unit, onehot = data
  with pytest.raises(UsageError, match="cannot take this batch"):
    doctor.check(compiled(tiny_cnn()), unit[:, :16, :16], onehot)


# --- Watch: before the first step and during training ----------------------


class StepCounter(keras.callbacks.Callback):
  """Counts training steps begun, and when the Watch spoke."""

  def __init__(self, watch: doctor.Watch):
    super().__init__()
    self.watch = watch
    self.steps = 0
    self.findings_before_first_step = None

  def on_train_batch_begin(self, batch, logs=None):
    if self.steps == 0:
      self.findings_before_first_step = list(self.watch.codes)
    self.steps += 1


def fit(model, x, y, watch, epochs=1, **kwargs):
  counter = StepCounter(watch)
  model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
            callbacks=[watch, counter], **kwargs)
  return counter


def test_watch_names_mistakes_before_the_first_step(data):
  model, x, y, _ = unnormalized_input(data, fixed=False)
  lines = []
  watch = doctor.Watch(x, y, print_fn=lines.append, after_steps=1000)
  counter = fit(model, x, y, watch)
  assert counter.findings_before_first_step == ["unnormalized-input"]
  assert counter.steps == 8  # warns, does not stop
  assert lines[0].startswith("fastcifar.doctor: error [unnormalized-input]")


def test_watch_with_stop_refuses_to_start(data):
  model, x, y, _ = ids_with_categorical_loss(data, fixed=False)
  watch = doctor.Watch(x, y, stop=True, print_fn=lambda _: None)
  with pytest.raises(doctor.PreflightError) as raised:
    fit(model, x, y, watch)
  assert [f.code for f in raised.value.findings] == ["label-loss-mismatch"]
  assert int(model.optimizer.iterations) == 0


def test_watch_is_quiet_on_a_correct_run(data):
  keras.utils.set_random_seed(0)
  images, labels = easy_images(1024, seed=1)
  x = images.astype("float32") / 255
  model = compiled(tiny_cnn(), "sparse_categorical_crossentropy",
                   keras.optimizers.Adam(3e-3))
  watch = doctor.Watch(x, labels, after_steps=24, window=8,
                       print_fn=lambda _: None)
  counter = fit(model, x, labels, watch)
  assert watch.codes == [] and counter.steps == 32


def test_watch_names_not_learning_and_stops_on_request(data):
  keras.utils.set_random_seed(0)
  images, labels = easy_images(1024, seed=1)
  x = images.astype("float32") / 255
  shuffled = np.random.default_rng(0).permutation(labels)  # no signal left
  model = compiled(tiny_cnn(), "sparse_categorical_crossentropy",
                   keras.optimizers.Adam(3e-3))
  watch = doctor.Watch(x, shuffled, stop=True, after_steps=24, window=8,
                       print_fn=lambda _: None)
  counter = fit(model, x, shuffled, watch, epochs=3)
  assert watch.codes == ["not-learning"]
  assert counter.steps == 24  # stopped at the judgement, not after 96


def test_watch_names_nan_loss_hidden_behind_a_finite_loss(data):
  # Max-pooling skips NaN: the loss reads about log(10), the weights are NaN.
  _, _, unit, onehot = data
  x = unit.copy()
  x[100] = np.inf  # past the first batch, so the check at start is clean
  model = compiled(tiny_cnn())
  watch = doctor.Watch(x, onehot, stop=True, print_fn=lambda _: None)
  counter = fit(model, x, onehot, watch, epochs=3, shuffle=False)
  assert watch.codes == ["nan-loss"]
  # Found within the first epoch: by the weight check at its end (8 steps)
  # where max-pooling skips NaN (oneDNN's AMX kernels, Sapphire Rapids), at
  # the poisoned batch itself (step 4) where the pooled NaN reaches the loss
  # (oneDNN's AVX-512 kernels on an AMD EPYC, 2026-12-07).
  assert 4 <= counter.steps <= 8


def test_watch_names_a_nan_loss_at_once():
  model = compiled(tiny_cnn())
  watch = doctor.Watch(print_fn=lambda _: None, stop=True)
  watch.set_model(model)
  watch.on_train_begin()
  watch.on_epoch_begin(0)
  watch.on_train_batch_end(0, {"loss": 2.3, "accuracy": 0.1})
  watch.on_train_batch_end(1, {"loss": float("nan"), "accuracy": 0.1})
  assert watch.codes == ["nan-loss"] and model.stop_training


def feed_epochs(watch: doctor.Watch, val_accuracy) -> None:
  watch.on_train_begin()
  for epoch, accuracy in enumerate(val_accuracy):
    watch.on_epoch_begin(epoch)
    watch.on_epoch_end(epoch, {"loss": 1.0, "accuracy": accuracy,
                               "val_accuracy": accuracy})
  watch.on_train_end()


def test_watch_names_too_few_epochs_only_while_still_rising():
  model = compiled(tiny_cnn())
  rising = doctor.Watch(print_fn=lambda _: None)
  rising.set_model(model)
  feed_epochs(rising, [0.40, 0.50, 0.58, 0.64])
  assert rising.codes == ["too-few-epochs"]
  assert "epochs=8" in rising.findings[0].fix
  assert "--epochs=auto" in rising.findings[0].fix
  level = doctor.Watch(print_fn=lambda _: None)
  level.set_model(model)
  feed_epochs(level, [0.70, 0.75, 0.76, 0.761, 0.758])
  assert level.codes == []


def test_watch_tells_an_early_stopped_run_to_raise_its_limit():
  # --epochs=auto ran out of --max_epochs: it already stops early.
  watch = doctor.Watch(print_fn=lambda _: None, early_stopping=True)
  watch.set_model(compiled(tiny_cnn()))
  feed_epochs(watch, [0.40, 0.50, 0.58, 0.64])
  assert watch.codes == ["too-few-epochs"]
  assert "--max_epochs=8" in watch.findings[0].fix
  assert "--epochs" not in watch.findings[0].fix


def test_watch_does_not_ask_for_more_epochs_at_100_percent():
  watch = doctor.Watch(print_fn=lambda _: None)
  watch.set_model(compiled(tiny_cnn()))
  feed_epochs(watch, [0.91, 0.96, 0.99, 1.0])
  assert watch.codes == []


def test_watch_judges_sparse_evaluations_by_training_accuracy():
  # With validation_freq > 1 the test accuracy is missing from most epochs;
  # the training accuracy (here level) is the per-epoch series to judge.
  watch = doctor.Watch(print_fn=lambda _: None)
  watch.set_model(compiled(tiny_cnn()))
  watch.on_train_begin()
  for epoch, (accuracy, val_accuracy) in enumerate(
      [(0.70, None), (0.75, 0.40), (0.76, None), (0.761, None),
       (0.758, 0.64)]):
    logs = {"loss": 1.0, "accuracy": accuracy}
    if val_accuracy is not None:
      logs["val_accuracy"] = val_accuracy
    watch.on_epoch_begin(epoch)
    watch.on_epoch_end(epoch, logs)
  watch.on_train_end()
  assert watch.codes == []


def test_watch_recovers_per_step_values_from_running_means():
  # Running means 0.1, 0.1, 0.4: the third step alone had accuracy 1.0.
  model = compiled(tiny_cnn())
  watch = doctor.Watch(print_fn=lambda _: None, after_steps=3, window=1)
  watch.set_model(model)
  watch.on_train_begin()
  watch.on_epoch_begin(0)
  for batch, accuracy in enumerate([0.1, 0.1, 0.4]):
    watch.on_train_batch_end(batch, {"loss": 2.0, "accuracy": accuracy})
  assert watch.codes == []  # the last step (1.0) is far above chance


def test_watch_refuses_a_fastcifar_run_before_its_first_step():
  # As fastcifar.train --preflight wires it, with --learning_rate=0.05.
  images, labels = easy_images(256, seed=2)
  dataset = make_dataset("easy", images, labels, images[:64], labels[:64],
                         [f"c{i}" for i in range(NUM_CLASSES)], "test")
  config = trainer.Config(epochs=1, batch_size=64, learning_rate=0.05,
                           precision="float32", jit_compile="false")
  watch = doctor.Watch(images[:128], labels[:128], one_hot_on_device=True,
                       stop=True, hint="--nopreflight skips this check",
                       print_fn=lambda _: None)
  counter = StepCounter(watch)
  with pytest.raises(UsageError, match=r"^\[learning-rate\] .*"
                     r"\(--nopreflight skips this check\)$"):
    trainer.train_and_evaluate(config, dataset, callbacks=[watch, counter],
                                verbose=0)
  assert counter.steps == 0


def test_watch_works_in_fastcifars_training_loop():
  images, labels = easy_images(384, seed=2)
  test_images, test_labels = easy_images(64, seed=3)
  dataset = make_dataset("easy", images, labels, test_images, test_labels,
                         [f"c{i}" for i in range(NUM_CLASSES)], "test")
  config = trainer.Config(epochs=2, batch_size=64, augment=False,
                           precision="float32", jit_compile="false")
  pick = np.random.default_rng(0).choice(len(images), 128, replace=False)
  watch = doctor.Watch(images[pick], labels[pick], one_hot_on_device=True,
                       stop=True, after_steps=6, window=3,
                       print_fn=lambda _: None)
  results = trainer.train_and_evaluate(config, dataset, callbacks=[watch],
                                        verbose=0)
  assert [c for c in watch.codes if c != "too-few-epochs"] == []
  assert results["epochs"] == 2 and watch._step == 12


# --- the command line --------------------------------------------------------


# `python -m fastcifar.doctor`, forked from the worker's command server: a
# process of its own (exit status, stdout, stderr), without the ~7 s import.
def test_command_line_checks_a_saved_model(tmp_path, command_server):
  images, labels = easy_images(64)
  dataset = make_dataset("cifar10", images, labels, images, labels,
                         [f"c{i}" for i in range(NUM_CLASSES)], "test")
  data_path = str(tmp_path / "fastcifar-cifar10.npz")
  save_prepared(dataset, data_path)
  raw = compiled(tiny_cnn(), optimizer=keras.optimizers.Adam(0.5))
  raw.save(tmp_path / "raw.keras")
  mean, std = pipeline.channel_stats(images)
  good = models.build_model("seed", NUM_CLASSES, mean, std)
  trainer.compile_model(good, trainer.Config(), 10)
  good.save(tmp_path / "good.keras")

  bad = command_server.run(
      "fastcifar.doctor.__main__",
      [f"--model={tmp_path / 'raw.keras'}", f"--data_dir={data_path}",
       "--batch_size=32"])
  assert bad.returncode == 1, bad.stderr
  assert "[integer-input]" in bad.stdout and "[learning-rate]" in bad.stdout
  fine = command_server.run(
      "fastcifar.doctor.__main__",
      [f"--model={tmp_path / 'good.keras'}", f"--data_dir={data_path}"])
  assert fine.returncode == 0, fine.stdout + fine.stderr
  assert "no problems found" in fine.stdout
  # Bad input (exit 2, one line): test_command_line_reads_the_runs_data_record.


def test_command_line_reads_the_runs_data_record(pad_run, command_server):
  # No data flag: the image folder, its size and --resize=pad from run.json.
  done = command_server.run("fastcifar.doctor.__main__", [f"--model={pad_run}"])
  assert done.returncode in (0, 1), done.stderr
  # 24 training images of classes a, b; fastcifar's training: one-hot labels.
  assert done.stdout.startswith(
      f"fastcifar.doctor: {pad_run} on 24 data train images fed as uint8, "
      "labels one-hot"), done.stdout
  refused = command_server.run("fastcifar.doctor.__main__",
                               [f"--model={pad_run}", "--image_size=48"])
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines() == [
      "fastcifar.doctor: error: --image_size=48 contradicts the run that "
      "trained the model, which used --image_size=32,32 (its run.json); drop "
      "--image_size"]
