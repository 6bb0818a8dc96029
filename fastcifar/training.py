"""One training path for every `tf.distribute` strategy, single device included.

The step is our own (`strategy.run`), because Keras 3's `fit` fails under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585); what users get from
`fit` is kept: Keras callbacks and progress bar, a compiled model, `.keras`
files. Inside the step, on the device: augmentation on uint8, the model's own
cast and normalization, one-hot labels, the loss and the update.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from fastcifar import (augment, checkpointing, distribute, input_pipeline,
                       layers, models, optimizers, outputs, policy)
from fastcifar.errors import UsageError
from fastcifar.sources import ImageDataset


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run (`recipe` fills in the defaults)."""

  model: str = "seed"
  epochs: int = 20
  batch_size: int = 128
  learning_rate: float = 2e-3
  augment: bool = True
  alternating_flip: bool = False
  label_smoothing: float = 0.0
  tta: bool = False
  lookahead: bool = True
  precision: str = "auto"
  jit_compile: str = "auto"
  seed: int = 0
  train_examples: int = 0
  eval_batch_size: int = 500
  validation_freq: int = 1
  deterministic: bool = False

  def validate(self) -> None:
    """Raises UsageError naming the first setting out of range."""
    checks = [
        ("model", self.model in models.MODELS,
         f"one of {', '.join(models.MODELS)}"),
        ("epochs", self.epochs >= 1, "at least 1"),
        ("batch_size", self.batch_size >= 1, "at least 1"),
        ("learning_rate", self.learning_rate > 0, "positive"),
        ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
        ("precision", self.precision in policy.PRECISIONS,
         f"one of {', '.join(policy.PRECISIONS)}"),
        ("jit_compile", self.jit_compile in policy.JIT_CHOICES,
         f"one of {', '.join(policy.JIT_CHOICES)}"),
        ("train_examples", self.train_examples >= 0, "0 (all) or more"),
        ("eval_batch_size", self.eval_batch_size >= 1, "at least 1"),
        ("validation_freq", self.validation_freq >= 1, "at least 1"),
    ]
    for field, ok, expected in checks:
      if not ok:
        raise UsageError(f"--{field}={getattr(self, field)} is out of range; "
                         f"it must be {expected}")


# How each model's recipe differs from `Config`'s defaults (the seed
# recipe). fast: airbench94's hyperparameters (its learning rate is per 1,024
# examples, for its optimizer); 10 epochs where airbench94 takes 9.9; the
# test set evaluated only after the last epoch, since on a 2-core CPU each
# evaluation costs about 8% of an epoch and only the final accuracy counts.
RECIPE_DEFAULTS = {
    "seed": {},
    "fast": dict(epochs=10, batch_size=1024, learning_rate=11.5,
                 alternating_flip=True, label_smoothing=0.2, tta=True,
                 validation_freq=10),
}


def recipe(model: str = "seed", **settings) -> Config:
  """The `Config` of `model`'s recipe, with `settings` (None: the default).

  Args:
    model: one of `models.MODELS`.
    **settings: `Config` fields; those None take the recipe's value.

  Returns:
    The config (not yet validated).
  """
  if model not in RECIPE_DEFAULTS:
    raise UsageError(f"--model={model} is unknown; it must be one of "
                     f"{', '.join(models.MODELS)}")
  chosen = {k: v for k, v in settings.items() if v is not None}
  return Config(model=model, **{**RECIPE_DEFAULTS[model], **chosen})


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
  """The recipe's optimizer for the whole run.

  fast: airbench94's Nesterov SGD with warm-up, linear decay and lookahead;
  the whitening layer's bias trains for the first 3 epochs only, as there.
  seed: Adam with cosine decay of the learning rate.
  """
  total_steps = config.epochs * steps_per_epoch
  if config.model == "fast":
    return optimizers.airbench_optimizer(
        config.learning_rate, config.batch_size, total_steps,
        lookahead=config.lookahead,
        freeze_after={layers.WHITENING_BIAS: 3 * steps_per_epoch})
  schedule = keras.optimizers.schedules.CosineDecay(
      config.learning_rate, decay_steps=total_steps)
  return keras.optimizers.Adam(schedule)


def compile_model(model: keras.Model, config: Config,
                  steps_per_epoch: int) -> None:
  """Compiles with the run's optimizer, a one-hot loss and accuracy.

  Under mixed_float16 Keras wraps the optimizer in a `LossScaleOptimizer`.
  The compiled loss and metrics are what a loaded `.keras` model evaluates
  with; the training step computes the same loss per example itself, so that
  it can average over the global batch across replicas.
  """
  model.compile(
      optimizer=make_optimizer(config, steps_per_epoch),
      loss=keras.losses.CategoricalCrossentropy(
          label_smoothing=config.label_smoothing),
      metrics=["accuracy"])  # by keyword: the third positional is loss_weights


def make_train_step(model: keras.Model, strategy: tf.distribute.Strategy,
                    config: Config, num_classes: int, jit_compile: bool,
                    steps_per_epoch: int) -> Callable:
  """Builds the distributed training step.

  Args:
    model: a compiled model, built under `strategy.scope()`.
    strategy: where the step runs.
    config: supplies seed, augmentation and label smoothing.
    num_classes: for the on-device one-hot.
    jit_compile: compile the per-replica computation with XLA.
    steps_per_epoch: for the epoch number that alternating flips need.

  Returns:
    `step(iterator) -> (loss_sum, correct)` over the global batch.
  """
  optimizer = model.optimizer
  global_batch = config.batch_size
  replicas = strategy.num_replicas_in_sync

  def gradients(images, labels, step_seed, epoch):
    if config.augment:
      images = augment.flip_and_translate(
          images, step_seed, epoch=epoch if config.alternating_flip else None)
    targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
    with tf.GradientTape() as tape:
      probs = model(images, training=True)
      per_example = keras.losses.categorical_crossentropy(
          targets, probs, label_smoothing=config.label_smoothing)
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels),
        tf.float32))
    return grads, tf.reduce_sum(per_example), correct

  def replica_step(images, labels):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    step_seed = tf.stack([
        tf.constant(config.seed, tf.int64),
        tf.cast(optimizer.iterations, tf.int64) * replicas + tf.cast(
            replica, tf.int64)])
    epoch = tf.cast(optimizer.iterations, tf.int64) // steps_per_epoch
    grads, loss_sum, correct = compiled_gradients(images, labels, step_seed,
                                                  epoch)
    optimizers.apply_and_count(optimizer, grads, model.trainable_variables)
    return loss_sum, correct

  # XLA compiles the forward and backward pass; the update stays outside it
  # because the optimizer's cross-replica all-reduce cannot run inside XLA.
  compiled_gradients = tf.function(gradients, jit_compile=jit_compile)

  @tf.function
  def step(iterator):
    images, labels = next(iterator)
    loss_sum, correct = strategy.run(replica_step, args=(images, labels))
    return (strategy.reduce("SUM", loss_sum, axis=None),
            strategy.reduce("SUM", correct, axis=None))

  return step


def make_eval_step(model: keras.Model, strategy: tf.distribute.Strategy,
                   num_classes: int, jit_compile: bool,
                   tta: bool = False) -> Callable:
  """Builds the distributed evaluation step.

  Args:
    tta: average the model's outputs over `augment.test_time_views`.

  Returns:
    `step(images, labels, weights) -> (loss_sum, correct, count)`, padding
    (weight 0) excluded.
  """

  def replica_step(images, labels, weights):
    if tta:
      probs = tf.add_n([w * model(view, training=False)
                        for view, w in augment.test_time_views(images)])
    else:
      probs = model(images, training=False)
    targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
    per_example = keras.losses.categorical_crossentropy(targets, probs)
    correct = tf.cast(
        tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels),
        tf.float32)
    return (tf.reduce_sum(per_example * weights),
            tf.reduce_sum(correct * weights), tf.reduce_sum(weights))

  compiled = tf.function(replica_step, jit_compile=jit_compile)

  @tf.function
  def step(batch):
    results = strategy.run(compiled, args=batch)
    return [strategy.reduce("SUM", r, axis=None) for r in results]

  return step


def evaluate(eval_step: Callable, dataset) -> dict[str, float]:
  """Runs `eval_step` over a distributed eval dataset: loss and accuracy."""
  totals = np.zeros(3)
  for batch in dataset:
    totals += [float(t) for t in eval_step(batch)]
  loss_sum, correct, count = totals
  return {"loss": loss_sum / count, "accuracy": correct / count}


# A run's final files; results.json, written last, marks the run finished.
FINAL_OUTPUTS = ("model.keras", "history.json", "results.json")


class AlreadyFinished(Exception):
  """The output dir holds a finished run; `results` are its results."""

  def __init__(self, output_dir: str, results: dict):
    super().__init__(
        f"{output_dir} already holds a finished run (test accuracy "
        f"{results.get('test_accuracy', float('nan')):.4f}); pass --restart "
        "to train anew, or choose another --output_dir")
    self.results = results


class TrainingDiverged(UsageError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def _check_finite(loss_sum: float, epoch: int, step: int, kept: str) -> None:
  if not np.isfinite(loss_sum):
    raise TrainingDiverged(
        f"the loss became {loss_sum} at epoch {epoch + 1}, step {step + 1}; "
        f"{kept}; lower --learning_rate (or check the data) and rerun")


def train_and_evaluate(config: Config, dataset: ImageDataset,
                       output_dir: str | None = None, *,
                       strategy: tf.distribute.Strategy | None = None,
                       callbacks: Sequence[keras.callbacks.Callback] = (),
                       verbose: int = 1, restart: bool = False,
                       data_service: str | None = None) -> dict:
  """Trains a model on `dataset` and evaluates it on the test split.

  Seeds Keras, NumPy and Python's `random` with `config.seed`, and with
  `config.deterministic` turns on TensorFlow's op determinism (the run asks
  for both; they stay set); the mixed-precision policy is restored on return.

  With `output_dir`, every epoch ends with a checkpoint there, and a run
  started again with the same settings resumes after the last completed
  epoch; the final `model.keras`, `history.json` and `results.json` are each
  written atomically, and the checkpoints are then removed.

  Args:
    config: the run's settings.
    dataset: uint8 data from `fastcifar.sources`.
    output_dir: where outputs and checkpoints go; None keeps nothing.
    strategy: a `tf.distribute` strategy; `distribute.make_strategy()` when
      None. Under several workers only the chief writes to `output_dir`; the
      others keep their checkpoints in temporary folders they remove.
    callbacks: Keras callbacks, called as `fit` calls them.
    verbose: 1 for a progress bar per epoch, 2 for a line per epoch, 0 quiet.
    restart: train anew even if `output_dir` holds a finished or unfinished
      run: its checkpoints and final files are removed when this run starts,
      so a stopped restart resumes like any other run (without `restart`).
    data_service: a tf.data service dispatcher, `grpc://HOST:PORT`, to
      produce the training batches; None produces them in this process.

  The test set is evaluated after every `config.validation_freq`-th epoch
  (Keras's `validation_freq`) and after the last one; `history["val_epochs"]`
  says after which.

  Returns:
    The results dict that `results.json` holds.

  Raises:
    AlreadyFinished: `output_dir` holds a finished run and `restart` is off.
    TrainingDiverged: the loss became NaN or infinite.
    UsageError: bad settings or an unwritable `output_dir`.
  """
  config.validate()
  start = time.perf_counter()
  device = policy.detect_device()
  precision = policy.resolve_precision(config.precision, device)
  jit_compile = policy.resolve_jit_compile(config.jit_compile, device)
  strategy = strategy or distribute.make_strategy()
  chief = distribute.is_chief(strategy)
  if output_dir:
    prepare_output_dir(output_dir)
    results_path = os.path.join(output_dir, "results.json")
    if os.path.exists(results_path) and not restart:
      with open(results_path) as f:
        raise AlreadyFinished(output_dir, json.load(f))
  images, labels = input_pipeline.subset(
      dataset.train_images, dataset.train_labels, config.train_examples,
      config.seed)
  input_pipeline.check_batch_size(len(images), config.batch_size)
  steps_per_epoch = len(images) // config.batch_size
  mean, std = input_pipeline.channel_stats(images)

  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  with policy.precision_scope(precision), strategy.scope():
    model = models.build_model(config.model, dataset.num_classes, mean, std,
                               train_images=images, seed=config.seed)
    compile_model(model, config, steps_per_epoch)
    model.optimizer.build(model.trainable_variables)
  first_epoch, history = 0, {}
  checkpoint = None
  if output_dir:
    if restart and chief:
      checkpointing.delete_checkpoints(output_dir)
      # The old run's outputs go now, so that a stop of this run resumes it
      # rather than finding the old run "finished".
      for name in FINAL_OUTPUTS:
        if os.path.exists(os.path.join(output_dir, name)):
          os.unlink(os.path.join(output_dir, name))
    # Every worker saves (saving may need all of them), but only the chief
    # into output_dir; all restore from the chief's checkpoints.
    save_dir = output_dir if chief else tempfile.mkdtemp(prefix="fastcifar-")
    checkpoint = checkpointing.RunCheckpoint(model, save_dir, {
        **dataclasses.asdict(config), "dataset": dataset.name,
        "num_classes": dataset.num_classes,
        "num_train_examples": len(images)}, restore_from=output_dir)
    first_epoch, history = checkpoint.restore()
  train_step = make_train_step(model, strategy, config, dataset.num_classes,
                               jit_compile, steps_per_epoch)
  eval_step = make_eval_step(model, strategy, dataset.num_classes, jit_compile)
  def make_train_data(**shard):
    ds = input_pipeline.train_dataset(images, labels, config.batch_size,
                                      config.seed, config.epochs, first_epoch,
                                      **shard)
    return (input_pipeline.through_data_service(ds, data_service)
            if data_service else ds)

  train_data = distribute.distribute(strategy, make_train_data,
                                     config.batch_size)
  eval_batch_size = distribute.round_up_to_replicas(config.eval_batch_size,
                                                    strategy)
  test_data = distribute.distribute(
      strategy, functools.partial(
          input_pipeline.eval_dataset, dataset.test_images,
          dataset.test_labels, eval_batch_size),
      eval_batch_size)

  callback_list = keras.callbacks.CallbackList(
      list(callbacks), add_history=True, add_progbar=verbose > 0, model=model,
      verbose=verbose, epochs=config.epochs, steps=steps_per_epoch)
  if verbose:
    print(f"fastcifar: {config.model} model, {model.count_params():,} "
          f"parameters; {len(images):,} training images, batch "
          f"{config.batch_size}; device {device}, precision {precision}, "
          f"jit_compile {jit_compile}"
          f"{' (chosen by auto)' if config.jit_compile == 'auto' else ''}",
          flush=True)
    if first_epoch == config.epochs:
      print(f"fastcifar: {checkpoint.directory} holds epoch {first_epoch} "
            f"of {config.epochs}, nothing is left to train; evaluating and "
            "writing the outputs", flush=True)
    elif first_epoch:
      print(f"fastcifar: resuming after epoch {first_epoch} from "
            f"{checkpoint.directory}", flush=True)
  iterator = iter(train_data)
  # Time since training began, summed over resumes, at each evaluation's end.
  elapsed_before = (history.get("elapsed_seconds") or [0.0])[-1]

  def elapsed() -> float:
    return elapsed_before + time.perf_counter() - start

  epoch_train_seconds = []
  kept = ("nothing was saved" if not checkpoint else
          f"the checkpoint of the last completed epoch is kept in "
          f"{checkpoint.directory}")

  def test_logs() -> dict[str, float]:
    test = evaluate(eval_step, test_data)
    return {"val_loss": test["loss"], "val_accuracy": test["accuracy"]}

  callback_list.on_train_begin()
  logs = {}
  for epoch in range(first_epoch, config.epochs):
    callback_list.on_epoch_begin(epoch)
    epoch_start = time.perf_counter()
    loss_sum = correct = 0.0
    for batch in range(steps_per_epoch):
      callback_list.on_train_batch_begin(batch)
      step_loss, step_correct = train_step(iterator)
      step_loss = float(step_loss)
      _check_finite(step_loss, epoch, batch, kept)
      loss_sum += step_loss
      correct += float(step_correct)
      seen = (batch + 1) * config.batch_size
      logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
      callback_list.on_train_batch_end(batch, logs)
    distribute.sync_on_read(strategy, model.non_trainable_variables)
    epoch_train_seconds.append(time.perf_counter() - epoch_start)
    if (model.stop_training or epoch + 1 == config.epochs
        or (epoch + 1) % config.validation_freq == 0):
      logs = {**logs, **test_logs()}
      history.setdefault("val_epochs", []).append(epoch + 1)
    for key, value in logs.items():
      history.setdefault(key, []).append(float(value))
    history.setdefault("epoch_seconds", []).append(epoch_train_seconds[-1])
    history.setdefault("elapsed_seconds", []).append(elapsed())
    if checkpoint:
      checkpoint.save(epoch + 1, history)
    callback_list.on_epoch_end(epoch, logs)
    if model.stop_training:
      break
  epochs_done = len(history["epoch_seconds"])
  if history.get("val_epochs", [0])[-1] != epochs_done:
    # A callback stopped training after an epoch that was not evaluated.
    for key, value in test_logs().items():
      history.setdefault(key, []).append(value)
    history.setdefault("val_epochs", []).append(epochs_done)
    history["elapsed_seconds"][-1] = elapsed()
  callback_list.on_train_end(logs)

  final = {"accuracy": history["val_accuracy"][-1],
           "loss": history["val_loss"][-1]}
  accuracies = history["val_accuracy"]
  times = [history["elapsed_seconds"][e - 1] for e in history["val_epochs"]]
  if config.tta:
    final = evaluate(make_eval_step(model, strategy, dataset.num_classes,
                                    jit_compile, tta=True), test_data)
    accuracies = accuracies + [final["accuracy"]]
    times = times + [elapsed()]
  # This process's epochs after its first (which compiles the step); a run
  # resumed with nothing left to train has only the recorded ones.
  steady = (epoch_train_seconds[1:] or epoch_train_seconds
            or history["epoch_seconds"][1:] or history["epoch_seconds"])
  results = {
      "test_accuracy": final["accuracy"],
      "test_loss": final["loss"],
      "test_accuracy_without_tta": history["val_accuracy"][-1],
      "tta": config.tta,
      "best_test_accuracy": max(accuracies),
      "seconds_to_accuracy": seconds_to_accuracy(accuracies, times),
      "epochs": epochs_done,
      "train_seconds": sum(history["epoch_seconds"]),
      "total_seconds": time.perf_counter() - start,
      "resumed_after_epoch": first_epoch,
      "images_per_second": steps_per_epoch * config.batch_size * len(steady)
                           / sum(steady),
      "precision": precision,
      "jit_compile": jit_compile,
      "model": config.model,
      "dataset": dataset.name,
      "num_train_examples": len(images),
      "num_test_examples": len(dataset.test_images),
      "num_parameters": model.count_params(),
      "device": device,
      "num_replicas": strategy.num_replicas_in_sync,
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "config": dataclasses.asdict(config),
  }
  if output_dir and chief:
    outputs.save_model(model, os.path.join(output_dir, "model.keras"))
    outputs.write_json(os.path.join(output_dir, "history.json"), history)
    outputs.write_json(results_path, results)  # last: it marks the run done
  if output_dir:
    checkpointing.delete_checkpoints(save_dir)
    if not chief:
      shutil.rmtree(save_dir, ignore_errors=True)
  return results


ACCURACY_TARGETS = (0.5, 0.75, 0.8, 0.85, 0.9, 0.905, 0.92, 0.94)


def seconds_to_accuracy(accuracies: Sequence[float], seconds: Sequence[float],
                        targets: Sequence[float] = ACCURACY_TARGETS
                        ) -> dict[str, float]:
  """When each accuracy target was first reached.

  Args:
    accuracies: test accuracy at each evaluation, in order.
    seconds: time since training began at the end of each evaluation.
    targets: the accuracies to time.

  Returns:
    `{str(target): seconds}` for the targets reached.
  """
  reached = {}
  for target in targets:
    for accuracy, second in zip(accuracies, seconds):
      if accuracy >= target:
        reached[str(target)] = round(second, 1)
        break
  return reached


def prepare_output_dir(output_dir: str) -> None:
  """Creates `output_dir` if needed; UsageError if it cannot be written."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    # A file of its own: every worker of a cluster checks the same folder.
    with tempfile.TemporaryFile(dir=output_dir, prefix=".fastcifar-write-"):
      pass
  except OSError as e:
    raise UsageError(f"--output_dir {output_dir} is not writable "
                     f"({e.strerror}); choose another folder") from None
