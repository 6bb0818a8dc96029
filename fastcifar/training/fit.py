"""`fit`: fastcifar's whole training path for any Keras classifier.

    import fastcifar

    def build(num_classes, image_shape):
      inputs = keras.Input(image_shape, dtype="uint8")
      ...
      return keras.Model(inputs, outputs)

    data = fastcifar.load_data("cifar10")
    results = fastcifar.fit(build, data, epochs=10, output_dir="runs/mine")

What `python -m fastcifar.train` does, for your model: its step loop, the
precision and XLA choices, checkpoints and resume, SIGTERM (under the
command), `tf.distribute` strategies, the validation split,
`epochs="auto"`, the doctor's watch and the outputs (model.keras, run.json,
history.json, results.json). The settings are the command's flags, by the
same names.

A model's recipe (its default settings, optimizer, layer rules) is a
`fastcifar.models.recipes.Recipe`, given as `fit(..., recipe=...)` or as the
builder's (or model's) `recipe` attribute; without one, the defaults are
the seed model's (Adam with cosine decay, 20 epochs, batch 128).
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from fastcifar import models
from fastcifar.data import sources
from fastcifar.models import recipes
from fastcifar.training import distribute, profiling, trainer


def fit(model: keras.Model | models.Builder | str,
        data: sources.ImageDataset, *,
        recipe: recipes.Recipe | None = None,
        output_dir: str | None = None,
        strategy: str | tf.distribute.Strategy = "auto",
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 1, restart: bool = False,
        data_service: str | None = None, preflight: bool = True,
        tensorboard: bool = True, **settings) -> dict:
  """Trains `model` on `data` as `python -m fastcifar.train` would.

  The model takes uint8 `(batch, H, W, 3)` images (scaling them itself, e.g.
  with a `Rescaling` or fastcifar's `Standardize` layer) and outputs class
  probabilities, or logits with `from_logits=True`. It is compiled with the
  recipe's optimizer and a one-hot cross-entropy (its own compile is
  replaced).

  Args:
    model: a builder, `build(num_classes=..., image_shape=...)` returning a
      `keras.Model`, called under the strategy's scope and the precision
      fastcifar picks (`precision="auto"`); or a `keras.Model` built
      beforehand, which keeps its own dtypes (the run says so) and trains on
      one device; or a name the command takes: "seed", "fast",
      "package.module:function".
    data: an `ImageDataset` (`fastcifar.load_data`); what `load_data` read
      is recorded with the run, so `fastcifar.evaluate` needs no data flag.
    recipe: the model's recipe; None: the builder's or model's `recipe`
      attribute, else the built-in model's, else `recipes.DEFAULT_RECIPE`.
    output_dir: where model.keras, run.json, history.json, results.json and
      the per-epoch checkpoints go; a run started again there resumes.
      None keeps nothing.
    strategy: a `tf.distribute.Strategy`, or the command's --strategy name.
    callbacks: Keras callbacks, called as `model.fit` calls them.
    verbose: 1 a progress bar per epoch, 2 a line per epoch, 0 quiet.
    restart: train anew even if `output_dir` holds a run.
    data_service: `grpc://HOST:PORT` of a tf.data service dispatcher.
    preflight: the doctor checks model and data before the first step and
      stops a run that does not learn.
    tensorboard: write TensorBoard logs to OUTPUT_DIR/tensorboard.
    **settings: the command's other flags by name (`epochs`, `batch_size`,
      `learning_rate`, `validation_examples`, `precision`, `from_logits`,
      ...: the fields of `fastcifar.training.config.Config`); unset ones
      take the recipe's values.

  Returns:
    What results.json holds (test accuracy, history summary, timing, the
    config with its data record). A finished run in `output_dir` (without
    `restart`) trains no more: its results are returned.

  Raises:
    UsageError: bad settings, a model that does not fit the data, an
      unwritable `output_dir`.
    trainer.TrainingDiverged: the loss became NaN or infinite.
  """
  builder, name, model_recipe = resolve_model(model, recipe)
  config = recipes.recipe(name, model_recipe, **settings)
  config.validate()
  if isinstance(strategy, str):
    strategy = distribute.make_strategy(strategy)
  all_callbacks = make_callbacks(
      data, output_dir, config.seed, distribute.is_chief(strategy),
      preflight=preflight, tensorboard=tensorboard,
      early_stopping=config.auto_epochs,
      hint="fit(..., preflight=False) skips this check") + list(callbacks)
  try:
    return trainer.train_and_evaluate(
        config, data, output_dir, model=builder, model_recipe=model_recipe,
        strategy=strategy, callbacks=all_callbacks, verbose=verbose,
        restart=restart, data_service=data_service)
  except trainer.AlreadyFinished as e:
    if verbose:
      print(f"fastcifar: {e}", flush=True)
    return e.results


def resolve_model(model: keras.Model | models.Builder | str,
                  recipe: recipes.Recipe | None = None
                  ) -> tuple[keras.Model | models.Builder | None, str,
                             recipes.Recipe | None]:
  """What `fit` and the command train, by what name, with which recipe.

  Args:
    model: as `fit` takes it.
    recipe: the recipe given; None: the model's own (see `fit`).

  Returns:
    `(model or builder, name, recipe)`: model None and recipe None for a
    built-in model, which `trainer.train_and_evaluate` builds itself.

  Raises:
    UsageError: a name that is neither built in nor importable.
    TypeError: `model` is none of the above.
  """
  if isinstance(model, str):
    if model in models.MODELS and recipe is None:
      return None, model, None
    builder = models.load_builder(model)
    return builder, model, recipe or _own_recipe(builder)
  if isinstance(model, keras.Model):
    return model, model.name, recipe or _own_recipe(model)
  if callable(model):
    return (model, models.builder_name(model),
            recipe or _own_recipe(model))
  raise TypeError(f"fit() trains a keras.Model, a builder "
                  f"build(num_classes, image_shape) or a model's name, not "
                  f"{type(model).__name__}")


def _own_recipe(model: keras.Model | models.Builder) -> recipes.Recipe:
  """The `recipe` attribute of a builder or model, else the default."""
  own = getattr(model, "recipe", None)
  if own is not None and not isinstance(own, recipes.Recipe):
    raise TypeError(f"the recipe attribute of {models.builder_name(model)} "
                    f"is a {type(own).__name__}, not a "
                    "fastcifar.models.recipes.Recipe")
  return own or recipes.DEFAULT_RECIPE


def make_callbacks(dataset: sources.ImageDataset, output_dir: str | None,
                   seed: int, chief: bool, *, preflight: bool = True,
                   tensorboard: bool = True, early_stopping: bool = False,
                   profile_steps: tuple[int, int] | None = None,
                   hint: str = "--nopreflight skips this check"
                   ) -> list[keras.callbacks.Callback]:
  """The doctor's Watch and (on the chief) TensorBoard and a profile.

  Args:
    dataset: the Watch checks a seeded random batch of its training images.
    output_dir: TensorBoard writes to OUTPUT_DIR/tensorboard (None: none).
    seed: picks the batch.
    chief: only the chief writes logs.
    preflight: add the Watch.
    tensorboard: add TensorBoard.
    early_stopping: the run stops when the validation loss stalls
      (--epochs=auto): the Watch's too-few-epochs then asks for a higher
      limit (see `doctor.Watch`).
    profile_steps: `(first, last)` training steps to profile into
      OUTPUT_DIR/tensorboard/train (`profiling.ProfileSteps`); None: none.
    hint: how to skip the Watch, said when it stops a run.

  Returns:
    The callbacks.
  """
  from fastcifar import doctor  # pylint: disable=g-import-not-at-top
  callbacks = []
  if preflight:
    # A random batch: the arrays may be sorted by class; the pipeline shuffles.
    pick = np.random.default_rng(seed).choice(
        len(dataset.train_images), min(256, len(dataset.train_images)),
        replace=False)
    callbacks.append(doctor.Watch(
        # np.asarray: streamed images are read here (256 of them).
        np.asarray(dataset.train_images[pick]),
        dataset.train_labels[pick],
        one_hot_on_device=True, stop=True, early_stopping=early_stopping,
        hint=hint))
  log_dir = output_dir and os.path.join(output_dir, "tensorboard")
  if log_dir and chief and tensorboard:
    callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir,
                                                 profile_batch=0))
  if log_dir and chief and profile_steps:
    callbacks.append(profiling.ProfileSteps(os.path.join(log_dir, "train"),
                                            *profile_steps))
  return callbacks
