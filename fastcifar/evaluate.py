"""Evaluates a saved model: `python -m fastcifar.evaluate --model=PATH`.

    python -m fastcifar.evaluate --model=runs/x/model.keras --data_dir=DATA

Prints the overall and per-class accuracy on the test split and writes the
confusion matrix as a PNG (beside the model unless `--output` says where).
A model written by `fastcifar.train` (or `fastcifar.fit`) is evaluated on the
data it was trained on, as run.json beside it records (dataset, data dir,
image size, resize): no data flag needs repeating, and one that contradicts
the record is refused.
Bad input ends with one line naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import os

from absl import flags
import numpy as np

from fastcifar import models
from fastcifar.cli import common as cli
from fastcifar.training import evaluation, outputs
from fastcifar.errors import UsageError

_MODEL = flags.DEFINE_string("model", None, "The saved .keras model.")
_DATA = cli.data_flags()
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"],
                           "The split to evaluate on.")
_PIXELS = flags.DEFINE_enum(
    "pixels", "auto", ["auto", "uint8", "float255", "float01"],
    "How the model takes images: uint8 0-255 (fastcifar's models), float "
    "0-255, or float 0-1 (a model trained on x / 255). auto: uint8 for a "
    "model with an integer input, float 0-255 for a float input with a "
    "scaling layer inside, float 0-1 otherwise.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 500,
                                   "Images per forward pass.")
_TTA = flags.DEFINE_boolean(
    "tta", False, "Test-time augmentation: average the outputs over the "
    "image, its mirror and one-pixel shifts, as `fastcifar.train "
    "--model=fast` reports its test accuracy.")
_OUTPUT = flags.DEFINE_string(
    "output", None,
    "The confusion-matrix PNG. Default: confusion_matrix.png beside --model.")
_SEED = flags.DEFINE_integer("seed", 0, "The seed of --dataset=synthetic.")


def _output_width(model) -> int | None:
  try:
    return int(model.outputs[0].shape[-1])
  except (AttributeError, IndexError, TypeError, ValueError):
    return None  # a subclassed model: its outputs are known only when run


def resolve_pixels(model, pixels: str) -> str:
  """Turns `auto` into how this model wants its pixels (see --pixels)."""
  if pixels != "auto":
    return pixels
  try:
    dtype = np.dtype(model.inputs[0].dtype)
  except (AttributeError, IndexError, TypeError):
    return "uint8"  # a subclassed model: pixels as stored
  if np.issubdtype(dtype, np.integer):
    return "uint8"
  scaling = {"Rescaling", "Normalization", "Standardize"}
  inside = {type(layer).__name__ for layer in model.layers}
  return "float255" if scaling & inside else "float01"


def _as_pixels(images: np.ndarray, pixels: str) -> np.ndarray:
  if pixels == "float255":
    return images.astype(np.float32)
  if pixels == "float01":
    return images.astype(np.float32) / 255
  return images


def main(argv: list[str]) -> int:
  """Evaluates as the flags say; UsageError for bad input (see `cli.run`)."""
  del argv
  if not _MODEL.value:
    raise UsageError("--model is required: the .keras file to evaluate")
  if _BATCH_SIZE.value < 1:
    raise UsageError("--batch_size must be at least 1")
  output = _OUTPUT.value or os.path.join(
      os.path.dirname(os.path.abspath(_MODEL.value)), "confusion_matrix.png")
  record = outputs.read_run_record(_MODEL.value)
  model = models.load_saved(_MODEL.value, compile=False)
  # Without --image_size, the images come at the size the model takes.
  dataset = cli.load_data(_DATA, _SEED.value, model.input_shape,
                          record and record["data"])
  images, labels = ((dataset.test_images, dataset.test_labels)
                    if _SPLIT.value == "test" else
                    (dataset.train_images, dataset.train_labels))
  width = _output_width(model)
  if width is not None and width != dataset.num_classes:
    raise UsageError(f"the model has {width} outputs but {dataset.name} "
                     f"has {dataset.num_classes} classes; pick the "
                     "--dataset it was trained on")
  pixels = resolve_pixels(model, _PIXELS.value)
  predictions = evaluation.predict_classes(
      model, _as_pixels(images, pixels), _BATCH_SIZE.value, tta=_TTA.value)
  confusion = evaluation.confusion_matrix(labels, predictions,
                                          dataset.num_classes)
  evaluation.plot_confusion_matrix(
      confusion, dataset.class_names, output,
      title=f"{os.path.basename(_MODEL.value)} on {dataset.name} "
            f"{_SPLIT.value}")
  print(f"fastcifar.evaluate: {_MODEL.value} on the {dataset.name} "
        f"{_SPLIT.value} split, pixels fed as {pixels}"
        f"{', test-time augmentation' if _TTA.value else ''}"
        + (f", {dataset.image_shape[0]}x{dataset.image_shape[1]} resized by "
           f"{record['data']['resize']} as run.json records" if record
           and record["data"].get("resize") else ""))
  print(evaluation.format_report(confusion, dataset.class_names))
  print(f"confusion matrix: {output}")
  return 0


def run() -> None:
  """Console-script entry point."""
  cli.run(main, "fastcifar.evaluate")


if __name__ == "__main__":
  run()
