"""Checks a saved model against its data: `python -m fastcifar.doctor`.

    python -m fastcifar.doctor --model=runs/x/model.keras --data_dir=DATA

Loads the `.keras` model (with its compiled loss and optimizer) and a seeded
random batch of the data, fed the way `--pixels` and `--labels` say your
training feeds them, and prints what `fastcifar.doctor.check` finds. A model
written by `fastcifar.train` is checked on the data run.json beside it
records, with no data flag repeated (one that contradicts it is refused). Exit
status: 0 when nothing is wrong, 1 when an error was found, 2 on bad input.
"""

from __future__ import annotations


from absl import flags
import numpy as np

# fastcifar.models also registers Standardize: fastcifar's models load.
from fastcifar import doctor, models
from fastcifar.cli import common as cli
from fastcifar.training import outputs
from fastcifar.errors import UsageError

_MODEL = flags.DEFINE_string("model", None, "The saved .keras model to check.")
_DATA = cli.data_flags()
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "test"],
                           "The split the batch is drawn from.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128,
                                   "Examples in the checked batch.")
_PIXELS = flags.DEFINE_enum(
    "pixels", "uint8", ["uint8", "float255", "float01"],
    "How your training feeds the images: uint8 0-255 as stored (fastcifar), "
    "float 0-255, or float 0-1 (x / 255 on the host).")
_LABELS = flags.DEFINE_enum(
    "labels", "auto", ["auto", "int", "one_hot"],
    "How your training feeds the labels to the loss: int class ids as "
    "stored, or one_hot (to_categorical, or fastcifar's one-hot on the "
    "device). auto: one_hot for fastcifar models, int otherwise.")
_SEED = flags.DEFINE_integer("seed", 0, "Picks the batch.")


# Findings that depend on how the batch is fed, which the flags only assume.
_FEEDING_CODES = ("unnormalized-input", "integer-input", "label-loss-mismatch",
                  "label-shape")


def is_fastcifar_model(model) -> bool:
  """Whether the model scales its own uint8 input with fastcifar's layer."""
  return any(isinstance(layer, models.Standardize) for layer in model.layers)


def sample_batch(images: np.ndarray, labels: np.ndarray, size: int,
                 seed: int, pixels: str) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random batch, pixels converted as `pixels` says.

  Random, not the first examples: the data on disk may be sorted by class,
  and how your pipeline shuffles is not known here.
  """
  pick = np.random.default_rng(seed).choice(
      len(images), min(size, len(images)), replace=False)
  x, y = images[pick], labels[pick]
  if pixels == "float255":
    x = x.astype(np.float32)
  elif pixels == "float01":
    x = x.astype(np.float32) / 255
  return x, y


def main(argv: list[str]) -> int:
  """Checks as the flags say; UsageError for bad input (see `cli.run`)."""
  del argv
  if not _MODEL.value:
    raise UsageError("--model is required: the .keras file to check")
  if _BATCH_SIZE.value < 1:
    raise UsageError("--batch_size must be at least 1")
  record = outputs.read_run_record(_MODEL.value)
  model = models.load_saved(_MODEL.value)
  dataset = cli.load_data(_DATA, _SEED.value, record=record and record["data"])
  images, labels = ((dataset.train_images, dataset.train_labels)
                    if _SPLIT.value == "train" else
                    (dataset.test_images, dataset.test_labels))
  x, y = sample_batch(images, labels, _BATCH_SIZE.value, _SEED.value,
                      _PIXELS.value)
  # fastcifar's training (its record says so) one-hots on the device.
  one_hot = (_LABELS.value == "one_hot" or
             (_LABELS.value == "auto"
              and (record is not None or is_fastcifar_model(model))))
  findings = doctor.check(model, x, y, one_hot_on_device=one_hot,
                          batch_size=len(x))
  print(f"fastcifar.doctor: {_MODEL.value} on {len(x)} {dataset.name} "
        f"{_SPLIT.value} images fed as {_PIXELS.value}, labels "
        f"{'one-hot' if one_hot else 'as int class ids'}")
  print(doctor.format_findings(findings))
  if any(f.code in _FEEDING_CODES for f in findings):
    print(f"fastcifar.doctor: note: the batch was fed as --pixels="
          f"{_PIXELS.value} --labels={'one_hot' if one_hot else 'int'}; if "
          "your training feeds pixels or labels otherwise, pass the flags "
          "that match it")
  return 1 if any(f.severity == doctor.ERROR for f in findings) else 0


def run() -> None:
  """Console-script entry point."""
  cli.run(main, "fastcifar.doctor")


if __name__ == "__main__":
  run()
