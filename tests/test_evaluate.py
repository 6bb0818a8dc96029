"""Seeing a model and its training: per-class accuracy, the confusion-matrix
picture, `python -m fastcifar.evaluate`, and TensorBoard logs from
fastcifar's own training loop."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from fastcifar.training import evaluation, trainer
from fastcifar.errors import UsageError
from fastcifar.data.sources import load_synthetic, make_dataset, save_prepared

CLASSES = tuple(f"class_{i}" for i in range(10))


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG's header; fails unless the file is a PNG."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  assert head[12:16] == b"IHDR"
  return struct.unpack(">II", head[16:24])


def assert_real_picture(path: str, size: tuple[int, int]) -> None:
  """A PNG of `size` pixels that decodes and is not a blank canvas."""
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  assert png_size(path) == size
  pixels = image.imread(path)
  assert pixels.shape[:2] == (size[1], size[0])
  rgb = (pixels[..., :3] * 255).astype(np.uint32)
  colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
  assert len(colours) > 50, "the picture is (nearly) blank"


def test_predict_classes_with_tta_averages_six_views():
  # A fixed linear classifier of the pixels: every view changes its output.
  weights = np.random.default_rng(1).normal(size=(64, 10)).astype(np.float32)
  model = keras.Sequential([
      keras.Input((8, 8, 1)), keras.layers.Flatten(),
      keras.layers.Dense(10, use_bias=False, activation="softmax")])
  model.layers[-1].set_weights([weights])
  classify = lambda x: tf.nn.softmax(x.reshape(len(x), -1) @ weights).numpy()
  images = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(
      np.float32)
  padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
  views = [images, padded[:, :8, :8], padded[:, 2:, 2:]]
  probs = sum(w * (classify(v) + classify(v[:, :, ::-1].copy())) / 2
              for v, w in zip(views, (0.5, 0.25, 0.25)))
  np.testing.assert_array_equal(
      evaluation.predict_classes(model, images, 7, tta=True),
      probs.argmax(-1))
  assert not np.array_equal(probs.argmax(-1),
                            classify(images).argmax(-1)), "views changed none"


def test_confusion_matrix_counts_rows_true_columns_predicted():
  labels = np.array([0, 0, 1, 1, 2, 2, 2])
  predictions = np.array([0, 1, 1, 1, 2, 0, 2])
  confusion = evaluation.confusion_matrix(labels.reshape(-1, 1), predictions,
                                          3)
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 2]])
  np.testing.assert_allclose(evaluation.per_class_accuracy(confusion),
                             [0.5, 1.0, 2 / 3])
  assert evaluation.overall_accuracy(confusion) == pytest.approx(5 / 7)
  with pytest.raises(ValueError):
    evaluation.confusion_matrix(labels, predictions[:3], 3)


def test_report_lists_every_class_with_its_accuracy():
  confusion = np.array([[8, 2, 0], [0, 10, 0], [5, 0, 0]])
  report = evaluation.format_report(confusion, ["cat", "dog", "emu"])
  lines = report.splitlines()
  assert lines[0] == "accuracy 0.7200 (18 of 25 images)"
  assert lines[3].split() == ["cat", "0.8000", "10", "dog", "(2)"]
  assert lines[4].split() == ["dog", "1.0000", "10", "-"]
  assert lines[5].split() == ["emu", "0.0000", "5", "cat", "(5)"]


@pytest.mark.parametrize("num_classes,size", [(10, (800, 700)),
                                              (100, (1600, 1500))])
def test_confusion_matrix_picture(tmp_path, num_classes, size):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, 2000)
  predictions = np.where(rng.random(2000) < 0.7, labels,
                         rng.integers(0, num_classes, 2000))
  confusion = evaluation.confusion_matrix(labels, predictions, num_classes)
  path = str(tmp_path / "confusion.png")
  evaluation.plot_confusion_matrix(
      confusion, [f"class_{i}" for i in range(num_classes)], path, "test")
  assert_real_picture(path, size)
  assert os.listdir(tmp_path) == ["confusion.png"]  # no temporary left


def test_pictures_without_matplotlib_say_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
  with pytest.raises(UsageError, match=r"pip install 'fastcifar\[plot\]'"):
    evaluation.plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"],
                                     str(tmp_path / "x.png"))


def saved_model_and_data(tmp_path) -> tuple[str, str]:
  """A small trained fastcifar-style model (uint8 in) and its .npz data."""
  data = load_synthetic(num_train=64, num_test=200, seed=0)
  data_path = str(tmp_path / "fastcifar-cifar10.npz")
  save_prepared(make_dataset("cifar10", data.train_images, data.train_labels,
                             data.test_images, data.test_labels, CLASSES,
                             "test"), data_path)
  model = keras.Sequential([
      keras.Input((32, 32, 3), dtype="uint8"),
      keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(4, 3, activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(10, activation="softmax")])
  model_path = str(tmp_path / "run" / "model.keras")
  os.makedirs(os.path.dirname(model_path))
  model.save(model_path)
  return model_path, data_path


# `python -m fastcifar.evaluate`, forked from the worker's command server: a
# process of its own (exit status, stdout, stderr), without the ~7 s import.
def test_evaluate_command_prints_accuracy_and_draws_the_matrix(
    tmp_path, command_server):
  model_path, data_path = saved_model_and_data(tmp_path)
  done = command_server.run("fastcifar.evaluate", [
      f"--model={model_path}", f"--data_dir={data_path}"])
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert "pixels fed as uint8" in lines[0]
  assert lines[1].startswith("accuracy ") and "of 200 images" in lines[1]
  rows = [line.split() for line in lines if line.startswith("class_")]
  assert [r[0] for r in rows] == list(CLASSES)
  assert sum(int(r[2]) for r in rows) == 200
  picture = os.path.join(os.path.dirname(model_path), "confusion_matrix.png")
  assert lines[-1] == f"confusion matrix: {picture}"
  assert_real_picture(picture, (800, 700))
  # Bad input (exit 2, one line): test_a_run_trained_with_pad_is_evaluated_
  # with_pad.


def read_scalars(log_dir: str) -> dict[str, list[float]]:
  """Every scalar tag in the event files under `log_dir`, with its values."""
  scalars = {}
  for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          scalars.setdefault(value.tag, []).append(
              float(tf.make_ndarray(value.tensor)))
  return scalars


def test_tensorboard_logs_fastcifars_training_loop(tmp_path):
  # fastcifar.train passes keras.callbacks.TensorBoard to its own loop.
  dataset = load_synthetic(num_train=256, num_test=64, seed=0)
  config = trainer.Config(epochs=2, batch_size=64, augment=False,
                           precision="float32", jit_compile="false")
  log_dir = str(tmp_path / "tensorboard")
  board = keras.callbacks.TensorBoard(log_dir=log_dir, profile_batch=(2, 3))
  results = trainer.train_and_evaluate(config, dataset, str(tmp_path),
                                        callbacks=[board], verbose=0)
  train = read_scalars(os.path.join(log_dir, "train"))
  test = read_scalars(os.path.join(log_dir, "validation"))
  assert len(train["epoch_loss"]) == 2 and len(train["epoch_accuracy"]) == 2
  assert len(test["epoch_accuracy"]) == 2
  assert test["epoch_accuracy"][-1] == pytest.approx(results["test_accuracy"])
  profiles = glob.glob(os.path.join(log_dir, "train", "plugins", "profile",
                                    "*", "*.xplane.pb"))
  assert len(profiles) == 1 and os.path.getsize(profiles[0]) > 1000


def test_a_run_trained_with_pad_is_evaluated_with_pad(pad_run, command_server):
  # No data flag: the data, its size and --resize=pad come from run.json
  # (before it, evaluate silently cropped: 0.975 instead of 1.000).
  done = command_server.run("fastcifar.evaluate", [f"--model={pad_run}"])
  assert done.returncode == 0, done.stderr
  assert "32x32 resized by pad as run.json records" in done.stdout
  results = json.loads(open(os.path.join(os.path.dirname(pad_run),
                                         "results.json")).read())
  assert f"accuracy {results['test_accuracy']:.4f} (" in done.stdout
  refused = command_server.run("fastcifar.evaluate",
                               [f"--model={pad_run}", "--resize=crop"])
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines() == [
      "fastcifar.evaluate: error: --resize=crop contradicts the run that "
      "trained the model, which used --resize=pad (its run.json); drop "
      "--resize"]
