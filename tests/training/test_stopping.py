"""Stop means stop: SIGTERM and Ctrl-C end a run within seconds, resumably."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from fastcifar.data import sources
from fastcifar.training import checkpointing, stopping

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")

@pytest.mark.slow
def test_sigterm_at_6_random_moments_always_stops_and_resumes(
    tmp_path, command_server):
  """One run, stopped 6 times and started again each time.

  Half the moments fall within 3 s after the attempt's first save (before:
  in the 6 s after training had begun): the first call
  (tracing the step and compiling its augmentation with XLA: 3.3 s measured
  here when the update was compiled too) and the steps after it, where with
  4 steps per epoch and a checkpoint after each epoch, steps and saves
  alternate quickly; half in start-up (imports, data loading, model
  building, the first steps), one in each third of a window 1.5 times the
  time to the run's first line in the first attempt (a fresh interpreter,
  as theirs). The window spans start-up as long as it takes on this
  machine, evenly (a fixed 9 s spent
  most of its moments, where start-up is quick, in the training the other
  half covers). (A window of 3 s after the first line ended, under a
  loaded CI, before the first epoch's checkpoint in every attempt once the
  step compiled its augmentation: no run had anything to resume.) The last
  third falls after the first line (unless start-up slowed by a third
  since), so at least 4 stops are handled by fastcifar rather than by the
  default action. A signal that comes while Python is still importing ends
  the process by its default action, before anything is written. (Six
  moments, not ten: every start-up attempt is a TensorFlow start-up,
  seconds of the suite's time, and six still hit each kind of moment:
  three in the steps and saves after a save, the last two resuming a
  stopped run; in start-up, one in Python's imports, one as they end and
  the data and model are made, one after the first line, in the first
  steps.) The two attempts that resume are forked from the command server
  (tests/forked.py): processes of their own, signalled inside training,
  without a TensorFlow import each; the start-up ones and the first keep a
  fresh interpreter, as a start-up's moments are the point.
  """
  data = str(tmp_path / "fastcifar-tiny.npz")
  sources.save_prepared(sources.load_synthetic(num_train=128, num_test=64,
                                               seed=0), data)
  output_dir = str(tmp_path / "run")
  # 16x16 images, batch 32: a step an eighth of 32x32 at 64, so that epochs
  # end within the 6 s windows on a slow CPU too (float32 on a 2-core AVX2
  # AMD EPYC under a loaded CI: no epoch ended in them, nothing to resume).
  args = [f"--data_dir={data}",
          "--image_size=16", "--epochs=1000", "--validation_freq=1000",
          "--batch_size=32",
          "--precision=float32", "--nopreflight", "--notensorboard",
          f"--output_dir={output_dir}"]
  rng = random.Random(15)
  resumed = handled = 0
  start_up = [(third + rng.random()) / 3 for third in range(3)]
  rng.shuffle(start_up)
  to_first_line = 0.0  # the start-up window is 1.5 times the first's
  for attempt in range(6):
    before = checkpointing.latest_epoch(output_dir)
    if attempt in (2, 4):  # after a save: a process, not an interpreter
      process = command_server.start("fastcifar.train", args)
    else:
      process = subprocess.Popen(
          [sys.executable, "-m", "fastcifar.train", *args], env=ENV,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
          cwd=REPO_ROOT)
    started = time.monotonic()
    if attempt % 2 == 0:  # after training has begun
      if attempt:
        lines = process.printed(
            lambda lines: len(lines) >= (2 if before else 1))
      else:  # a fresh interpreter's, whose start-up sizes the window
        lines = [process.stdout.readline()]
        to_first_line = time.monotonic() - started
      assert lines[0].startswith("fastcifar: seed model"), (
          lines, process.communicate())
      if before:
        assert f"resuming after epoch {before} " in lines[1], lines
        resumed += 1
      # Once this attempt has saved, at a random moment of the steps and
      # saves after it: on a slow or loaded CPU a fixed window could end
      # before any epoch did, leaving nothing to resume.
      deadline = time.monotonic() + 60
      while ((checkpointing.latest_epoch(output_dir) or 0) <= (before or 0)
             and time.monotonic() < deadline and process.poll() is None):
        time.sleep(0.05)
      time.sleep(rng.uniform(0, 3))
    else:  # start-up: imports, data loading, model building, first steps
      time.sleep(start_up.pop() * 1.5 * to_first_line)
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    try:
      _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      pytest.fail(f"attempt {attempt}: still running 10 s after SIGTERM")
    where = (f"attempt {attempt}, {stopped - started:.1f} s after start, "
             f"{time.monotonic() - stopped:.1f} s to stop")
    after = checkpointing.latest_epoch(output_dir)
    assert "Traceback" not in err, (where, err[-3000:])
    if process.returncode == -signal.SIGTERM:
      # Still importing Python modules: the signal's default action ended
      # the process before fastcifar.train.run installed its handler.
      assert after == before, where
      continue
    assert process.returncode == 130, (where, err[-3000:])
    assert "\nfastcifar.train: interrupted;" in err, (where, err[-3000:])
    # The last completed checkpoint survives whatever the moment was.
    assert (after or 0) >= (before or 0), where
    handled += 1
    if after:
      assert f"resume after epoch {after} " in err, (where, err[-3000:])
  # Every attempt after the first that waited for a save resumes (2).
  assert handled >= 4 and resumed >= 2


def test_a_context_left_at_once_leaves_the_watchdog_quiet(monkeypatch):
  # A bad flag leaves the context before the watchdog first waits; closing
  # its socket under it used to print a thread traceback.
  errors = []
  monkeypatch.setattr(threading, "excepthook", errors.append)
  for _ in range(300):
    with stopping.StopOnSignal(lambda: "hint"):
      pass
  assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGTERM],
                                     [signal.SIGINT, signal.SIGINT]],
                         ids=["sigterm", "ctrl_c_twice"])
def test_a_hung_output_folder_cannot_keep_a_stopped_run_alive(
    tmp_path, small_npz_16, signals, command_server):
  """A stop request ends a run blocked inside TensorFlow, from the watchdog.

  One SIGTERM: after the grace (7 s); a second Ctrl-C: at once. The line
  comes from what the process knows, not from the hung folder. (These
  processes are the watchdog's and the second Ctrl-C's tests, once made
  with a queue that blocked: the command's own run shows both.) The run,
  tests/training/hung_train.py, is forked from the command server
  (tests/forked.py): a process of its own, stopped inside training, without
  a TensorFlow import.
  """
  process = command_server.start(
      "tests.training.hung_train",
      [f"--data_dir={small_npz_16}", "--epochs=2", "--train_examples=256",
       "--batch_size=64", "--nopreflight", "--notensorboard",
       f"--output_dir={tmp_path / 'run'}"])
  # Its save has begun: "saving" ends a line (after the progress bar's).
  process.printed(
      lambda lines: any(line.endswith("saving\n") for line in lines))
  time.sleep(0.5)
  start = time.monotonic()
  for signum in signals:
    process.send_signal(signum)
    time.sleep(0.5)
  try:
    _, err = process.communicate(timeout=10)
  except subprocess.TimeoutExpired:
    process.kill()
    pytest.fail("still running 10 s after the stop request")
  took = time.monotonic() - start
  # One signal: the watchdog's grace (7 s); a second: at once.
  assert took < (1.5 if len(signals) == 2 else 9), took
  assert process.returncode == 130
  assert "Traceback" not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith("fastcifar.train: interrupted; no checkpoint was "
                         "saved yet"), last
  assert ("[second stop request]" if len(signals) == 2
          else "[did not stop within 7 s]") in last
