"""One training path for every `tf.distribute` strategy, single device included.

The step is our own (`strategy.run`), because Keras 3's `fit` fails under
`MultiWorkerMirroredStrategy` (keras-team/keras#20585); what users get from
`fit` is kept: Keras callbacks and progress bar, a compiled model, `.keras`
files. On the device: augmentation on uint8 (on CPUs one step ahead, beside
the step before it), then in the step the model's own cast and
normalization, one-hot labels, the loss and the update; the steps run in
loops of `--steps_per_loop` on the device (`fastcifar.training.step_loop`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
import zlib
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from fastcifar import models, optimizers
from fastcifar.data import augment, pipeline
from fastcifar.errors import UsageError
from fastcifar.models import recipes
from fastcifar.training import (checkpointing, distribute, outputs, policy,
                                resumable, step_loop)
from fastcifar.training.config import Config  # also trainer.Config
# recipe: re-exported, training.recipe as before.
from fastcifar.models.recipes import make_optimizer, recipe  # noqa: F401
from fastcifar.data import sources
from fastcifar.data.sources import ImageDataset


def compile_model(model: keras.Model, config: Config, steps_per_epoch: int,
                  model_recipe: recipes.Recipe | None = None) -> None:
  """Compiles with the recipe's optimizer, a one-hot loss and accuracy.

  `model_recipe`: a user's model's (None: the built-in model's).

  Under mixed_float16 Keras wraps the optimizer in a `LossScaleOptimizer`.
  The compiled loss and metrics are what a loaded `.keras` model evaluates
  with; the training step computes the same loss per example itself, so that
  it can average over the global batch across replicas.
  """
  model.compile(
      optimizer=make_optimizer(config, steps_per_epoch, model_recipe),
      loss=keras.losses.CategoricalCrossentropy(
          from_logits=config.from_logits,
          label_smoothing=config.label_smoothing),
      metrics=["accuracy"])  # by keyword: the third positional is loss_weights


def make_train_step(model: keras.Model, strategy: tf.distribute.Strategy,
                    config: Config, num_classes: int, jit_compile: bool,
                    steps_per_epoch: int) -> step_loop.TrainLoop:
  """Builds the distributed training step, run in loops of steps.

  Args:
    model: a compiled model, built under `strategy.scope()`.
    strategy: where the step runs.
    config: supplies seed, augmentation and label smoothing.
    num_classes: for the on-device one-hot.
    jit_compile: compile the step with XLA: all of it where the strategy
      allows (`distribute.compiles_update`), else all but the update.
      Either way the augmentation is compiled (and, in the model, the
      input standardization); on CPUs it runs one step ahead, outside the
      step (`step_loop.TrainLoop`'s `prepare`).
    steps_per_epoch: for the epoch number that alternating flips need.

  Returns:
    `loop(iterator, num_steps, sums)`, a `step_loop.TrainLoop`.
  """
  optimizer = model.optimizer
  global_batch = config.batch_size

  def augmented(images, labels, step):
    """One replica's batch as it trains: augmented by its step's seed."""
    if not config.augment:
      return images, labels
    epoch = step // steps_per_epoch if config.alternating_flip else None
    return augment.augment_step(images, config.seed, step, epoch), labels

  def gradients(images, labels):
    targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
    with tf.GradientTape() as tape:
      probs = model(images, training=True)  # or logits: argmax is the same
      per_example = keras.losses.categorical_crossentropy(
          targets, probs, from_logits=config.from_logits,
          label_smoothing=config.label_smoothing)
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

  whole_step = jit_compile and distribute.compiles_update(strategy)
  if jit_compile and not whole_step:
    # The update's cross-replica all-reduce cannot run inside XLA: it
    # compiles the forward and backward pass, the update runs outside.
    gradients = tf.function(gradients, jit_compile=True)

  # The update alone is not compiled outside a whole-step XLA: it measured
  # 1.014x faster at batch 128 (0.997-1.040x; 1.048x at batch 8) for 1.7 s
  # more XLA compiling per step built (2-core AMD EPYC, 2026-12-02).

  def update(images, labels):
    grads, loss_sum, correct = gradients(images, labels)
    optimizers.apply_and_count(optimizer, grads, model.trainable_variables)
    return loss_sum, correct

  # On CPUs the host's cores are the device: the next batch's augmentation
  # runs on the core a step leaves free (a tiny model's step: +0.22 ms of
  # augmentation in series, +0.01-0.10 ms ahead; 2-core Xeon, 2026-12-03).
  # On accelerators it stays in the step, one program per step.
  ahead = config.augment and distribute.runs_on_cpus(strategy)
  if ahead:
    replica_step = update
  else:
    def replica_step(images, labels, step):
      return update(*augmented(images, labels, step))
  if whole_step:
    replica_step = tf.function(replica_step, jit_compile=True)
  return step_loop.TrainLoop(replica_step, strategy,
                             first_step=lambda: optimizer.iterations,
                             prepare=augmented if ahead else None)


def make_eval_step(model: keras.Model, strategy: tf.distribute.Strategy,
                   num_classes: int, jit_compile: bool,
                   tta: bool = False, from_logits: bool = False) -> Callable:
  """Builds the distributed evaluation step.

  Args:
    tta: average the model's outputs over `augment.test_time_views`.
    from_logits: the model outputs logits; they are made probabilities
      before any averaging.

  Returns:
    `step(images, labels, weights) -> (loss_sum, correct, count)`, padding
    (weight 0) excluded.
  """

  def probabilities(images):
    outputs = model(images, training=False)
    return tf.nn.softmax(tf.cast(outputs, tf.float32)) if from_logits else (
        outputs)

  def replica_step(images, labels, weights):
    if tta:
      probs = tf.add_n([w * probabilities(view)
                        for view, w in augment.test_time_views(images)])
    else:
      probs = probabilities(images)
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
FINAL_OUTPUTS = ("model.keras", outputs.RUN_RECORD, "history.json",
                 "results.json")
# Everything a run and the commands after it write into its output folder
# (checkpoints, TensorBoard logs, train --export, evaluate's and
# tools/plot_history.py's default PNGs): --restart removes them all.
RUN_OUTPUTS = (*FINAL_OUTPUTS, checkpointing.CHECKPOINT_DIR, "tensorboard",
               "export", "confusion_matrix.png", "history.png")
# Settings that change when the run hears back or saves, or how many
# examples it evaluates at once, not a number it computes: a run may
# resume, or be asked again, with other values (one saved with the old
# default eval_batch_size 500 too).
_MECHANICS = ("steps_per_loop", "checkpoint_every", "eval_batch_size")


class AlreadyFinished(Exception):
  """The output dir holds this run, finished; `results` are its results."""

  def __init__(self, output_dir: str, results: dict):
    epochs = results.get("epochs")
    super().__init__(
        f"{output_dir} already holds this run, finished: test accuracy "
        f"{results.get('test_accuracy', float('nan')):.4f}, test loss "
        f"{results.get('test_loss', float('nan')):.4f}"
        + (f" after {epochs} epoch{'s' * (epochs != 1)}" if epochs else "")
        + "; pass --restart to train it again, or choose another "
        "--output_dir")
    self.results = results


class TrainingDiverged(UsageError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class _Run:
  """What the pieces of one run share once its model and state are ready."""

  config: Config
  dataset: ImageDataset
  strategy: tf.distribute.Strategy
  model: keras.Model
  prebuilt: bool  # the caller built the model: it keeps its own dtypes
  images: np.ndarray | sources.ShardedImages  # trained on (maybe streamed)
  labels: np.ndarray
  val_images: np.ndarray  # held out for val_*; empty: val_* is the test set
  val_labels: np.ndarray
  steps_per_epoch: int
  steps_per_loop: int
  # What, besides the config, fixes the training data's order (`data_order`).
  data_order: dict
  device: str
  precision: str
  jit_compile: bool
  start: float  # perf_counter when this process began the run
  output_dir: str | None = None
  checkpoint: checkpointing.RunCheckpoint | None = None
  save_dir: str | None = None
  # Callbacks that decide by val_loss (early stopping, plateaus): they run
  # before each checkpoint, which holds their state.
  controls: list = dataclasses.field(default_factory=list)
  # The caller's callbacks with state() and resume() (the doctor's Watch):
  # the checkpoints hold their state too.
  stateful_callbacks: list = dataclasses.field(default_factory=list)
  first_epoch: int = 0
  # Where, and with what, the first epoch resumes (its step, metric sums
  # and training time so far); `stop_requested`: a callback's stop.
  resumed: checkpointing.State = dataclasses.field(
      default_factory=checkpointing.State)
  history: dict = dataclasses.field(default_factory=dict)
  epoch_train_seconds: list[float] = dataclasses.field(default_factory=list)
  elapsed_before: float = 0.0  # by the runs this one resumes
  last_save: float = 0.0  # perf_counter at this process's last checkpoint

  @property
  def chief(self) -> bool:
    return distribute.is_chief(self.strategy)

  def elapsed(self) -> float:
    """Time since training began, summed over resumes."""
    return self.elapsed_before + time.perf_counter() - self.start

  @property
  def validation_split(self) -> bool:
    return len(self.val_images) > 0

  @property
  def first_step(self) -> int:
    return self.resumed.step

  @property
  def stopped(self) -> bool:
    """A control or callback ended training (before a resume, perhaps)."""
    return ((self.resumed.stopped and not self.first_step)
            or any(c.stopped for c in self.controls))


def train_and_evaluate(config: Config, dataset: ImageDataset,
                       output_dir: str | None = None, *,
                       model: keras.Model | models.Builder | None = None,
                       model_recipe: recipes.Recipe | None = None,
                       strategy: tf.distribute.Strategy | None = None,
                       callbacks: Sequence[keras.callbacks.Callback] = (),
                       verbose: int = 1, restart: bool = False,
                       data_service: str | None = None) -> dict:
  """Trains a model on `dataset` and evaluates it on the test split.

  Seeds Keras, NumPy and Python's `random` with `config.seed`, and with
  `config.deterministic` turns on TensorFlow's op determinism (the run asks
  for both; they stay set); the mixed-precision policy is restored on return.

  With `output_dir`, every epoch ends with a checkpoint there, and so do
  points inside epochs as `config.checkpoint_every` asks; a run started
  again with the same settings resumes at the latest, at its epoch and
  step, and ends as it would have uninterrupted. The final `model.keras`,
  `history.json` and `results.json` are each written atomically, and the
  checkpoints are then removed.

  Args:
    config: the run's settings.
    dataset: uint8 data from `fastcifar.data.sources`.
    output_dir: where outputs and checkpoints go; None keeps nothing.
    model: a user's model to train instead of `config.model`'s: a
      `keras.Model` (it keeps the dtypes it was built with) or a builder,
      `build(num_classes=..., image_shape=...)`, called under the
      strategy's scope and the run's precision policy. Either takes uint8
      images and outputs probabilities (logits with `config.from_logits`).
    model_recipe: the user's model's recipe (its layer rules); None: the
      built-in model's, `recipes.DEFAULT_RECIPE` for a user's model.
    strategy: a `tf.distribute` strategy; `distribute.make_strategy()` when
      None. Under several workers only the chief writes to `output_dir`; the
      others keep their checkpoints in temporary folders they remove.
    callbacks: Keras callbacks, called as `fit` calls them. The state of
      those with `state()` and `resume(state)` (the doctor's `Watch`) is
      kept in the checkpoints, so that a resumed run's decide as the
      uninterrupted run's would.
    verbose: 1 for a progress bar per epoch, 2 for a line per epoch, 0 quiet.
    restart: train anew even if `output_dir` holds a finished or unfinished
      run: everything it wrote (`RUN_OUTPUTS`) is removed when this run
      starts, so a stopped restart resumes like any other run (without
      `restart`).
    data_service: a tf.data service dispatcher, `grpc://HOST:PORT`, to
      produce the training batches; None produces them in this process.

  The per-epoch `val_*` metrics are on `config.validation_examples` held
  out of the training set; then the test set is evaluated once, after
  training. Without a split, `val_*` are on the test set (a curve to look
  at; nothing is decided by it). They are computed after every
  `config.validation_freq`-th epoch (Keras's `validation_freq`) and after
  the last one; `history["val_epochs"]` says after which. With
  `config.epochs == "auto"` training stops as Keras's
  `EarlyStopping(restore_best_weights=True)` says, on the validation loss.

  Returns:
    The results dict that `results.json` holds.

  Raises:
    AlreadyFinished: `output_dir` holds this run finished (same settings)
      and `restart` is off.
    TrainingDiverged: the loss became NaN or infinite.
    UsageError: bad settings, an unwritable `output_dir`, or one that holds
      a run with other settings (finished, or unfinished and not `restart`).
  """
  config.validate()
  start = time.perf_counter()
  strategy = strategy or distribute.make_strategy()
  if output_dir:
    _check_not_finished(output_dir, restart, config, dataset)
  run = _build_run(config, dataset, strategy, start, model, model_recipe)
  strategy = run.strategy  # (a model built beforehand: the default one)
  run.controls = make_controls(config, run.model, verbose)
  run.stateful_callbacks = [c for c in callbacks if callable(
      getattr(c, "state", None)) and callable(getattr(c, "resume", None))]
  try:
    if output_dir:
      _restore(run, output_dir, restart)
    eval_batch_size = distribute.round_up_to_replicas(
        config.evaluation_batch_size, strategy)
    test_data = _eval_data(strategy, dataset.test_images, dataset.test_labels,
                           eval_batch_size)
    val_data = (_eval_data(strategy, run.val_images, run.val_labels,
                           eval_batch_size)
                if run.validation_split else test_data)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose > 0,
        model=run.model, verbose=verbose, epochs=config.epoch_limit,
        steps=run.steps_per_epoch, steps_per_loop=run.steps_per_loop)
    if verbose:
      _print_start(run)
    _train_epochs(run, callback_list, val_data, data_service)
    final = _final_evaluation(run, test_data)
    results = _results(run, final)
    if output_dir:
      _write_outputs(run, results)
    return results
  finally:
    # A worker's own saves only serve the collective save (it resumes from
    # the chief's): they go however the run ends, stopped or failed too.
    if run.save_dir and not run.chief:
      shutil.rmtree(run.save_dir, ignore_errors=True)


def _check_not_finished(output_dir: str, restart: bool, config: Config,
                        dataset: ImageDataset) -> None:
  """Refuses to train again a run that `output_dir` holds finished.

  Raises:
    AlreadyFinished: it holds this run (the same settings) finished.
    UsageError: it holds a finished run with other settings.
  """
  prepare_output_dir(output_dir)
  results_path = os.path.join(output_dir, "results.json")
  if not os.path.exists(results_path) or restart:
    return
  with open(results_path) as f:
    results = json.load(f)
  saved = results.get("config", {})
  if "dataset" in results:
    saved = {**saved, "dataset": results["dataset"]}
  wanted = {**_compared_settings(config), "dataset": dataset.name}
  # A key the finished run did not record (older versions) is not a
  # difference anyone can name.
  differing = [f"{k}={saved[k]} (asked {wanted[k]})" for k in sorted(wanted)
               if k in saved and saved[k] != wanted[k]]
  if differing:
    raise UsageError(
        f"{output_dir} holds a finished run with other settings: "
        f"{', '.join(differing)}; pass --restart to replace it, or choose "
        "another --output_dir")
  raise AlreadyFinished(output_dir, results)


def _compared_settings(config: Config) -> dict:
  """The config's settings that a resumed or repeated run must share."""
  settings = dataclasses.asdict(config)
  for name in _MECHANICS:
    del settings[name]
  return settings


def data_order(dataset: ImageDataset, images) -> dict:
  """What, besides the config (seed, batch, subset, split), fixes the order
  and content of the training batches: a checkpoint stores it, and a resume
  that would change it is refused, naming the setting.

  Args:
    dataset: the run's data.
    images: the examples trained on (`ShardedImages` when streamed).

  Returns:
    JSON-able settings: the dataset's name, classes and image shape, its
    identity (a CRC of the training labels in order: cheap, and it differs
    between sources in practice), the cache (`memory`, or `disk`: streamed,
    whose order differs) and, streamed, the shuffle buffer.
  """
  streamed = isinstance(images, sources.ShardedImages)
  return {"dataset": dataset.name, "num_classes": dataset.num_classes,
          "image_shape": list(dataset.image_shape),
          "train_labels_crc32": zlib.crc32(
              np.ascontiguousarray(dataset.train_labels).tobytes()),
          "num_train_examples": len(images),
          "cache": "disk" if streamed else "memory",
          "shuffle_buffer": images.shuffle_buffer if streamed else None}


def _build_run(config: Config, dataset: ImageDataset,
               strategy: tf.distribute.Strategy, start: float,
               model: keras.Model | models.Builder | None = None,
               model_recipe: recipes.Recipe | None = None) -> _Run:
  """Picks the examples, seeds, and builds the compiled model.

  `model` and `model_recipe`: as for `train_and_evaluate`.

  The validation examples are held out first, so they do not depend on
  `train_examples`; the channel statistics and any layer fitted to data (the
  fast model's whitening) see only the examples trained on.
  """
  device = policy.detect_device()
  precision = policy.resolve_precision(config.precision, device)
  images, labels, held_out = pipeline.split_examples(
      dataset.train_images, dataset.train_labels, config.validation_examples,
      config.train_examples, config.seed)
  note = pipeline.check_batch_size(len(images), config.batch_size)
  if note:  # said before the run starts, quiet or not
    print(f"fastcifar: {note}", flush=True)
  steps_per_epoch = len(images) // config.batch_size
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  prebuilt = isinstance(model, keras.Model)
  if prebuilt:
    strategy = _prebuilt_strategy(model, dataset, strategy)
    precision = model.dtype_policy.name  # what it computes in, not ours
  with policy.precision_scope(precision), strategy.scope():
    if not prebuilt:
      model = _new_model(config, dataset, images, model)
    compile_model(model, config, steps_per_epoch, model_recipe)
    model.optimizer.build(model.trainable_variables)
  return _Run(config=config, dataset=dataset, strategy=strategy, model=model,
              prebuilt=prebuilt,
              images=images, labels=labels,
              # (read into memory when streamed: a small split)
              val_images=np.asarray(dataset.train_images[held_out]),
              val_labels=dataset.train_labels[held_out],
              steps_per_epoch=steps_per_epoch,
              data_order=data_order(dataset, images),
              steps_per_loop=step_loop.resolve(
                  config.steps_per_loop, device, steps_per_epoch,
                  config.batch_size),
              device=device, precision=precision,
              jit_compile=policy.resolve_jit_compile(config.jit_compile,
                                                     device),
              start=start)


def _new_model(config: Config, dataset: ImageDataset,
               images: np.ndarray | sources.ShardedImages,
               builder: models.Builder | None) -> keras.Model:
  """The user's builder's model, or `config.model`'s fitted to `images`."""
  if builder is not None:
    return models.build_user_model(builder, dataset.num_classes,
                                   dataset.image_shape)
  if isinstance(images, sources.ShardedImages):
    # Streamed: the statistics written with the shards (of the whole train
    # split), not a pass over the data; indexing above only picked ids.
    mean, std = images.mean, images.std
  else:
    mean, std = pipeline.channel_stats(images)
  return recipes.build_model(config, dataset.num_classes, mean, std, images)


def _prebuilt_strategy(model: keras.Model, dataset: ImageDataset,
                       strategy: tf.distribute.Strategy
                       ) -> tf.distribute.Strategy:
  """Where a model built beforehand trains: TensorFlow's default strategy.

  Its variables were made outside any strategy's scope, and only the
  default strategy (one device) trains those.

  Raises:
    UsageError: it does not fit the data, or `strategy` has several replicas.
  """
  models.check_fits(model, dataset.num_classes, dataset.image_shape,
                    f"the model {model.name}")
  if strategy.num_replicas_in_sync > 1:
    raise UsageError(
        f"the model {model.name} was built before training, outside the "
        f"strategy's scope, and cannot train on "
        f"{strategy.num_replicas_in_sync} replicas; pass its builder, "
        "build(num_classes, image_shape), instead")
  return tf.distribute.get_strategy()


def _restore(run: _Run, output_dir: str, restart: bool) -> None:
  """Sets up the run's checkpoint and resumes from the latest, if any."""
  if restart and run.chief:
    # The old run's files go now: a stop of this run then resumes it rather
    # than finding the old run "finished", and nothing of the old run is
    # left beside the new one's.
    checkpointing.delete_checkpoints(output_dir)
    for name in RUN_OUTPUTS:
      path = os.path.join(output_dir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      elif os.path.lexists(path):
        os.unlink(path)
  # Every worker saves (saving may need all of them), but only the chief
  # into output_dir; all restore from the chief's checkpoints.
  run.output_dir = output_dir
  run.save_dir = (output_dir if run.chief
                  else tempfile.mkdtemp(prefix="fastcifar-"))
  run.checkpoint = checkpointing.RunCheckpoint(
      run.model, run.save_dir,
      {**_compared_settings(run.config), **run.data_order},
      restore_from=output_dir, controls=run.controls,
      callbacks=run.stateful_callbacks)
  run.resumed = run.checkpoint.restore()
  run.first_epoch, run.history = run.resumed.epoch, run.resumed.history
  run.elapsed_before = (run.history.get("elapsed_seconds") or [0.0])[-1]
  if run.first_step:  # (elapsed_seconds ends with the last whole epoch)
    run.elapsed_before += run.resumed.epoch_seconds


def _eval_data(strategy: tf.distribute.Strategy, images: np.ndarray,
               labels: np.ndarray, batch_size: int):
  """A distributed evaluation dataset over every example once."""
  return distribute.distribute(
      strategy, functools.partial(pipeline.eval_dataset, images, labels,
                                  batch_size), batch_size)


def _print_start(run: _Run) -> None:
  config = run.config
  print(f"fastcifar: {config.model} model, {run.model.count_params():,} "
        f"parameters; {len(run.images):,} training images, batch "
        f"{config.batch_size}; device {run.device}, precision "
        f"{run.precision}, jit_compile {run.jit_compile}"
        f"{' (chosen by auto)' if config.jit_compile == 'auto' else ''}, "
        f"{run.steps_per_loop} step{'s' * (run.steps_per_loop != 1)} per "
        "loop",
        flush=True)
  if run.prebuilt:
    print(f"fastcifar: the model was built before training: it keeps its "
          f"own dtypes ({run.precision}), not the precision fastcifar "
          f"chooses ({policy.resolve_precision(config.precision, run.device)})"
          "; pass a builder to have it chosen",
          flush=True)
  if run.first_epoch == config.epoch_limit or run.stopped:
    of = ("the last before a callback stopped the run" if run.stopped
          else f"of {config.epoch_limit}")
    print(f"fastcifar: {run.checkpoint.directory} holds epoch "
          f"{run.first_epoch} {of}, nothing is left to train; "
          "evaluating and writing the outputs", flush=True)
  elif run.first_step:
    print(f"fastcifar: resuming at epoch {run.first_epoch + 1}, step "
          f"{run.first_step} ({run.first_step} of its {run.steps_per_epoch} "
          f"steps done) from {run.checkpoint.directory}", flush=True)
  elif run.first_epoch:
    print(f"fastcifar: resuming after epoch {run.first_epoch} from "
          f"{run.checkpoint.directory}", flush=True)


def make_controls(config: Config, model: keras.Model,
                  verbose: int = 0) -> list[keras.callbacks.Callback]:
  """The callbacks that steer the run by its validation loss.

  Args:
    config: `epochs="auto"` adds early stopping, `lr_schedule="plateau"`
      a rate lowered when the validation loss stalls.
    model: the model they watch (and whose best weights are kept).
    verbose: let them say what they decided.

  Returns:
    `fastcifar.training.resumable` callbacks, their model set.
  """
  controls = []
  if config.auto_epochs:
    early = resumable.EarlyStopping(config.patience, config.min_delta,
                                   verbose=verbose)
    early.track(model)
    controls.append(early)
  if config.lr_schedule == "plateau":
    controls.append(resumable.ReduceLROnPlateau(
        config.plateau_factor, config.plateau_patience, config.min_lr,
        verbose=verbose))
  for control in controls:
    control.set_model(model)
  return controls


def _train_epochs(run: _Run, callback_list: keras.callbacks.CallbackList,
                  val_data, data_service: str | None) -> None:
  """The epoch loop: train, validate when due, checkpoint, call callbacks.

  Fills `run.history`, as `fit`'s History does, plus `val_epochs`,
  `epoch_seconds` and `elapsed_seconds`. The controls see each epoch's logs
  before the checkpoint, so it holds their decisions; the caller's
  callbacks see them after.
  """
  config, history = run.config, run.history
  train_step = make_train_step(run.model, run.strategy, config,
                               run.dataset.num_classes, run.jit_compile,
                               run.steps_per_epoch)
  eval_step = make_eval_step(run.model, run.strategy, run.dataset.num_classes,
                             run.jit_compile,
                             from_logits=config.from_logits)

  def make_train_data(**shard):
    ds = pipeline.train_dataset(run.images, run.labels, config.batch_size,
                                config.seed, config.epoch_limit,
                                run.first_epoch, first_step=run.first_step,
                                **shard)
    return (pipeline.through_data_service(ds, data_service)
            if data_service else ds)

  iterator = iter(distribute.distribute(run.strategy, make_train_data,
                                        config.batch_size))
  kept = ("nothing was saved" if not run.checkpoint else
          f"the last checkpoint is kept in {run.checkpoint.directory}")

  def val_logs() -> dict[str, float]:
    val = evaluate(eval_step, val_data)
    return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}

  schedule = _checkpoint_schedule(run)
  for control in run.controls:
    control.on_train_begin()
  callback_list.on_train_begin()
  if run.resumed.unseen_epoch_logs:  # saved before they saw that epoch end
    for callback in run.stateful_callbacks:
      callback.on_epoch_end(run.first_epoch - 1,
                            run.resumed.unseen_epoch_logs)
  # A stop asked inside the epoch a checkpoint resumes: it ends there.
  run.model.stop_training = run.resumed.stopped
  run.last_save = time.perf_counter()
  logs = {}
  # A run killed after a callback's stop but before its outputs trains no
  # more.
  last = run.first_epoch if run.stopped else config.epoch_limit
  for epoch in range(run.first_epoch, last):
    callback_list.on_epoch_begin(epoch)
    # A resumed epoch's time counts what it trained before the kill.
    epoch_start = time.perf_counter() - (
        run.resumed.epoch_seconds if epoch == run.first_epoch else 0.0)
    logs = _train_one_epoch(run, train_step, iterator, callback_list, epoch,
                            epoch_start, kept, schedule)
    distribute.sync_on_read(run.strategy, run.model.non_trainable_variables)
    run.epoch_train_seconds.append(time.perf_counter() - epoch_start)
    if (run.model.stop_training or epoch + 1 == config.epoch_limit
        or (epoch + 1) % config.validation_freq == 0):
      logs = {**logs, **val_logs()}
      history.setdefault("val_epochs", []).append(epoch + 1)
    for control in run.controls:
      control.on_epoch_end(epoch, logs)
    for key, value in logs.items():
      history.setdefault(key, []).append(float(value))
    history.setdefault("epoch_seconds", []).append(
        run.epoch_train_seconds[-1])
    history.setdefault("elapsed_seconds", []).append(run.elapsed())
    _save(run, epoch + 1, unseen_epoch_logs=logs)
    callback_list.on_epoch_end(epoch, logs)
    if run.model.stop_training:
      # Asked by a callback after the save: saved again, so that a rerun
      # killed before the outputs stops here too.
      _save(run, epoch + 1, stopped=True)
      break
  epochs_done = len(history["epoch_seconds"])
  if history.get("val_epochs", [0])[-1] != epochs_done:
    # A callback stopped training after an epoch that was not evaluated.
    for key, value in val_logs().items():
      history.setdefault(key, []).append(value)
    history.setdefault("val_epochs", []).append(epochs_done)
    history["elapsed_seconds"][-1] = run.elapsed()
  for control in run.controls:
    control.on_train_end(logs)  # early stopping restores the best weights
  callback_list.on_train_end(logs)


def _save(run: _Run, epochs_done: int, step: int = 0, sums=(0.0, 0.0),
          epoch_seconds: float = 0.0, stopped: bool = False,
          unseen_epoch_logs: dict | None = None) -> None:
  """Checkpoints the run at (epochs_done, step), if it has a checkpoint.

  `unseen_epoch_logs`: the logs of the epoch just ended, which the caller's
  callbacks see after this save (`checkpointing.State`'s).
  """
  if not run.checkpoint:
    return
  run.checkpoint.save(checkpointing.State(
      epoch=epochs_done, step=step, history=run.history,
      sums=tuple(float(x) for x in sums), epoch_seconds=epoch_seconds,
      stopped=stopped or bool(run.model.stop_training),
      unseen_epoch_logs=unseen_epoch_logs and {
          k: float(v) for k, v in unseen_epoch_logs.items()}))
  run.last_save = time.perf_counter()


def _checkpoint_schedule(run: _Run
                         ) -> tuple[int | None, Callable[[], bool] | None]:
  """When a checkpoint falls due inside an epoch.

  Returns:
    `(steps, time_is_up)`: every how many steps, and a call (made at a
    loop's end, on every worker alike) that says whether the interval's
    training time has passed since the last save, on any worker: all then
    save at the same step. (None, None): at the epoch's end only.
  """
  if not run.checkpoint:
    return None, None
  steps, seconds = run.config.checkpoint_interval
  if not seconds:
    return steps, None
  agreed = distribute.any_worker(run.strategy)
  return steps, lambda: agreed(
      time.perf_counter() - run.last_save >= seconds)


def _train_one_epoch(run: _Run, train_step: step_loop.TrainLoop, iterator,
                     callback_list: keras.callbacks.CallbackList, epoch: int,
                     epoch_start: float, kept: str, schedule: tuple
                     ) -> dict[str, float]:
  """One epoch's steps, in loops of `run.steps_per_loop`.

  Python hears from the device once per loop: then it checks the loss,
  and calls the batch callbacks with the running means, as `fit` does with
  `steps_per_execution` (`batch` is a loop's first step at its begin, its
  last at its end), and checkpoints the run when one is due
  (`config.checkpoint_every`; loops end where a step count falls due). A
  resumed epoch starts at its step, from the sums it had there. `schedule`:
  `_checkpoint_schedule`'s.

  Returns:
    The epoch's `loss` and `accuracy` logs.
  """
  every_steps, time_is_up = schedule
  first_step = run.first_step if epoch == run.first_epoch else 0
  sums = (tf.constant(run.resumed.sums, tf.float32) if first_step
          else step_loop.zero_sums())
  logs = {}
  for first, count in step_loop.loops(run.steps_per_epoch,
                                      run.steps_per_loop, first_step,
                                      every_steps):
    callback_list.on_train_batch_begin(first)
    sums, first_nonfinite = train_step(iterator, count, sums)
    loss_sum, correct = (float(x) for x in sums.numpy())  # the loop's read
    if int(first_nonfinite) >= 0:
      raise TrainingDiverged(
          f"the loss became {loss_sum} at epoch {epoch + 1}, step "
          f"{first + int(first_nonfinite) + 1}; {kept}; lower "
          "--learning_rate (or check the data) and rerun")
    done = first + count
    seen = done * run.config.batch_size
    logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
    callback_list.on_train_batch_end(done - 1, logs)
    if done < run.steps_per_epoch and (
        (every_steps and done % every_steps == 0)
        or (time_is_up and time_is_up())):
      _save(run, epoch, done, (loss_sum, correct),
            time.perf_counter() - epoch_start)
  return logs


def _final_evaluation(run: _Run, test_data) -> dict[str, float]:
  """The test set's numbers for the model kept, each evaluated once.

  Returns:
    `loss` and `accuracy` (with TTA if asked) and `accuracy_without_tta`.
    Without a validation split the last `val_*` already are the test set's.
  """
  history = run.history
  if run.validation_split:
    final = evaluate(make_eval_step(run.model, run.strategy,
                                    run.dataset.num_classes, run.jit_compile,
                                    from_logits=run.config.from_logits),
                     test_data)
  else:
    final = {"accuracy": history["val_accuracy"][-1],
             "loss": history["val_loss"][-1]}
  final["accuracy_without_tta"] = final["accuracy"]
  if run.config.tta:
    final.update(evaluate(make_eval_step(
        run.model, run.strategy, run.dataset.num_classes, run.jit_compile,
        tta=True, from_logits=run.config.from_logits), test_data))
  return final


def _results(run: _Run, final: dict[str, float]) -> dict:
  """The results dict `results.json` holds.

  Each number's key says its set: `test_*` the test set, `validation_*` the
  held-out split (present only with one).
  """
  config, history, model = run.config, run.history, run.model
  accuracies = history["val_accuracy"]
  times = [history["elapsed_seconds"][e - 1] for e in history["val_epochs"]]
  if run.validation_split:
    kept = _kept_evaluation(run)
    curve = {"validation_accuracy": history["val_accuracy"][kept],
             "validation_loss": history["val_loss"][kept],
             "best_validation_accuracy": max(accuracies),
             "seconds_to_validation_accuracy": seconds_to_accuracy(
                 accuracies, times)}
  else:
    if config.tta:
      accuracies = accuracies + [final["accuracy"]]
      times = times + [run.elapsed()]
    curve = {"best_test_accuracy": max(accuracies),
             "seconds_to_accuracy": seconds_to_accuracy(accuracies, times)}
  # This process's epochs after its first (which compiles the step); a run
  # resumed with nothing left to train has only the recorded ones.
  steady = (run.epoch_train_seconds[1:] or run.epoch_train_seconds
            or history["epoch_seconds"][1:] or history["epoch_seconds"])
  return {
      "test_accuracy": final["accuracy"],
      "test_loss": final["loss"],
      "test_accuracy_without_tta": final["accuracy_without_tta"],
      "tta": config.tta,
      **curve,
      "num_validation_examples": len(run.val_images),
      "val_metrics_from": "validation" if run.validation_split else "test",
      **_stopping_results(run),
      "epochs": len(history["epoch_seconds"]),
      "train_seconds": sum(history["epoch_seconds"]),
      "total_seconds": time.perf_counter() - run.start,
      "resumed_after_epoch": run.first_epoch,
      "resumed_at_step": run.first_step,
      # This process's checkpoints: how many, and the time they took.
      "checkpoints_saved": len(run.checkpoint.save_seconds
                               if run.checkpoint else ()),
      "checkpoint_seconds": sum(run.checkpoint.save_seconds
                                if run.checkpoint else ()),
      "images_per_second": run.steps_per_epoch * config.batch_size
                           * len(steady) / sum(steady),
      "precision": run.precision,
      "jit_compile": run.jit_compile,
      "steps_per_loop": run.steps_per_loop,
      "model": config.model,
      "dataset": run.dataset.name,
      "num_train_examples": len(run.images),
      "num_test_examples": len(run.dataset.test_images),
      "num_parameters": model.count_params(),
      "device": run.device,
      "onednn": policy.onednn_in_use(),
      "num_replicas": run.strategy.num_replicas_in_sync,
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      # The data too, so that evaluate, export and the doctor need no data
      # flag repeated (run.json beside model.keras holds the same).
      "config": {**dataclasses.asdict(config),
                 "data": sources.data_record(run.dataset)},
  }


def _kept_evaluation(run: _Run) -> int:
  """Which of the run's evaluations belongs to the weights it kept."""
  for control in run.controls:
    if isinstance(control, resumable.EarlyStopping):
      return run.history["val_epochs"].index(control.best_epoch + 1)
  return -1


def _stopping_results(run: _Run) -> dict:
  """best_epoch and stopped_epoch (1-based) for an --epochs=auto run."""
  for control in run.controls:
    if isinstance(control, resumable.EarlyStopping):
      return {"best_epoch": control.best_epoch + 1,
              "stopped_epoch": len(run.history["epoch_seconds"]),
              "stopped_early": control.stopped}
  return {}


def _write_outputs(run: _Run, results: dict) -> None:
  """The chief writes model, history and results; checkpoints go."""
  if run.chief:
    outputs.save_model(run.model, os.path.join(run.output_dir, "model.keras"))
    outputs.write_json(os.path.join(run.output_dir, outputs.RUN_RECORD),
                       results["config"])
    outputs.write_json(os.path.join(run.output_dir, "history.json"),
                       _history_with_sources(run, results))
    # Last: results.json marks the run done.
    outputs.write_json(os.path.join(run.output_dir, "results.json"), results)
  checkpointing.delete_checkpoints(run.save_dir)


def _history_with_sources(run: _Run, results: dict) -> dict:
  """The history, saying which set `val_*` is and with the test's numbers.

  history.json holds only lists, as `fit`'s History does.
  """
  history = {**run.history,
             "num_validation_examples": [results["num_validation_examples"]]}
  if run.validation_split:
    history["test_accuracy"] = [results["test_accuracy"]]
    history["test_loss"] = [results["test_loss"]]
  return history


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
