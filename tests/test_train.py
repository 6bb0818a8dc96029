"""Tests of `python -m fastcifar.train`: the happy path and every error path."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import flagsaver
import pytest

from fastcifar import serving, models, train
from fastcifar.cli import common as cli, cpu
from tests.cli.test_quiet import log_lines
from tests.conftest import X86_LINUX
# pylint: disable-next=unused-import
from tests.data.test_sources import tiny_tfds_dir

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, env: dict | None = None, timeout: float = 300):
  """Runs `python -m fastcifar.train` as a user would, in a clean process."""
  full_env = dict(os.environ, PYTHONPATH=REPO_ROOT, **(env or {}))
  return subprocess.run([sys.executable, "-m", "fastcifar.train", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=full_env, cwd=REPO_ROOT)


def run_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
  """`python -m fastcifar.train ARGS` run by `cli.run` in this process.

  For tests of what `cli.run` decides (bad flags: one line, status 2), where
  a process of their own would only add seconds of imports. Flags, logging
  handlers and __main__'s docstring are restored.
  """
  main_module = sys.modules["__main__"]
  handlers = logging.root.handlers[:]
  capsys.readouterr()
  try:
    with flagsaver.flagsaver(), \
        mock.patch.object(sys, "argv", ["fastcifar.train", *args]), \
        mock.patch.object(main_module, "__doc__", main_module.__doc__), \
        pytest.raises(SystemExit) as exited:
      cli.run(train.main, "fastcifar.train")
  finally:
    logging.root.handlers[:] = handlers
  out, err = capsys.readouterr()
  return subprocess.CompletedProcess(args, exited.value.code, out, err)


def test_in_process_run_writes_results(tmp_path, small_npz):
  # Small synthetic data (test_module_entry_point_end_to_end generates it):
  # the point here is what is written.
  run = dict(data_dir=small_npz, epochs=1, train_examples=256, batch_size=64,
             output_dir=str(tmp_path), export=True)
  with flagsaver.flagsaver(**run):
    assert train.main(["train"]) == 0
  # --export: ready to serve (test_export.py checks what the files predict),
  # with the run's record of its data.
  assert (tmp_path / "export" / "saved_model" / "saved_model.pb").is_file()
  assert (json.loads((tmp_path / "export" / "run.json").read_text())
          == json.loads((tmp_path / "run.json").read_text()))
  assert ((tmp_path / "export" / "model.tflite").is_file()
          or not serving.tflite_available())
  # The same command on the finished run trains no more, but exports.
  shutil.rmtree(tmp_path / "export")
  with flagsaver.flagsaver(**run):
    assert train.main(["train"]) == 0
  assert (tmp_path / "export" / "saved_model" / "saved_model.pb").is_file()
  results = json.loads((tmp_path / "results.json").read_text())
  for key in ("test_accuracy", "test_loss", "epochs", "train_seconds",
              "images_per_second", "precision", "jit_compile", "model",
              "dataset", "num_train_examples", "num_test_examples",
              "num_parameters", "device", "tensorflow_version"):
    assert key in results, key
  assert results["num_train_examples"] == 256
  assert results["dataset"] == "small"  # named after fastcifar-small.npz


def test_profile_steps_profile_the_loops_holding_them(tmp_path,
                                                    small_npz_16, capsys):
  # 256 images at batch 16, 15 steps per loop: loops of steps 1-15 and 16,
  # 4 loops in 2 epochs. Counted as loops, 8,10 was never reached: no
  # profile, no word.
  run = dict(data_dir=small_npz_16, epochs=2, train_examples=256, batch_size=16,
             steps_per_loop="15", output_dir=str(tmp_path),
             profile_steps="8,10", preflight=False)
  with flagsaver.flagsaver(**run):
    assert train.main(["train"]) == 0
  assert ("--profile_steps=8,10: training runs 15 steps per loop "
          "(--steps_per_loop) in 32 steps, so steps 1-15 are profiled"
          in capsys.readouterr().out)
  profiles = list((tmp_path / "tensorboard").glob("**/*.xplane.pb"))
  assert len(profiles) == 1 and profiles[0].stat().st_size > 1000


def test_each_model_gets_its_recipe_unless_a_flag_says_otherwise():
  with flagsaver.flagsaver(model="fast"):
    config = train.config_from_flags()
  assert (config.epochs, config.batch_size, config.tta) == (10, 1024, True)
  with flagsaver.flagsaver(model="fast", epochs=3, tta=False, augment=False):
    config = train.config_from_flags()
  assert (config.epochs, config.tta, config.augment) == (3, False, False)
  with flagsaver.flagsaver(model="seed"):
    config = train.config_from_flags()
  assert (config.epochs, config.batch_size, config.tta) == (20, 128, False)


def test_module_entry_point_end_to_end(tmp_path, monkeypatch, small_npz):
  # As a user starts it: TF_ENABLE_ONEDNN_OPTS unset (conftest sets it for
  # every other process), which the command sets on x86 (fastcifar.cli.cpu).
  # Two epochs and --export: TensorFlow logs INFO lines at every checkpoint
  # save and export once absl's app.run has raised the verbosity to INFO,
  # and none may reach the user. Small data: `--dataset=synthetic` would
  # generate 60,000 images and validate on 10,000 after every epoch.
  monkeypatch.delenv(cpu.VARIABLE, raising=False)
  result = run_cli(f"--data_dir={small_npz}", "--epochs=2",
                   "--train_examples=1024", f"--output_dir={tmp_path}",
                   "--export")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert "fastcifar: test accuracy" in result.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["num_train_examples"] == 1024 and results["epochs"] == 2
  if X86_LINUX:
    assert results["onednn"] is True
  assert (tmp_path / "model.keras").stat().st_size > 1_000_000
  assert (tmp_path / "export" / "saved_model").is_dir()
  assert not log_lines(result.stdout + result.stderr), result.stderr


def test_a_tfds_run_logs_nothing(tiny_tfds_dir, command_server):
  # TFDS logs INFO lines for every split it reads ("Constructing
  # tf.data.Dataset ..."). A process forked from the command server (TFDS
  # is imported by the run, TensorFlow's import was silenced as the
  # command's start-up does; the entry-point test checks that start-up).
  result = command_server.run("fastcifar.train", [
      "--dataset=tfds:fastcifar_tiny_images", f"--data_dir={tiny_tfds_dir}",
      "--image_size=12", "--epochs=1", "--batch_size=8", "--nopreflight"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert not log_lines(result.stdout + result.stderr), result.stderr


def test_verbose_brings_tensorflow_logging_back():
  # TensorFlow 2.21 logs at least its oneDNN notice while it loads: a
  # command refused by absl's flag parser (after the import) shows it, with
  # no training.
  result = run_cli("--verbose", "--no_such_flag=1")
  assert_one_line_error(result, "no_such_flag")
  assert log_lines(result.stderr), result.stderr


def assert_one_line_error(result, *fragments: str) -> str:
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines()
            if l.startswith("fastcifar.train: error:")]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


@pytest.mark.parametrize("args,fragments", [
    (["--epochs=0"], ["--epochs=0", "at least 1"]),
    (["--batch_size=-5"], ["--batch_size=-5"]),
    (["--learning_rate=-1"], ["--learning_rate"]),
    (["--precision=float8"], ["--precision", "float8"]),
    (["--model=resnet"], ["--model", "resnet"]),
    (["--epochs=many"], ["--epochs", "many"]),
    (["--no_such_flag=1"], ["no_such_flag"]),
    (["stray"], ["unexpected arguments stray"]),
    (["--dataset=cifar10", "--data_dir=/nonexistent/cifar"],
     ["/nonexistent/cifar", "does not exist"]),
    (["--data_dir=/tmp"], ["--data_dir is not used by --dataset=synthetic"]),
    (["--export"], ["--export", "--output_dir"]),
    (["--epochs=auto", "--validation_examples=0"],
     ["--epochs=auto", "--validation_examples=N"]),
    (["--validation_examples=-3"], ["--validation_examples=-3"]),
    (["--validation_examples=many"], ["--validation_examples", "many"]),
    (["--validation_examples=9999999"], ["--validation_examples=9999999",
                                         "leaves none"]),
    (["--epochs=auto", "--max_epochs=0"], ["--max_epochs=0"]),
    (["--epochs=auto", "--patience=-1"], ["--patience=-1"]),
    (["--epochs=auto", "--min_delta=-1"], ["--min_delta=-1"]),
    (["--optimizer=lion"], ["--optimizer", "lion"]),
    (["--lr_schedule=exp"], ["--lr_schedule", "exp"]),
    (["--lr_schedule=plateau"], ["--lr_schedule=plateau",
                                 "--validation_examples=N"]),
    (["--warmup_epochs=-1"], ["--warmup_epochs=-1"]),
    (["--warmup_epochs=0.5", "--lr_schedule=step"], ["--warmup_epochs=0.5",
                                                      "step"]),
    (["--momentum=1.5", "--optimizer=sgd"], ["--momentum=1.5"]),
    (["--momentum=0.9"], ["--momentum=0.9", "--optimizer=adam"]),
    (["--weight_decay=-1"], ["--weight_decay=-1"]),
    (["--model=fast", "--optimizer=adam"], ["--learning_rate"]),
    (["--plateau_factor=2"], ["--plateau_factor=2"]),
    (["--steps_per_loop=0"], ["--steps_per_loop=0", "at least 1, or auto"]),
    (["--steps_per_loop=many"], ["--steps_per_loop=many", "auto"]),
    (["--profile_steps=8,10"], ["--profile_steps", "--output_dir"]),
    (["--checkpoint_every=5x"], ["--checkpoint_every=5x", "e.g. 90s"]),
    (["--checkpoint_every=0"], ["--checkpoint_every=0", "500"]),
    (["--checkpoint_every=-1m"], ["--checkpoint_every=-1m", "positive"]),
])
def test_bad_flags_get_one_line(args, fragments, capsys):
  # A small valid run first, so a flag that is wrongly accepted ends quickly;
  # absl lets the later flags override it. In this process: these are
  # cli.run's decisions; the tests below check the contract in processes.
  small = ["--dataset=synthetic", "--epochs=1", "--train_examples=128",
           "--batch_size=64"]
  assert_one_line_error(run_in_process(capsys, *small, *args), *fragments)


def test_data_dir_that_is_not_data(tmp_path, command_server):
  # In a process of its own, as a user meets it: status 2, one line, no
  # traceback (the tests around it check cli.run's decisions in this
  # process). Forked from the command server: the import is not the point.
  (tmp_path / "notes.txt").write_text("hello")
  line = assert_one_line_error(command_server.run(
      "fastcifar.train", [f"--data_dir={tmp_path}"]), str(tmp_path))
  assert "image folder" in line  # says what was expected


def test_unwritable_output_dir_fails_before_training(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("keep me")
  assert_one_line_error(
      run_in_process(capsys, "--dataset=synthetic",
                     f"--output_dir={blocker}/out"),
      "not writable")
  assert blocker.read_text() == "keep me"


def _dead_url() -> str:
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_offline_with_nothing_on_disk_fails_fast(tmp_path, monkeypatch,
                                                 capsys):
  # An unreachable mirror stands in for no network (and keeps a CI machine
  # with a network from fetching the real 170 MB archive).
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.delenv("KERAS_HOME", raising=False)
  monkeypatch.setenv("FASTCIFAR_MIRROR", _dead_url())
  start = time.monotonic()
  result = run_in_process(capsys, "--epochs=1")
  assert time.monotonic() - start < 30
  assert_one_line_error(result, "--data_dir", "--dataset=synthetic",
                        os.path.join(str(tmp_path), ".keras", "datasets",
                                     "cifar-10-python.tar.gz"))


def test_tfds_dataset_offline_with_nothing_prepared_fails_fast(
    tmp_path, command_server):
  # --nodownload: without a network TFDS could not fetch it either, and a
  # machine with one must not fetch the real archive. In a process: TFDS
  # reads $TFDS_DATA_DIR when it is imported (by the forked run itself).
  start = time.monotonic()
  result = command_server.run(
      "fastcifar.train", ["--dataset=tfds:cifar10", "--nodownload",
                          "--epochs=1"],
      env={"TFDS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
  assert time.monotonic() - start < 30
  # TFDS's own data dir handling: $TFDS_DATA_DIR, read by TFDS.
  assert_one_line_error(result, "cifar10 is not prepared in",
                        str(tmp_path), "--download")


def test_first_run_downloads_and_the_second_does_not(mirror):
  for _ in range(2):
    with flagsaver.flagsaver(data_mirror=mirror.url, epochs=1, batch_size=50,
                             preflight=False):
      assert train.main(["train"]) == 0
  assert mirror.requests == ["/cifar-10-python.tar.gz"]


def test_a_stopped_restart_resumes_without_restart(tmp_path, monkeypatch,
                                                   capsys):
  import keras  # pylint: disable=g-import-not-at-top
  from fastcifar.data import sources  # pylint: disable=g-import-not-at-top
  # Generated at this size, not 50,000 images cut down to it.
  monkeypatch.setattr(train.cli, "load_data", lambda data, seed: (
      sources.load_synthetic(num_train=256, num_test=64, seed=seed)))
  small = dict(dataset="synthetic", epochs=2, batch_size=64,
               output_dir=str(tmp_path), preflight=False,
               precision="float32", tensorboard=False)
  with flagsaver.flagsaver(**small):
    assert train.main(["train"]) == 0  # a finished run

  class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      raise KeyboardInterrupt

  make_callbacks = train.make_callbacks
  monkeypatch.setattr(train, "make_callbacks", lambda *args: [
      *make_callbacks(*args), StopAfterFirstEpoch()])
  capsys.readouterr()
  with flagsaver.flagsaver(restart=True, **small):
    assert train.main(["train"]) == 130
  hint = capsys.readouterr().err
  assert "the command without --restart again to resume after epoch 1" in hint
  # The old run's outputs went when the new run started.
  assert os.listdir(tmp_path) == ["checkpoints"]
  monkeypatch.setattr(train, "make_callbacks", make_callbacks)
  with flagsaver.flagsaver(**small):
    assert train.main(["train"]) == 0
  assert "resuming after epoch 1" in capsys.readouterr().out
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["resumed_after_epoch"] == 1 and results["epochs"] == 2


def test_image_size_flag_resizes_a_folder_of_mixed_sizes(tmp_path, capsys):
  # pylint: disable-next=g-import-not-at-top
  from tests.data.test_images import write_sized_folder
  write_sized_folder(str(tmp_path / "data"), [(64, 64), (50, 90), (80, 60)],
                     per_class=(12, 4))
  out = tmp_path / "run"
  with flagsaver.flagsaver(data_dir=str(tmp_path / "data"), image_size="64",
                           resize="pad", epochs=1, batch_size=8,
                           output_dir=str(out), tensorboard=False):
    assert train.main(["train"]) == 0
  assert "fastcifar: test accuracy" in capsys.readouterr().out
  results = json.loads((out / "results.json").read_text())
  assert results["num_train_examples"] == 24
  # The seed CNN at 64x64, 2 classes (8 outputs fewer than at 10).
  assert results["num_parameters"] == 6_493_738 - 8 * 513
  loaded = models.load_saved(str(out / "model.keras"), compile=False)
  assert tuple(loaded.inputs[0].shape) == (None, 64, 64, 3)


@pytest.fixture
def user_module_dir(tmp_path, monkeypatch) -> str:
  """A folder holding a user's mymodule.py (a small ResNet), on sys.path."""
  # pylint: disable-next=g-import-not-at-top
  from tests.training.test_fit import USER_MODULE
  folder = tmp_path / "user"
  folder.mkdir()
  (folder / "mymodule.py").write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(folder))
  monkeypatch.delitem(sys.modules, "mymodule", raising=False)
  return str(folder)


def test_a_users_model_trains_and_evaluates_with_no_data_flag(
    tmp_path, small_npz, user_module_dir, capsys, command_server):
  out = tmp_path / "run"
  # Trained in this process, its module found on sys.path as PYTHONPATH
  # puts it there (the process is not the point: run_in_process's tests
  # check the same import of a user's model); evaluated by the command, a
  # process of its own (its --model is not fastcifar.train's), forked from
  # the command server with the user's folder on PYTHONPATH.
  with flagsaver.flagsaver(model="mymodule:build", data_dir=small_npz,
                           epochs=1, train_examples=256, batch_size=64,
                           output_dir=str(out)):
    assert train.main(["train"]) == 0
  assert "fastcifar: mymodule:build model" in capsys.readouterr().out
  results = json.loads((out / "results.json").read_text())
  assert results["model"] == "mymodule:build"
  assert results["config"]["data"]["data_dir"] == small_npz
  evaluated = command_server.run(
      "fastcifar.evaluate", [f"--model={out / 'model.keras'}"],
      cwd=str(tmp_path), env={"PYTHONPATH": user_module_dir})
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert "on the small test split" in evaluated.stdout
  # Its accuracy is training's own of the test set (256 images).
  assert (f"accuracy {results['test_accuracy']:.4f}"
          in evaluated.stdout.splitlines()[1]), evaluated.stdout


@pytest.mark.parametrize("model,fragments", [
    ("nosuchmodule:build", ["--model=nosuchmodule:build",
                            "cannot import nosuchmodule", "PYTHONPATH"]),
    ("mymodule:missing", ["mymodule has no function missing"]),
    ("mymodule:not_a_model", ["mymodule:not_a_model returned str, not a "
                              "keras.Model"]),
])
def test_a_users_bad_model_gets_one_line(model, fragments, capsys, small_npz,
                                        user_module_dir):
  del user_module_dir  # on sys.path
  assert_one_line_error(run_in_process(
      capsys, f"--model={model}", f"--data_dir={small_npz}", "--epochs=1",
      "--batch_size=64"), *fragments)


@pytest.mark.parametrize("epochs,early_stopping", [("auto", True),
                                                   ("3", False)])
def test_the_doctor_knows_an_auto_epochs_run_stops_early(epochs,
                                                         early_stopping):
  # pylint: disable-next=g-import-not-at-top
  from fastcifar import doctor
  from fastcifar.data import sources  # pylint: disable=g-import-not-at-top
  dataset = sources.load_synthetic(num_train=64, num_test=8, seed=0)
  with flagsaver.flagsaver(epochs=epochs):
    watches = [c for c in train.make_callbacks(dataset, None, 0, True)
               if isinstance(c, doctor.Watch)]
  assert [w.early_stopping for w in watches] == [early_stopping]
