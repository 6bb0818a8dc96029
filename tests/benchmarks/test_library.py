"""Tests of benchmarks/library.py: it runs all three ways and sums up right.

Nothing here asserts a speed (see test_benchmarks.py).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from benchmarks import library
from fastcifar.data import sources
from fastcifar.errors import UsageError
from tests.benchmarks.test_benchmarks import records_and_table, run_benchmark
from tests.conftest import X86_LINUX, halved


def test_library_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 16x16 images: each step costs a quarter; the three ways and their
  # records are what is tested.
  small = str(tmp_path / "small.npz")
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=256, num_test=64, seed=0)), small)
  stdout = run_benchmark(
      library, capsys, "--quick", f"--output={output}",
      "--train_examples=256", "--test_examples=64", "--batch_size=64",
      f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  assert [r["side"] for r in records] == ["keras", "datasets", "fit",
                                          "command", "summary"]
  for record in records[:-1]:
    assert record["images_per_second"] > 0
    assert 0 <= record["test_accuracy"] <= 1
    assert (record["epochs"], record["train_examples"]) == (2, 256)
    # One network every way: one FLOP count, each side's rate against it.
    assert record["training_flops_per_image"] == records[0][
        "training_flops_per_image"] > 0
    assert record["tflops_per_second"] == pytest.approx(
        record["images_per_second"] * record["training_flops_per_image"]
        / 1e12)
  summary = records[-1]
  assert summary["datasets_ratio_to_keras"] == pytest.approx(
      records[1]["images_per_second"] / records[0]["images_per_second"])
  # The command's record says which kernels its own process ran: oneDNN's
  # on x86, as this one (conftest sets TF_ENABLE_ONEDNN_OPTS as commands do).
  assert summary["command_ratio_to_keras"] == pytest.approx(
      records[3]["images_per_second"] / records[0]["images_per_second"])
  if X86_LINUX:
    assert records[2]["onednn"] is records[3]["onednn"] is True


def test_summary_takes_medians_and_ratios_to_keras():
  runs = [{"side": "keras", "images_per_second": 100.0, "test_accuracy": 0.5},
          {"side": "keras", "images_per_second": 120.0, "test_accuracy": 0.7},
          {"side": "datasets", "images_per_second": 330.0,
           "test_accuracy": 0.6}]
  summary = library.summarize(runs)
  assert summary["keras_images_per_second"] == 110.0
  assert summary["keras_test_accuracy"] == 0.6
  assert summary["datasets_ratio_to_keras"] == 3.0
  assert "fit_ratio_to_keras" not in summary


def test_steady_rate_leaves_out_the_first_epoch():
  assert library.steady_rate(1000, [9.0, 2.0, 3.0]) == 400.0


def test_the_models_share_the_resnet_and_differ_in_their_input():
  shapes = dict(num_classes=10, image_shape=(16, 16, 3))
  models = [library.build(**shapes), library.build_with_augmentation(**shapes),
            library.build_plain_keras(**shapes)]
  trained = {sum(int(np.prod(w.shape)) for w in m.trainable_weights)
             for m in models}
  assert len(trained) == 1 and trained.pop() > 300_000
  assert models[1].layers[1].__class__.__name__ == "FlipAndTranslate"
  assert models[0].inputs[0].dtype == "uint8"


def test_sides_run_in_their_order_and_unknown_ones_are_refused():
  assert library.chosen_sides(["fit", "keras"]) == ["keras", "fit"]
  with pytest.raises(UsageError, match="--sides=keras,pytorch: choose from "
                     "keras,datasets,fit"):
    library.chosen_sides(["keras", "pytorch"])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_the_plain_keras_translation_interpolates_as_asked(interpolation):
  model = library.build_plain_keras(10, (16, 16, 3),
                                    interpolation=interpolation)
  translation, = [layer for layer in model.layers
                  if isinstance(layer, keras.layers.RandomTranslation)]
  assert translation.interpolation == interpolation
  assert (translation.height_factor, translation.fill_mode) == (
      2 / 32, "reflect")
