"""Each model's recipe: its default settings, its optimizer, its layer rules.

The training loop knows no model by name: it trains the model and optimizer
that `build_model` and `make_optimizer` hand it. Adding a model means adding
its `Recipe` here and its layers to `fastcifar.models`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from fastcifar import layers, models, optimizers
from fastcifar.config import Config
from fastcifar.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one model trains unless the user says otherwise.

  Attributes:
    defaults: the `Config` fields whose values differ from `Config`'s.
    make_optimizer: `(config, steps_per_epoch) -> optimizer` for the run.
  """

  defaults: Mapping[str, Any]
  make_optimizer: Callable[[Config, int], keras.optimizers.Optimizer]


def _adam_with_cosine_decay(config: Config,
                            steps_per_epoch: int) -> keras.optimizers.Optimizer:
  """Adam with the learning rate decayed to 0 along a cosine over the run."""
  schedule = keras.optimizers.schedules.CosineDecay(
      config.learning_rate, decay_steps=config.epochs * steps_per_epoch)
  return keras.optimizers.Adam(schedule)


def _airbench(config: Config,
              steps_per_epoch: int) -> keras.optimizers.Optimizer:
  """airbench94's Nesterov SGD with warm-up, linear decay and lookahead.

  The whitening layer's bias trains for the first 3 epochs only, as there.
  """
  return optimizers.airbench_optimizer(
      config.learning_rate, config.batch_size,
      config.epochs * steps_per_epoch, lookahead=config.lookahead,
      freeze_after={layers.WHITENING_BIAS: 3 * steps_per_epoch})


RECIPES: Mapping[str, Recipe] = {
    # The textbook Keras CNN: Config's defaults.
    "seed": Recipe(defaults={}, make_optimizer=_adam_with_cosine_decay),
    # airbench94's hyperparameters (its learning rate is per 1,024 examples,
    # for its optimizer); 10 epochs where airbench94 takes 9.9; the test set
    # evaluated only after the last epoch, since on a 2-core CPU each
    # evaluation costs about 8% of an epoch and only the final accuracy counts.
    "fast": Recipe(
        defaults=dict(epochs=10, batch_size=1024, learning_rate=11.5,
                      alternating_flip=True, label_smoothing=0.2, tta=True,
                      validation_freq=10),
        make_optimizer=_airbench),
}
assert set(RECIPES) == set(models.MODELS), "every model needs a recipe"


def _recipe_of(model: str) -> Recipe:
  if model not in RECIPES:
    raise UsageError(f"--model={model} is unknown; it must be one of "
                     f"{', '.join(models.MODELS)}")
  return RECIPES[model]


def recipe(model: str = "seed", **settings) -> Config:
  """The `Config` of `model`'s recipe, with `settings` (None: the default).

  Args:
    model: one of `models.MODELS`.
    **settings: `Config` fields; those None take the recipe's value.

  Returns:
    The config (not yet validated).
  """
  chosen = {k: v for k, v in settings.items() if v is not None}
  return Config(model=model, **{**_recipe_of(model).defaults, **chosen})


def make_optimizer(config: Config,
                   steps_per_epoch: int) -> keras.optimizers.Optimizer:
  """The optimizer `config.model`'s recipe trains with, for the whole run."""
  return _recipe_of(config.model).make_optimizer(config, steps_per_epoch)


def build_model(config: Config, num_classes: int, mean: Sequence[float],
                std: Sequence[float], train_images: np.ndarray
                ) -> keras.Sequential:
  """`config.model`, uncompiled, scaled by the training images' statistics.

  Args:
    config: names the model and seeds its initializers.
    num_classes: width of the output.
    mean, std: per-channel statistics of `train_images`, fractions of 255.
    train_images: the examples trained on (never validation or test ones):
      a model may fit a layer to them (the fast model's whitening).
  """
  return models.build_model(config.model, num_classes, mean, std,
                            train_images=train_images, seed=config.seed)
