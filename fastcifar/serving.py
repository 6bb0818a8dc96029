"""A trained model out of Keras: a TensorFlow SavedModel and a TFLite file.

The SavedModel's `serving_default` signature takes `images`, uint8
`(batch, 32, 32, 3)` for any batch size, and returns `probabilities`, float32
`(batch, num_classes)`. fastcifar's layers are traced into plain TensorFlow
ops, so `tf.saved_model.load`, `saved_model_cli` and TF Serving need no
fastcifar. The export computes in float32 whatever precision the model was
trained in: its weights are float32 anyway, and TFLite and most serving
hardware want float32.

The TFLite file is converted from that SavedModel by TensorFlow's own
converter (where the installed TensorFlow still ships `tf.lite`): float32,
or with `quantize="float16"` (weights in float16) or `"int8"` (weights and
activations in int8, calibrated on training images; input stays uint8 and
output float32, ops without an int8 kernel stay float).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Any, Iterator

import keras
import numpy as np
import tensorflow as tf

from fastcifar.training import outputs


QUANTIZATIONS = ("none", "float16", "int8")
SIGNATURE = "serving_default"
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
CALIBRATION_IMAGES = 500


def _float32_config(config: Any) -> Any:
  """The model config with every layer's dtype policy set to float32."""
  if isinstance(config, dict):
    if config.get("class_name") == "DTypePolicy":
      return "float32"
    return {k: ("float32" if k == "dtype" and isinstance(v, str) else
                _float32_config(v)) for k, v in config.items()}
  if isinstance(config, list):
    return [_float32_config(c) for c in config]
  return config


def as_float32(model: keras.Model) -> keras.Model:
  """The same model (same weights) computing in float32.

  Input layers keep their dtype (uint8 images stay uint8).
  """
  config = model.get_config()
  layers = config.get("layers", [])
  converted = _float32_config(config)
  for original, new in zip(layers, converted.get("layers", [])):
    if original.get("class_name") == "InputLayer":
      new["config"] = original["config"]
  clone = model.__class__.from_config(converted)
  clone.set_weights(model.get_weights())
  return clone


def export_saved_model(model: keras.Model, path: str,
                       from_logits: bool = False) -> str:
  """Writes `model` as a SavedModel with the serving signature above.

  Args:
    model: a Keras model taking uint8 `(batch, H, W, 3)` images.
    path: the SavedModel folder to write.
    from_logits: the model outputs logits (a user's model may, see
      `Config.from_logits`): the signature applies the softmax, so that it
      returns probabilities all the same.

  Returns:
    `path`.
  """
  model = as_float32(model)
  archive = keras.export.ExportArchive()
  archive.track(model)

  def probabilities(images):
    result = model(images, training=False)
    return {OUTPUT_NAME: tf.nn.softmax(result) if from_logits else result}

  archive.add_endpoint(
      SIGNATURE, probabilities,
      input_signature=[tf.TensorSpec((None, *model.input_shape[1:]),
                                     tf.uint8, name=INPUT_NAME)])
  archive.write_out(path, verbose=False)
  return path


def tflite_available() -> bool:
  """Whether this TensorFlow still ships its TFLite converter."""
  return hasattr(getattr(tf, "lite", None), "TFLiteConverter")


def _calibration(images: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
  for image in images:
    yield {INPUT_NAME: image[None]}


def export_tflite(saved_model: str, path: str, quantize: str = "none",
                  calibration_images: np.ndarray | None = None) -> str:
  """Converts a SavedModel from `export_saved_model` to a `.tflite` file.

  Args:
    saved_model: the SavedModel folder.
    path: the `.tflite` file to write.
    quantize: one of `QUANTIZATIONS`.
    calibration_images: uint8 images for "int8" (a few hundred training
      images: the converter measures the activations' ranges on them).

  Returns:
    `path`.
  """
  if quantize not in QUANTIZATIONS:
    raise ValueError(f"quantize={quantize!r}: choose one of {QUANTIZATIONS}")
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model, signature_keys=[SIGNATURE])
  if quantize != "none":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantize == "float16":
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "int8":
    if calibration_images is None or not len(calibration_images):
      raise ValueError("int8 quantization needs calibration_images")
    # A slice, then an array: iterating a streamed `ShardedImages` image by
    # image is refused (each would be a read of its own).
    images = np.asarray(calibration_images[:CALIBRATION_IMAGES])
    converter.representative_dataset = lambda: _calibration(images)
  with warnings.catch_warnings():
    # int8 calibration runs TensorFlow's own tf.lite.Interpreter, which warns
    # that it is deprecated: news for TensorFlow, nothing a user can change.
    warnings.filterwarnings("ignore", r"\s*Warning: tf\.lite\.Interpreter is "
                            "deprecated", UserWarning)
    flatbuffer = converter.convert()
  with open(path + ".tmp", "wb") as f:  # never a half-written model
    f.write(flatbuffer)
  os.replace(path + ".tmp", path)
  return path


def artifact_names() -> tuple[str, ...]:
  """Every file or folder `export_all` may write into its output folder."""
  return ("saved_model", "model.tflite",
          *(f"model_{q}.tflite" for q in QUANTIZATIONS if q != "none"),
          outputs.RUN_RECORD)


def export_all(model: keras.Model, output: str, quantize: str = "none",
               calibration_images: np.ndarray | None = None,
               record: dict | None = None) -> list[str]:
  """Writes OUTPUT/saved_model and, where TFLite exists, OUTPUT/model.tflite.

  Everything is written into a staging folder inside `output` first, then
  moved into place: an export that fails leaves the previous one as it
  was, and one that succeeds leaves nothing of it (a `model_int8.tflite`
  of an earlier model beside the new SavedModel would serve that model).
  Other files in `output` are left alone.

  Args:
    model: a Keras model taking uint8 `(batch, H, W, 3)` images.
    output: the folder to write into (created if missing).
    quantize: besides the float32 `model.tflite`, also write
      `model_QUANTIZE.tflite` ("float16" or "int8"); "none": not.
    calibration_images: training images, for "int8": a uint8 array or
      anything that slices into one.
    record: the run.json `fastcifar.train` wrote beside the model
      (`outputs.read_run_record`), None for a model saved by other means.
      Its `from_logits` says whether the signature applies the softmax;
      it is copied to OUTPUT/run.json, so that the export says what data
      (classes, image size, resize) it takes.

  Returns:
    The paths written.
  """
  os.makedirs(output, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".export-", dir=output)
  try:
    saved_model = export_saved_model(
        model, os.path.join(staging, "saved_model"),
        from_logits=bool(record and record.get("from_logits")))
    if record:
      outputs.write_json(os.path.join(staging, outputs.RUN_RECORD), record)
    if tflite_available():
      export_tflite(saved_model, os.path.join(staging, "model.tflite"))
      if quantize != "none":
        export_tflite(saved_model,
                      os.path.join(staging, f"model_{quantize}.tflite"),
                      quantize, calibration_images)
    return _move_into(staging, output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _move_into(staging: str, output: str) -> list[str]:
  """Replaces `output`'s artifacts by `staging`'s; returns those moved."""
  written = []
  for name in artifact_names():
    new, old = os.path.join(staging, name), os.path.join(output, name)
    if os.path.isdir(old):  # a folder cannot be replaced by a rename
      os.rename(old, os.path.join(staging, f"old-{name}"))
    elif os.path.lexists(old) and not os.path.exists(new):
      os.remove(old)
    if os.path.exists(new):
      os.replace(new, old)
      written.append(old)
  return written
