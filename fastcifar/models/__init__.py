"""The Keras Sequential models: each takes uint8 images, scales them itself.

Scaling inside the model means the host ships uint8 (a quarter of float32's
bytes), the cast runs on the device inside the compiled step, and a saved
`.keras` model predicts on raw pixels: nobody can feed it 0-255 by mistake.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, Sequence
import warnings

import keras
from keras import layers, ops
import numpy as np

from fastcifar import layers as fast_layers
from fastcifar.errors import UsageError
from fastcifar.data.sources import CIFAR_SHAPE
# Standardize: in fastcifar.layers; models.Standardize as before.
from fastcifar.layers import Standardize

MODELS = ("seed", "fast")
# The smallest image side each model takes: the seed CNN's two unpadded
# convs and two pools, the fast model's 2x2 whitening and three pools, must
# leave at least one pixel.
MIN_IMAGE_SIDE = {"seed": 10, "fast": 9}
# The fast model's whitening is fitted to this many images at 32x32, and to
# as many pixels' worth (fewer images) when they are larger.
WHITENING_IMAGES = 5000


def seed_cnn_layers(num_classes: int,
                    dropout: type[layers.Dropout] = fast_layers.Dropout
                    ) -> list[layers.Layer]:
  """The textbook Keras CIFAR-10 CNN, layer for layer.

  Args:
    num_classes: width of the softmax output.
    dropout: the class of the three dropout layers: by default Keras's
      `Dropout` computed in fewer passes (`fastcifar.layers.Dropout`); the
      recipe, run verbatim as the baseline, passes `keras.layers.Dropout`.

  Returns:
    The layers; 1,250,858 parameters at 10 classes and 32x32 images (the
    dense layer takes the flattened feature map, so it grows with the image:
    6,493,738 at 64x64). The softmax layer runs in float32 under any
    mixed-precision policy, so outputs are float32.
  """
  return [
      layers.Conv2D(32, 3, padding="same", activation="relu"),
      layers.Conv2D(32, 3, activation="relu"),
      layers.MaxPooling2D(2),
      dropout(0.25),
      layers.Conv2D(64, 3, padding="same", activation="relu"),
      layers.Conv2D(64, 3, activation="relu"),
      layers.MaxPooling2D(2),
      dropout(0.25),
      layers.Flatten(),
      layers.Dense(512, activation="relu"),
      dropout(0.5),
      layers.Dense(num_classes, activation="softmax", dtype="float32"),
  ]


def fast_cnn_layers(num_classes: int, seed: int = 0,
                    widths: Sequence[int] = (64, 256, 256)
                    ) -> list[layers.Layer]:
  """airbench94's network (Keller Jordan), as a Keras layer stack.

  A fixed 2x2 patch-whitening conv and GELU, then three groups of (conv,
  max-pool, batch norm, GELU, conv, batch norm, GELU), a global max-pool and a
  bias-free linear layer whose outputs are scaled by 1/9 before the softmax.
  The global pool takes maps of any size, so the parameters do not depend on
  the image size.

  Args:
    num_classes: width of the softmax output.
    seed: seeds the conv initializers.
    widths: channels of the three groups.

  Returns:
    The layers; 1,973,944 parameters at 10 classes and the default widths,
    1,971,352 of them trained (airbench94's count).
    `PatchWhitening` must be adapted to the training images (`build_model`
    does so). The softmax runs in float32, so outputs are float32.
  """
  stack = [fast_layers.PatchWhitening(2), fast_layers.GELU()]
  for group, width in enumerate(widths):
    stack += [
        fast_layers.Conv3x3(width, use_bias=False,
                            kernel_initializer=fast_layers.PartialIdentity(
                                seed + 2 * group)),
        layers.MaxPooling2D(2),
        fast_layers.BatchNorm(),
        fast_layers.GELU(),
        fast_layers.Conv3x3(width, use_bias=False,
                            kernel_initializer=fast_layers.PartialIdentity(
                                seed + 2 * group + 1)),
        fast_layers.BatchNorm(),
        fast_layers.GELU(),
    ]
  return stack + [
      layers.GlobalMaxPooling2D(),
      # PyTorch's default init, +-1/sqrt(fan_in), as airbench trains it.
      layers.Dense(num_classes, use_bias=False,
                   kernel_initializer=keras.initializers.VarianceScaling(
                       1 / 3, "fan_in", "uniform", seed=seed)),
      # A small fixed scale keeps the logits tame at airbench's learning rate.
      layers.Rescaling(1 / 9),
      layers.Activation("softmax", dtype="float32"),
  ]


def build_model(name: str, num_classes: int, mean: Sequence[float],
                std: Sequence[float], train_images: np.ndarray | None = None,
                seed: int = 0, image_shape: Sequence[int] | None = None
                ) -> keras.Sequential:
  """Builds a model that takes uint8 `(batch, H, W, 3)` images.

  Layers take their dtype from the global mixed-precision policy in force when
  this is called (see `fastcifar.training.policy.precision_scope`).

  Args:
    name: one of `MODELS`.
    num_classes: number of output classes.
    mean, std: per-channel statistics of the training images, as fractions of
      255, for the `Standardize` layer.
    train_images: uint8 training images; the fast model's whitening layer is
      fitted to a seeded random `WHITENING_IMAGES` of them (airbench takes
      the first 5,000 of CIFAR's mixed order; an image folder loads sorted
      by class), fewer when larger than 32x32 (as many pixels' worth).
      Required for "fast".
    seed: seeds the fast model's initializers and the whitening images.
    image_shape: `(H, W, C)` of the inputs; None: that of `train_images`,
      else CIFAR's 32x32x3.

  Returns:
    An uncompiled `keras.Sequential` whose outputs are float32 probabilities.

  Raises:
    UsageError: the images are too small for the model.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
  if image_shape is None:
    image_shape = (CIFAR_SHAPE if train_images is None
                   else train_images.shape[1:])
  image_shape = tuple(int(s) for s in image_shape)
  if min(image_shape[:2]) < MIN_IMAGE_SIDE[name]:
    raise UsageError(
        f"the {name} model needs images of at least {MIN_IMAGE_SIDE[name]}x"
        f"{MIN_IMAGE_SIDE[name]} pixels, these are {image_shape[0]}x"
        f"{image_shape[1]}; pass a larger --image_size")
  standardize = Standardize(mean, std)
  inputs = [keras.Input(image_shape, dtype="uint8"), standardize]
  if name == "seed":
    return keras.Sequential([*inputs, *seed_cnn_layers(num_classes)],
                            name="seed_cnn")
  if train_images is None:
    raise ValueError("the fast model needs train_images for its whitening")
  stack = fast_cnn_layers(num_classes, seed)
  model = keras.Sequential([*inputs, *stack], name="fast_cnn")
  count = max(1, WHITENING_IMAGES * 32 * 32 // (image_shape[0]
                                               * image_shape[1]))
  pick = np.sort(np.random.default_rng(seed).choice(
      len(train_images), min(count, len(train_images)), replace=False))
  # np.asarray: streamed images (`sources.ShardedImages`) are read here.
  stack[0].adapt(ops.convert_to_numpy(
      ops.cast(standardize(np.asarray(train_images[pick])), "float32")))
  return model


def load_saved(path: str, compile: bool = True) -> keras.Model:  # pylint: disable=redefined-builtin
  """Loads a `.keras` file, fastcifar's layers included.

  Args:
    path: the file `model.save` (or `fastcifar.train`) wrote.
    compile: restore the loss, metrics and optimizer too.

  Returns:
    The model.

  Raises:
    UsageError: the file is missing or not a Keras model.
  """
  if not os.path.isfile(path):
    raise UsageError(f"--model {path} does not exist; give a .keras file "
                     "saved by model.save (fastcifar.train writes "
                     "OUTPUT_DIR/model.keras)")
  try:
    with warnings.catch_warnings():  # an unbuilt optimizer's state: harmless
      warnings.filterwarnings("ignore", "Skipping variable loading")
      return keras.saving.load_model(path, compile=compile)
  except (ValueError, OSError, TypeError) as e:
    raise UsageError(f"--model {path} is not a loadable .keras model "
                     f"({e})") from e


# What builds a user's model: `build(num_classes=..., image_shape=...)`.
Builder = Callable[..., keras.Model]


def is_builder_spec(name: str) -> bool:
  """Whether `name` is a `package.module:function` (not a built-in model)."""
  module, _, function = name.partition(":")
  return bool(module and function)


def load_builder(spec: str) -> Builder:
  """Imports the function `package.module:function` names.

  The module is imported as `import` would: from the current directory or
  `PYTHONPATH`.

  Args:
    spec: `package.module:function`.

  Returns:
    The function.

  Raises:
    UsageError: the module cannot be imported or has no such function.
  """
  module_name, _, function = spec.partition(":")
  if not is_builder_spec(spec):
    raise UsageError(f"--model={spec} is neither one of {', '.join(MODELS)} "
                     "nor package.module:function")
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except
    # Any error in the user's module, not only ImportError, ends here.
    raise UsageError(
        f"--model={spec}: cannot import {module_name} ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); run from the folder "
        "that holds it, or add that folder to PYTHONPATH") from e
  builder = getattr(module, function, None)
  if not callable(builder):
    raise UsageError(f"--model={spec}: {module_name} has no function "
                     f"{function}; name a function that returns a keras.Model")
  return builder


def build_user_model(builder: Builder, num_classes: int,
                     image_shape: Sequence[int]) -> keras.Model:
  """Calls a user's builder by keyword and checks what it returns.

  Args:
    builder: `build(num_classes=..., image_shape=...)`.
    num_classes: the width its output must have.
    image_shape: `(H, W, C)` of the uint8 images it will take.

  Returns:
    The model (uncompiled or not: the trainer compiles it).

  Raises:
    UsageError: the builder returned something other than a `keras.Model`,
      or one that does not fit the data (`check_fits`).
  """
  name = builder_name(builder)
  model = builder(num_classes=num_classes,
                  image_shape=tuple(int(s) for s in image_shape))
  if not isinstance(model, keras.Model):
    raise UsageError(f"{name} returned {type(model).__name__}, not a "
                     "keras.Model; return the model it builds")
  check_fits(model, num_classes, image_shape, name)
  return model


def builder_name(builder: Builder) -> str:
  """`module:function` of a builder, as `--model` names it."""
  return (f"{getattr(builder, '__module__', '?')}:"
          f"{getattr(builder, '__qualname__', type(builder).__name__)}")


def check_fits(model: keras.Model, num_classes: int,
               image_shape: Sequence[int], name: str) -> None:
  """UsageError if `model`'s input or output does not fit the data.

  A subclassed model whose shapes are known only once called passes.
  """
  try:
    inputs, outputs = model.input_shape, model.output_shape
  except (AttributeError, ValueError):
    return
  if not (isinstance(inputs, tuple) and isinstance(outputs, tuple)):
    return  # several inputs or outputs: the first step says more
  wanted = tuple(int(s) for s in image_shape)
  if any(m is not None and m != w for m, w in zip(inputs[1:], wanted)) or (
      len(inputs) != len(wanted) + 1):
    raise UsageError(
        f"{name} takes images of shape {inputs[1:]}, the data's are "
        f"{wanted}; build it for image_shape (or pass --image_size)")
  if outputs[-1] is not None and outputs[-1] != num_classes:
    raise UsageError(f"{name} has {outputs[-1]} outputs but the data has "
                     f"{num_classes} classes; build it for num_classes")
