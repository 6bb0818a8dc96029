"""The command server's forked runs are processes of their own."""

from __future__ import annotations

import json
import os
import signal
import time


def test_a_forked_run_trains_exits_and_reports_as_a_process(
    command_server, small_npz_16, tmp_path):
  run = command_server.start(
      "fastcifar.train", ["--epochs=1", "--train_examples=128",
                          "--batch_size=64", f"--data_dir={small_npz_16}",
                          "--output_dir=out"],
      cwd=str(tmp_path), env={"FASTCIFAR_FORKED_TEST": "1"})
  assert run.pid not in (os.getpid(), command_server._process.pid)
  assert run.wait(120) == 0, run.stderr
  # It ran in the folder it was given, and trained.
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  assert results["num_train_examples"] == 128
  assert run.stdout.startswith("fastcifar: seed model")  # its own stdout
  assert "test accuracy" in run.stdout


def test_a_forked_runs_errors_and_signals_are_its_own(command_server,
                                                      tmp_path):
  # Any command, with its own flags (train's and evaluate's clash).
  for module, args in (("fastcifar.train", ["--epochs=-1"]),
                       ("fastcifar.evaluate", [f"--model={tmp_path}/no"])):
    bad = command_server.start(module, args)
    assert bad.stdout == ""  # readable before the run has written
    deadline = time.monotonic() + 60
    while bad.poll() is None:  # poll alone sees it end, as Popen's does
      assert time.monotonic() < deadline
      time.sleep(0.02)
    assert bad.wait(0) == 2
    bad.kill()  # an ended run is not signalled (its pid may be another's)
    assert bad.stderr.startswith(f"{module}: error:")
    assert bad.stderr.count("\n") == 1 and bad.stdout == ""  # one line
  # A run killed as it starts ends as subprocess says a killed one does;
  # the server forks the next as before.
  run = command_server.start(
      "fastcifar.train", ["--dataset=synthetic", f"--output_dir={tmp_path}"])
  run.kill()
  assert run.wait(30) == -signal.SIGKILL
