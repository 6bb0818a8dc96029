"""Exports a trained model for serving: `python -m fastcifar.export`.

    python -m fastcifar.export --model=runs/x/model.keras --output=runs/x/export

Writes OUTPUT/saved_model, a TensorFlow SavedModel whose `serving_default`
signature takes uint8 `images` (batch, H, W, 3) at the size the model was
trained on (32x32 for CIFAR), any batch size, and returns float32
`probabilities` (batch, classes); it loads with `tf.saved_model.load`,
`saved_model_cli` or TF Serving, no fastcifar needed.
Where the installed TensorFlow ships its TFLite converter, also
OUTPUT/model.tflite (float32) and, with --quantize, model_float16.tflite or
model_int8.tflite (int8 is calibrated on training images from the data
flags, or without them from the data run.json beside the model records).
OUTPUT/run.json repeats that record (class names, image size, resize), so
the served model says what it takes. A previous export's files in OUTPUT are
replaced, including ones not written this time. Bad input ends with one line
naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import contextlib
import os

from absl import flags

from fastcifar import models, serving
from fastcifar.cli import common as cli, quiet
from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.training import outputs

_MODEL = flags.DEFINE_string("model", None,
                             "The .keras model to export (fastcifar.train "
                             "writes OUTPUT_DIR/model.keras).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "The folder to write saved_model/ and the .tflite files "
    "into. Default: export/ beside --model.")
_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", serving.QUANTIZATIONS,
    "Also write a quantized TFLite model: float16 weights, or int8 weights "
    "and activations calibrated on training images (from --dataset / "
    "--data_dir).")
_DATA = cli.data_flags()
_SEED = flags.DEFINE_integer("seed", 0, "The seed of --dataset=synthetic.")


def main(argv: list[str]) -> int:
  """Exports as the flags say; UsageError for bad input (see `cli.run`)."""
  del argv
  if not _MODEL.value:
    raise UsageError("--model is required: the .keras file to export")
  output = _OUTPUT.value or os.path.join(
      os.path.dirname(os.path.abspath(_MODEL.value)), "export")
  if _QUANTIZE.value != "none" and not serving.tflite_available():
    raise UsageError(f"--quantize={_QUANTIZE.value} needs TFLite, which this "
                     "TensorFlow no longer ships; drop --quantize")
  record = outputs.read_run_record(_MODEL.value)
  if record:
    cli.recorded_settings(_DATA, record["data"])  # refuses contradictions
  model = models.load_saved(_MODEL.value, compile=False)
  calibration = None
  if _QUANTIZE.value == "int8":
    calibration = cli.load_data(_DATA, _SEED.value, model.input_shape,
                                record and record["data"]).train_images
    if isinstance(calibration, sources.ShardedImages):  # streamed
      calibration = calibration.first(serving.CALIBRATION_IMAGES)
  # The converter's C++ notes reach file descriptor 2 whatever the log level.
  quieted = (contextlib.nullcontext() if flags.FLAGS.verbose
             else quiet.filtered_stderr(quiet.CONVERTER_NOISE))
  try:
    with quieted:
      written = serving.export_all(model, output, _QUANTIZE.value,
                                   calibration, record)
  except OSError as e:
    raise UsageError(f"cannot write --output {output} ({e.strerror or e}); "
                     "choose a writable folder") from e
  for path in written:
    print(f"fastcifar.export: wrote {path}")
  if not serving.tflite_available():
    print("fastcifar.export: no .tflite: this TensorFlow has no TFLite "
          "converter")
  return 0


def run() -> None:
  """Console-script entry point."""
  cli.run(main, "fastcifar.export")


if __name__ == "__main__":
  run()
