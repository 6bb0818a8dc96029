"""Tests of the benchmark scripts: they run and report well-formed records.

Each script runs as `python -m benchmarks.X` runs it, its flags parsed from
a command line (`harness.run_in_process`), in its quick mode made smaller
still by flags, in this process: a process of its own would only add
TensorFlow's start-up. Where a process is the point, there is one: the
children the benchmarks start as users' commands (epoch_cost, memory,
library's command side), and `python -m benchmarks.X` itself in
`test_a_benchmark_usage_error_is_one_line_and_exit_2`, the one start-up
from the command line. Nothing here asserts a speed: speed is what the
benchmarks measure, on a machine chosen for it, not what a test on a
shared CI machine can judge.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys

from absl import flags
import keras
import numpy as np
import pytest

from benchmarks import (epoch_cost, harness, input_pipeline, memory, recipe,
                        rss_probe, run_all, step_overhead,
                        training_throughput, time_to_accuracy)
from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.training import trainer
from tests.cli.test_quiet import log_lines
from tests.conftest import halved

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ENVIRONMENT_FIELDS = ("benchmark", "device", "cpu_model", "cpu_count", "gpu",
                      "tensorflow_version", "keras_version", "numpy_version",
                      "python_version", "fastcifar_version", "flags", "utc")


def run_benchmark(module, capsys, *args: str) -> str:
  """Runs `python -m benchmarks.X *args` in this process; its stdout.

  Args:
    module: the benchmark script's module.
    capsys: pytest's, which captures what the script prints.
    *args: the command line after the program.
  """
  capsys.readouterr()  # what came before is not the script's
  status = harness.run_in_process(module.main, module.define_flags,
                                  [module.__file__, *args])
  out, err = capsys.readouterr()
  assert status == 0, err[-3000:]
  return out


def records_and_table(stdout: str, output_path) -> tuple[list[dict],
                                                        list[str]]:
  """The JSON records on stdout (equal to those in --output) and the table."""
  lines = stdout.splitlines()
  records = [json.loads(line) for line in lines if line.startswith("{")]
  assert records, stdout
  with open(output_path) as f:
    assert [json.loads(line) for line in f] == records
  table = [line for line in lines if line.startswith("|")]
  assert len(table) == len(records) + 2, stdout  # header, rule, rows
  assert set(table[1]) <= set("|-"), table[1]
  for record in records:
    for field in ENVIRONMENT_FIELDS:
      assert field in record, field
    assert record["device"] in ("CPU", "GPU")
    assert record["flags"]["quick"] is True
  return records, table


def corner_12(data: sources.ImageDataset) -> sources.ImageDataset:
  """`halved(data)`'s 12x12 top-left corner: the seed CNN's steps cost a
  tenth of 32x32's (1.8 M multiply-adds an image; 3.9 M at 16x16)."""
  data = halved(data)
  return dataclasses.replace(data, train_images=data.train_images[:, :12, :12],
                             test_images=data.test_images[:, :12, :12])


def test_input_pipeline_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 16x16 images: the training step's seed CNN costs a quarter; the rows
  # and their fields are what is tested.
  small = str(tmp_path / "data" / "small.npz")
  os.makedirs(os.path.dirname(small))
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=1024, num_test=500, seed=0)), small)
  shards = tmp_path / "shards"
  stdout = run_benchmark(
      input_pipeline, capsys, "--quick", f"--output={output}",
      "--train_examples=1024", "--warmup_seconds=0.05", "--seconds=0.2",
      "--step_warmup_steps=1", "--step_steps=2", f"--shards_dir={shards}",
      "--shuffle_buffer=256", f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  assert os.listdir(shards) == []  # the shards were removed
  by_pipeline = {r["pipeline"]: r for r in records}
  assert set(by_pipeline) == {"fastcifar", "fastcifar_streamed", "recipe",
                              "naive_map", "memcpy", "constant_batch",
                              "fastcifar_training_step"}
  for record in records:
    assert record["images_per_second"] > 0
  assert by_pipeline["memcpy"]["fraction_of_ceiling"] == 1.0
  assert by_pipeline["fastcifar"]["pipeline_over_training_step"] > 0
  streamed = by_pipeline["fastcifar_streamed"]
  assert streamed["pipeline_over_training_step"] > 0
  assert streamed["bytes_per_image"] == 16 * 16 * 3 + 4
  assert streamed["prepare_seconds"] > 0  # the shards were written
  assert by_pipeline["fastcifar"]["bytes_per_image"] == 16 * 16 * 3 + 4
  assert by_pipeline["recipe"]["batch_size"] == 64
  assert by_pipeline["fastcifar"]["num_train_examples"] == 1024


def test_training_throughput_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 12x12 images: the rows and loop lengths are what is tested, not the
  # CNN's speed. Two whole loops of 4,096 examples (as the synthetic data
  # the benchmark would generate).
  small = str(tmp_path / "small.npz")
  sources.save_prepared(corner_12(sources.load_synthetic(
      num_train=8192, num_test=100, seed=0)), small)
  stdout = run_benchmark(
      training_throughput, capsys, "--quick", f"--output={output}",
      "--models=seed", "--precisions=auto", "--jit_compile=auto",
      "--warmup_steps=1", "--steps=2", "--test_examples=100",
      f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  recipe = [r for r in records if r["system"] == "recipe"]
  fastcifar = [r for r in records if r["system"] == "fastcifar"]
  assert len(recipe) == 1 and recipe[0]["ratio_to_recipe"] == 1.0
  assert recipe[0]["precision"] == "float32" and recipe[0]["batch_size"] == 64
  assert len(fastcifar) == 1 and fastcifar[0]["fastcifar_default"]
  for record in records:
    assert record["images_per_second"] > 0
  assert recipe[0]["steps_timed"] == 2
  # fastcifar's steps are timed in whole loops (Python hears of no other).
  loop = fastcifar[0]["steps_per_loop"]
  assert fastcifar[0]["steps_timed"] == loop >= 2
  assert records[0]["flags"]["steps"] == 2  # given flags beat --quick's


@pytest.mark.slow
def test_step_overhead_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 12x12 images: the rows and loop lengths are what is tested, not the
  # CNN's speed. Two whole loops of 4,096 examples.
  small = str(tmp_path / "small.npz")
  sources.save_prepared(corner_12(sources.load_synthetic(
      num_train=8192, num_test=64, seed=0)), small)
  # The seed CNN at batch 32: loops of 128 steps on CPUs (512 at batch 8),
  # and Keras's 2 x 64 steps take 4,096 images (8,192 at batch 64).
  stdout = run_benchmark(
      step_overhead, capsys, "--quick", f"--output={output}",
      "--cnn_batch_size=32", f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  rows = {(r["part"], r["system"], r["steps_per_loop_setting"], r["augment"]):
          r for r in records}
  assert set(rows) == {
      ("tiny", "fastcifar", "1", True), ("tiny", "fastcifar", "auto", True),
      ("tiny", "fastcifar", "auto", False), ("tiny", "keras_fit", "1", False),
      ("tiny", "keras_fit", "64", False),
      ("tiny", "bare_tf_function", "64", False),
      ("seed_cnn", "fastcifar", "auto", False),
      ("seed_cnn", "keras_fit", "64", False)}
  for record in records:
    assert record["milliseconds_per_step"] > 0
    # Whole loops only: one of each after the warm-up, in quick mode.
    assert record["steps_timed"] == record["steps_per_loop"]
    assert record["images_per_second"] == pytest.approx(
        1000 * record["batch_size"] / record["milliseconds_per_step"])
  assert rows[("tiny", "fastcifar", "1", True)]["steps_per_loop"] == 1
  if records[0]["device"] == "CPU":  # auto: 4,096 examples per loop
    assert rows[("tiny", "fastcifar", "auto", True)]["steps_per_loop"] == 64
  assert rows[("seed_cnn", "keras_fit", "64", False)][
      "ratio_to_keras_best"] == 1


def test_time_to_accuracy_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 16x16 images: each step and evaluation costs a quarter; the runs, the
  # target and the records are what is tested.
  small = str(tmp_path / "small.npz")
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=256, num_test=200, seed=0)), small)
  stdout = run_benchmark(
      time_to_accuracy, capsys, "--quick", f"--output={output}",
      "--train_examples=256", "--test_examples=200", "--epochs=1",
      "--recipe_epochs=1", f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  assert [r["system"] for r in records] == ["recipe", "fastcifar"]
  recipe, fastcifar = records
  # The default target is the recipe's final accuracy, so it reached it.
  assert recipe["reached"] and recipe["epochs_to_target"] == 1
  assert recipe["target_accuracy"] == recipe["test_accuracy_per_epoch"][-1]
  assert fastcifar["target_accuracy"] == recipe["target_accuracy"]
  assert fastcifar["epochs_run"] == 1 and fastcifar["epoch_limit"] == 1
  assert recipe["num_train_examples"] == 256


def test_memory_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 16x16 images: the children's steps and evaluations cost a quarter; what
  # is tested is that each configuration's own process is measured and
  # recorded (TensorFlow alone is over the 100 MiB asserted).
  small = str(tmp_path / "small.npz")
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=256, num_test=200, seed=0)), small)
  stdout = run_benchmark(
      memory, capsys, "--quick", f"--output={output}",
      "--precisions=auto", "--jit_compile=auto", "--train_examples=256",
      "--test_examples=200", f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  assert [r["configuration"] for r in records] == [
      "load_only", "fastcifar", "recipe"]
  for record in records:
    assert record["exit_code"] == 0
    assert record["peak_rss_bytes"] > 100 * 2**20  # TensorFlow alone is more
    if harness.gnu_time():  # the same process's peak, by the kernel both ways
      assert record["time_maxrss_bytes"] == pytest.approx(
          record["peak_rss_bytes"], rel=0.05)
  assert records[1]["fastcifar_default"]
  assert records[2]["ratio_to_recipe"] == 1.0
  assert "--precision=auto" in records[1]["command"]


@pytest.mark.slow
def test_epoch_cost_quick(tmp_path, capsys):
  output = tmp_path / "out.jsonl"
  # 16x16 images: each step and evaluation costs a quarter; the runs'
  # order, lengths and records are what is tested.
  small = str(tmp_path / "small.npz")
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=256, num_test=100, seed=0)), small)
  stdout = run_benchmark(
      epoch_cost, capsys, "--quick", f"--output={output}",
      "--train_examples=256", "--test_examples=100", f"--data_dir={small}")
  records, _ = records_and_table(stdout, output)
  assert [r["side"] for r in records] == ["recipe", "fastcifar"]
  recipe, fastcifar = records
  # Alternated: recipe 1, fastcifar 1, recipe 4, fastcifar 4.
  assert [(r["order"], r["epochs"]) for r in recipe["runs"]] == [(0, 1), (2, 4)]
  assert [(r["order"], r["epochs"]) for r in fastcifar["runs"]] == [
      (1, 1), (3, 4)]
  for record in records:
    assert record["num_train_examples"] == 256
    assert record["num_test_examples"] == 100
    short, long = record["runs"]
    assert record["t1_seconds"] == short["seconds"] > 0
    assert record["t4_seconds"] == long["seconds"] > 0
    assert record["per_epoch_seconds"] == pytest.approx(
        (long["seconds"] - short["seconds"]) / 3)
    for run in record["runs"]:
      assert run["exit_code"] == 0
      assert run["peak_rss_bytes"] > 100 * 2**20  # TensorFlow alone is more
  # fastcifar as users type it: its slice flag, its defaults.
  assert {"-m", "fastcifar.train", "--epochs=N", "--train_examples=256",
          "--precision=auto", "--jit_compile=auto"} <= set(
              fastcifar["command"])
  assert fastcifar["target_ratio"] == 0.4 and recipe["precision"] == "float32"


def test_recipe_cli(tmp_path, capsys):
  # 16x16 images (the recipe's CNN takes any size from 12x12): its flags,
  # its record and what it prints are what is tested.
  data = halved(sources.load_synthetic(num_train=256, num_test=100))
  npz = str(tmp_path / "data.npz")
  sources.save_prepared(data, npz)
  output = tmp_path / "out.jsonl"
  capsys.readouterr()
  assert harness.run_in_process(
      recipe.main, recipe.define_flags,
      [recipe.__file__, f"--data_dir={npz}", "--epochs=1",
       f"--output={output}"], common=False) == 0
  [record] = [json.loads(line) for line in output.read_text().splitlines()]
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
  assert printed == [record]
  assert record["benchmark"] == "recipe" and record["epochs"] == 1
  assert len(record["history"]["val_accuracy"]) == 1
  assert record["flags"]["epochs"] == 1
  for field in ("device", "cpu_model", "gpu", "tensorflow_version"):
    assert field in record


# --- The pieces, in this process ---------------------------------------------


def test_importing_the_benchmarks_defines_no_flags():
  # Flags come only with running a script, so scripts can import one another.
  for name in ("input_pipeline", "training_throughput", "time_to_accuracy",
               "memory", "run_all", "recipe", "harness", "step_overhead",
               "epoch_cost", "library"):
    importlib.import_module(f"benchmarks.{name}")
  defining = [module for module in flags.FLAGS.flags_by_module_dict()
              if "benchmarks" in module]
  assert not defining and not list(harness.FLAGS)


def test_a_benchmark_runs_beside_fastcifar_commands_flags(capsys):
  # The harness's flags are its own: a process that has fastcifar.train's
  # --seed, --data_dir, --dataset, --train_examples and --verbose (this one,
  # as any test run) runs a benchmark, twice, and has them after.
  importlib.import_module("fastcifar.train")
  before = set(flags.FLAGS)
  assert {"seed", "data_dir", "dataset", "train_examples",
          "verbose"} <= before
  for seed in (1, 2):
    stdout = run_benchmark(run_all, capsys, "--quick", "--dry_run",
                           f"--seed={seed}", "--only=memory")
    assert f"--seed={seed} --quick" in stdout
  assert set(flags.FLAGS) == before and not list(harness.FLAGS)


def test_quick_values_do_not_outlive_their_run():
  # --quick's values go into the record's flags; a later run without
  # --quick reports its own.
  seen = []

  def main(argv):
    del argv
    harness.setting("repeats", 1)
    seen.append(harness.flag_values())

  def define_flags():
    flags.DEFINE_integer("repeats", 3, "Rounds.", flag_values=harness.FLAGS)

  for argv in (["x", "--quick"], ["x"]):
    assert harness.run_in_process(main, define_flags, argv) == 0
  assert [s["repeats"] for s in seen] == [1, 3]


@pytest.mark.parametrize("device,bf16,capability,expected", [
    ("CPU", True, None,
     [("mixed_bfloat16", False, True), ("float32", False, False)]),
    ("CPU", False, None, [("float32", False, True)]),
    ("GPU", None, (7, 5),
     [("mixed_float16", True, True), ("float32", False, False),
      ("float32", True, False), ("mixed_float16", False, False)]),
    ("GPU", None, (8, 0),
     [("mixed_float16", True, True), ("float32", False, False),
      ("float32", True, False), ("mixed_float16", False, False),
      ("mixed_bfloat16", False, False), ("mixed_bfloat16", True, False)]),
])
def test_sweep_covers_what_applies_default_first(device, bf16, capability,
                                                 expected):
  settings = harness.sweep(device=device, cpu_bfloat16=bf16,
                           gpu_capability=capability)
  assert [(s.precision, s.jit_compile, s.default) for s in settings] == expected


def test_batch_clock_counts_steps_not_calls():
  clock = harness.BatchClock()
  clock.on_epoch_begin(0)
  for last_step, time in ((31, 10.0), (63, 11.0), (95, 12.0)):
    clock.on_train_batch_end(last_step)  # loops of 32 steps
    clock.times[-1] = time
  clock.on_epoch_begin(1)
  clock.on_train_batch_end(15)  # a second epoch's first loop of 16
  clock.times[-1] = 12.5
  assert clock.steps == [32, 64, 96, 112]
  # Timing starts at the first call that ends the warm-up: step 64.
  assert clock.steps_timed(warmup_steps=40) == 48
  assert clock.seconds_per_step(warmup_steps=40) == pytest.approx(1.5 / 48)
  assert clock.images_per_second(8, 40) == pytest.approx(8 * 48 / 1.5)
  with pytest.raises(ValueError, match="need a call after"):
    clock.steps_timed(warmup_steps=100)
  assert harness.whole_calls(3, 65, 32) == (32, 96)


def test_run_all_passes_the_common_flags_on():
  commands = run_all.commands(list(run_all.BENCHMARKS), quick=True,
                              data_dir="/data/x.tar.gz", dataset="cifar10",
                              seed=3, output="out.jsonl")
  assert [c[2] for c in commands] == [
      f"benchmarks.{name}" for name in run_all.BENCHMARKS]
  for command in commands:
    assert {"--quick", "--data_dir=/data/x.tar.gz", "--seed=3",
            f"--output={os.path.abspath('out.jsonl')}"} <= set(command)


def test_sweep_keeps_the_default_when_narrowed():
  settings = harness.sweep(["float32"], ["false"], device="CPU",
                           cpu_bfloat16=True)
  assert [(s.precision, s.default) for s in settings] == [
      ("mixed_bfloat16", True), ("float32", False)]


def test_batch_clock_leaves_out_the_warmup():
  clock = harness.BatchClock()
  clock.times = [10.0, 10.5, 11.0, 11.5, 12.0]  # the first step compiled
  clock.steps = [1, 2, 3, 4, 5]  # a call per step
  assert clock.images_per_second(batch_size=64, warmup_steps=2) == 3 * 64 / 1.5
  with pytest.raises(ValueError):
    clock.images_per_second(batch_size=64, warmup_steps=5)


def test_epoch_cost_alternates_and_takes_medians():
  assert epoch_cost.schedule(2) == [
      (0, 1, "recipe"), (0, 1, "fastcifar"), (0, 4, "recipe"),
      (0, 4, "fastcifar"), (1, 1, "recipe"), (1, 1, "fastcifar"),
      (1, 4, "recipe"), (1, 4, "fastcifar")]
  runs = [{"round": r, "epochs": n, "seconds": s, "peak_rss_bytes": p,
           "exit_code": 0}
          for r, n, s, p in ((0, 1, 20.0, 2**30), (0, 4, 41.0, 2**31),
                             (1, 1, 22.0, 2**30), (1, 4, 49.0, 2**30),
                             (2, 1, 30.0, 2**29), (2, 4, 45.0, 2**30))]
  summary = epoch_cost.summarize(runs)
  assert (summary["t1_seconds"], summary["t4_seconds"]) == (22.0, 45.0)
  assert summary["per_epoch_seconds"] == pytest.approx(23 / 3)
  assert summary["per_epoch_seconds_by_round"] == pytest.approx(
      [7.0, 9.0, 5.0])
  assert summary["per_epoch_seconds_fastest"] == pytest.approx(21 / 3)
  assert (summary["t1_peak_rss_mb"], summary["t4_peak_rss_mb"]) == (
      1024, 2048)
  runs[3]["exit_code"] = 1  # a failed run: no figure rather than a wrong one
  assert epoch_cost.summarize(runs)["per_epoch_seconds"] is None


def test_epoch_cost_target_is_met_only_by_both_estimates():
  assert epoch_cost.within_target(0.32, 0.52) is False  # a slow T(1) median
  assert epoch_cost.within_target(0.52, 0.38) is False
  assert epoch_cost.within_target(0.39, 0.40) is True
  assert epoch_cost.within_target(None, 0.3) is None


def test_first_reaching():
  assert time_to_accuracy.first_reaching([0.3, 0.6, 0.7], [1, 2, 3], 0.6) == (
      2, 2)
  assert time_to_accuracy.first_reaching([0.3], [1], 0.9) == (None, None)


def test_slice_dataset_is_seeded():
  data = sources.load_synthetic(num_train=300, num_test=100)
  a = harness.slice_dataset(data, 50, 20, seed=1)
  b = harness.slice_dataset(data, 50, 20, seed=1)
  assert len(a.train_images) == 50 and len(a.test_images) == 20
  np.testing.assert_array_equal(a.train_images, b.train_images)


def test_rss_probe_reports_the_childs_own_peak(tmp_path):
  out = tmp_path / "peak.json"
  # 200 MB touched in the child; the parent (pytest with TensorFlow) is larger
  # still, so a reading that included the parent's peak would not tell.
  code = "import sys; b = bytearray(int(sys.argv[1])); sys.exit(3)"
  result = subprocess.run(
      [sys.executable, "benchmarks/rss_probe.py", str(out), "-c", code,
       str(200 * 2**20)], cwd=REPO_ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=60)
  assert result.returncode == 3, result.stderr  # the program's own status
  report = json.loads(out.read_text())
  assert report["source"] == rss_probe.peak_rss()[1]
  assert 200 * 2**20 <= report["peak_rss_bytes"] < 400 * 2**20


def test_the_recipe_keeps_keras_own_dropout():
  # The baseline runs verbatim: fastcifar's faster Dropout is not its.

  class Seen(Exception):
    """Ends `fit` as it begins: the model it trains is what is looked at
    (its steps, traced and run, would add seconds and nothing to see)."""

  class LayerTypes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      self.types = [type(layer) for layer in self.model.layers]
      raise Seen

  seen = LayerTypes()
  data = sources.load_synthetic(num_train=64, num_test=16, seed=0)
  with pytest.raises(Seen):
    recipe.run_recipe(data, epochs=1, batch_size=32, verbose=0,
                      callbacks=[seen])
  dropouts = [t for t in seen.types if issubclass(t, keras.layers.Dropout)]
  assert dropouts == [keras.layers.Dropout] * 3


def test_training_throughput_refuses_data_too_small_for_a_timed_step():
  # A user's 2,000-image copy under --quick gave the fast model (batch 1024)
  # one step: a ValueError traceback after the recipe had been measured.
  seed, fast = trainer.recipe("seed"), trainer.recipe("fast")
  training_throughput.check_enough_data(
      2000, [seed, dataclasses.replace(fast, batch_size=1000)])
  with pytest.raises(UsageError, match=r"2,000 training images give the fast "
                     r"model 1 batch of 1024.*--batch_size=1000 or less"):
    training_throughput.check_enough_data(2000, [seed, fast])


def test_a_benchmark_usage_error_is_one_line_and_exit_2(tmp_path):
  # From the command line, the one way users start a benchmark: `python -m
  # benchmarks.NAME` silences TensorFlow's start-up lines (an "E0000 ...
  # failed call to cuInit" among them) as `python -m fastcifar.X` does, so
  # with TF_CPP_MIN_LOG_LEVEL unset the error is still the only line.
  data = tmp_path / "tiny.npz"
  rng = np.random.default_rng(0)
  np.savez(data, x_train=rng.integers(0, 256, (300, 32, 32, 3), np.uint8),
           y_train=np.arange(300) % 10,
           x_test=rng.integers(0, 256, (20, 32, 32, 3), np.uint8),
           y_test=np.arange(20) % 10)
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.training_throughput", "--quick",
       f"--data_dir={data}", "--models=fast"],
      capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
      env=dict(env, PYTHONPATH=REPO_ROOT), check=False)
  assert result.returncode == 2, result.stderr
  assert not log_lines(result.stdout + result.stderr), result.stderr
  assert result.stderr.splitlines() == [
      "benchmarks.training_throughput: error: 300 training images give the "
      "fast model 0 batches of 1024; a throughput needs two (a warm-up step "
      "and a timed one): pass --batch_size=150 or less, more data, or "
      "--models without it"], result.stderr
