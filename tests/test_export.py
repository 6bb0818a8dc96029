"""Tests for fastcifar.export and fastcifar.serving: a trained model out.

Tiny seed and fast models are trained for a few steps on synthetic data in
float32, exported (one through the command, forked from the worker's
command server, one by the function it calls, `serving.export_all`), and
their SavedModel and TFLite predictions are checked against the .keras
model's in a fresh process in which fastcifar cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable

import keras
import numpy as np
import pytest

from fastcifar import serving, models
from fastcifar.data import sources
from tests.cli.test_quiet import log_lines
from tests.conftest import halved
from tests.forked import CommandServer

# Largest |probability difference| allowed against the .keras model, per
# artifact; argmax must agree wherever the .keras model's top two
# probabilities are further apart than twice that.
TOLERANCE = {"saved_model": 1e-5, "model.tflite": 1e-5,
             "model_float16.tflite": 1e-2, "model_int8.tflite": 0.1}

# Runs with fastcifar made unimportable: the artifacts must stand alone.
CHECK = r"""
import json, sys
sys.modules["fastcifar"] = None  # any `import fastcifar` now fails
import numpy as np
import tensorflow as tf
folders, tolerances = json.loads(sys.argv[1]), json.loads(sys.argv[2])
reports = {}
for folder in folders:
  images = np.load(f"{folder}/images.npy")
  expected = np.load(f"{folder}/expected.npy")
  report = reports[folder] = {}
  for name, tolerance in tolerances.items():
    path = f"{folder}/export/{name}"
    if name == "saved_model":
      serve = tf.saved_model.load(path).signatures["serving_default"]
      got = serve(images=tf.constant(images))["probabilities"].numpy()
    else:
      runner = tf.lite.Interpreter(model_path=path).get_signature_runner(
          "serving_default")
      got = runner(images=images)["probabilities"]
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
    report[name] = {
        "dtype": str(got.dtype), "shape": list(got.shape),
        "max_diff": float(np.abs(got - expected).max()),
        "clear": int(clear.sum()),
        "argmax_equal": bool(
            (got.argmax(1) == expected.argmax(1))[clear].all()),
    }
print(json.dumps(reports))
"""


def _trained_model(name: str, data: sources.ImageDataset) -> keras.Model:
  mean = data.train_images.mean((0, 1, 2)) / 255
  std = data.train_images.std((0, 1, 2)) / 255
  keras.utils.set_random_seed(0)
  model = models.build_model(name, data.num_classes, mean, std,
                             data.train_images, seed=0)
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
  model.fit(data.train_images, data.train_labels, batch_size=64, epochs=2,
            verbose=0)
  return model


def _export_each_way(folder, model: keras.Model, data: sources.ImageDataset,
                     server: CommandServer | None = None) -> None:
  """Saves `model` and its predictions into `folder`, then exports it with
  float32, int8 and float16 artifacts: by the command (forked from
  `server`, a `tests.forked.CommandServer`), or without a server in this
  process by `serving.export_all`, the function the command calls."""
  model_path = str(folder / "model.keras")
  model.save(model_path)
  np.save(folder / "images.npy", data.test_images)
  np.save(folder / "expected.npy", models.load_saved(
      model_path, compile=False).predict(data.test_images, verbose=0))
  if server:
    # int8 calibrates on the model's own training images (--dataset=
    # synthetic would generate 60,000 of the same kind first).
    calibration = str(folder / "fastcifar-train.npz")
    sources.save_prepared(data, calibration)
    exported = _export(server, f"--model={model_path}",
                       f"--output={folder}/export", "--quantize=int8",
                       f"--data_dir={calibration}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert not log_lines(exported.stdout + exported.stderr), exported.stderr
  else:
    serving.export_all(models.load_saved(model_path, compile=False),
                       str(folder / "export"), "int8", data.train_images)
  if serving.tflite_available():
    serving.export_tflite(str(folder / "export" / "saved_model"),
                          str(folder / "export" / "model_float16.tflite"),
                          "float16")


@pytest.fixture(scope="module")
def trained() -> Callable[[str], tuple[keras.Model, sources.ImageDataset]]:
  """`trained(name)`: that model trained in float32 at 16x16, and its data.

  Each model is trained once for the tests that export it and look at what
  comes out (none changes it), on first use: a worker that runs none of
  the fast model's tests trains none. 16x16: a quarter of the cost of
  training, calibrating and predicting; what the tests compare is each
  artifact's output with the .keras model's.
  """
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  done = {}

  def model(name: str) -> tuple[keras.Model, sources.ImageDataset]:
    if name not in done:
      done[name] = _trained_model(name, data)
    return done[name], data

  return model


@pytest.mark.slow
def test_exported_models_predict_as_the_keras_models_without_fastcifar(
    tmp_path, command_server, trained):
  # Both models, one exported by the command and one by the function it
  # calls, checked in one process (each process costs seconds of imports).
  folders = []
  for name in models.MODELS:
    folder = tmp_path / name
    folder.mkdir()
    model, data = trained(name)
    _export_each_way(folder, model, data,
                     command_server if name == "seed" else None)
    folders.append(str(folder))
  tolerances = {"saved_model": TOLERANCE["saved_model"]}
  if serving.tflite_available():
    tolerances.update((k, v) for k, v in TOLERANCE.items() if "tflite" in k)
  result = subprocess.run(
      [sys.executable, "-c", CHECK, json.dumps(folders),
       json.dumps(tolerances)],
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="3"),
      cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  reports = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(reports) == set(folders)
  for folder, report in reports.items():
    assert set(report) == set(tolerances), folder
    for artifact, tolerance in tolerances.items():
      checked = report[artifact]
      assert checked["dtype"] == "float32" and checked["shape"] == [64, 10]
      assert checked["max_diff"] <= tolerance, (folder, artifact, checked)
      assert checked["argmax_equal"], (folder, artifact, checked)
    # The float32 artifacts are compared on (nearly) every image.
    assert report["saved_model"]["clear"] >= 60, (folder, report)


def test_saved_model_takes_any_batch_size(tmp_path, trained):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, data = trained("seed")
  path = serving.export_saved_model(model, str(tmp_path / "sm"))
  serve = tf.saved_model.load(path).signatures["serving_default"]
  for batch in (1, 3, 8):
    got = serve(images=tf.constant(data.test_images[:batch]))["probabilities"]
    assert got.shape == (batch, 10) and got.dtype == tf.float32


def test_a_mixed_precision_model_is_exported_in_float32(tmp_path):
  # 16x16: bfloat16 is emulated on most CPUs, and what is compared is the
  # float32 copy's output with the model's, at any size.
  data = halved(sources.load_synthetic(num_train=64, num_test=8, seed=2))
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  model = _trained_model("seed", data)
  keras.mixed_precision.set_global_policy("float32")
  converted = serving.as_float32(model)
  assert {layer.dtype_policy.name for layer in converted.layers} == {"float32"}
  assert converted.inputs[0].dtype == "uint8"
  np.testing.assert_allclose(converted.predict(data.test_images, verbose=0),
                             model.predict(data.test_images, verbose=0),
                             atol=0.02)


def _export(server: CommandServer, *args: str) -> subprocess.CompletedProcess:
  """`python -m fastcifar.export ARGS`, forked from the worker's command
  server (`tests.forked`): a process of its own, as the command's exit
  status and lines are the point, without the ~7 s import of a fresh one.
  (In this process, it would define --model beside fastcifar.train's.)"""
  return server.run("fastcifar.export", args, timeout=600)


def test_int8_calibrates_on_a_streamed_shard_folder(tmp_path, command_server,
                                                    trained):
  model, data = trained("seed")
  model_path = str(tmp_path / "model.keras")
  model.save(model_path)
  folder = sources.shards_path(str(tmp_path), "synthetic")
  sources.write_shards(folder, "synthetic", data.class_names,
                       sources.array_chunks(data), sources.array_counts(data),
                       shard_bytes=64 * 16 * 16 * 3)  # 4 training shards
  exported = _export(command_server, f"--model={model_path}",
                     f"--output={tmp_path}/export", "--quantize=int8",
                     f"--data_dir={folder}", "--cache=disk")
  assert exported.returncode == 0, exported.stderr[-3000:]
  if serving.tflite_available():
    assert os.path.getsize(tmp_path / "export" / "model_int8.tflite")


def _listing(folder) -> list[str]:
  return sorted(os.listdir(folder))


def test_a_second_export_leaves_nothing_of_the_first(tmp_path, monkeypatch,
                                                     trained):
  first, _ = trained("seed")
  out = tmp_path / "export"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  serving.export_all(first, str(out), "float16")
  tflite = ["model.tflite"] if serving.tflite_available() else []
  quantized = ["model_float16.tflite"] if tflite else []
  assert _listing(out) == sorted(
      ["notes.txt", "saved_model", *tflite, *quantized])
  # An export that fails half-way leaves the first one whole.
  with monkeypatch.context() as patch:
    def half_written(model, path, **kwargs):
      del model, kwargs
      os.makedirs(path)
      raise OSError("disk full")
    patch.setattr(serving, "export_saved_model", half_written)
    with pytest.raises(OSError):
      serving.export_all(first, str(out))
  assert _listing(out) == sorted(
      ["notes.txt", "saved_model", *tflite, *quantized])
  written = serving.export_all(first, str(out))
  assert _listing(out) == sorted(["notes.txt", "saved_model", *tflite])
  assert sorted(os.path.basename(p) for p in written) == sorted(
      ["saved_model", *tflite])
  assert (out / "notes.txt").read_text() == "mine"


def test_a_run_trained_with_pad_exports_with_its_record(pad_run, tmp_path,
                                                       command_server):
  out = tmp_path / "export"
  done = _export(command_server, f"--model={pad_run}", f"--output={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  record = json.loads((out / "run.json").read_text())
  assert (record["data"]["resize"], record["data"]["image_size"]) == (
      "pad", [32, 32])
  assert record["data"]["class_names"] == ["a", "b"]
  refused = _export(command_server, f"--model={pad_run}",
                    f"--output={tmp_path / 'x'}", "--resize=crop",
                    "--quantize=int8")
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines() == [
      "fastcifar.export: error: --resize=crop contradicts the run that "
      "trained the model, which used --resize=pad (its run.json); drop "
      "--resize"]
  assert not (tmp_path / "x").exists()


def test_a_logits_model_is_served_as_probabilities(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), np.uint8)
  model = keras.Sequential([
      keras.Input((8, 8, 3), dtype="uint8"), keras.layers.Rescaling(1 / 255),
      keras.layers.Flatten(), keras.layers.Dense(10)])  # logits
  record = {"from_logits": True, "data": {"class_names": list("abcdefghij")}}
  written = serving.export_all(model, str(tmp_path), record=record)
  assert json.loads((tmp_path / "run.json").read_text()) == record
  assert str(tmp_path / "run.json") in written
  serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures[
      "serving_default"]
  got = serve(images=tf.constant(images))["probabilities"].numpy()
  np.testing.assert_allclose(got, tf.nn.softmax(model(images)).numpy(),
                             atol=1e-6)
  # A later export of a model without a record leaves no stale one.
  serving.export_all(model, str(tmp_path))
  assert not (tmp_path / "run.json").exists()
