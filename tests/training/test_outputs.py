"""Atomic outputs: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import keras
import pytest

from fastcifar import models
from fastcifar.training import outputs
from fastcifar.errors import UsageError


def test_kill_during_saves_leaves_loadable_files(tmp_path, command_server):
  # tests/training/rewrite_forever.py, forked from the command server
  # (tests/forked.py): a process of its own to kill inside a save, without
  # a TensorFlow import each.
  for delay in (0.05, 0.3, 0.7):
    writer = command_server.start("tests.training.rewrite_forever",
                                  [str(tmp_path)])
    writer.printed(bool)  # one complete round is on disk
    time.sleep(delay)  # then kill somewhere inside a later save
    writer.kill()
    assert writer.wait(60) == -signal.SIGKILL
    assert json.loads((tmp_path / "results.json").read_text())["i"] >= 1
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.count_params() == 1_250_858


def test_disk_full_keeps_the_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "model.keras")
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3)
  outputs.save_model(model, path)
  before = open(path, "rb").read()

  def full_disk(self, filepath, *args, **kwargs):
    with open(filepath, "wb") as f:
      f.write(b"half a model")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(keras.Model, "save", full_disk)
  with pytest.raises(UsageError, match="No space left on device"):
    outputs.save_model(model, path)
  assert open(path, "rb").read() == before
  assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no debris


def test_write_json_round_trip(tmp_path):
  outputs.write_json(str(tmp_path / "a.json"), {"b": [1.5, 2]})
  assert json.loads((tmp_path / "a.json").read_text()) == {"b": [1.5, 2]}


@pytest.fixture
def umask_027():
  old = os.umask(0o027)
  yield 0o640  # 0666 & ~umask
  os.umask(old)


def test_outputs_get_the_mode_of_any_new_file(tmp_path, umask_027):
  # Not mkstemp's 0600: TensorBoard under another account, other workers
  # and shared data folders must read them.
  from fastcifar.data import sources  # pylint: disable=g-import-not-at-top
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3)
  outputs.save_model(model, str(tmp_path / "model.keras"))
  outputs.write_json(str(tmp_path / "results.json"), {"a": 1})
  sources.save_prepared(
      sources.load_synthetic(num_train=8, num_test=8, seed=0),
      sources.prepared_path(str(tmp_path), "cifar10"))
  modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
  assert modes == {"model.keras": umask_027, "results.json": umask_027,
                   "fastcifar-cifar10.npz": umask_027}


def test_a_shard_folder_gets_the_mode_of_any_new_folder(tmp_path, umask_027):
  # Not mkdtemp's 0700 around files of 0640: others in the group read both.
  from fastcifar.data import sources  # pylint: disable=g-import-not-at-top
  data = sources.load_synthetic(num_train=8, num_test=8, seed=0)
  path = sources.shards_path(str(tmp_path), "cifar10")
  sources.write_shards(path, data.name, data.class_names,
                       sources.array_chunks(data), sources.array_counts(data))
  assert os.stat(path).st_mode & 0o777 == 0o750  # 0777 & ~umask
  assert {(p.stat().st_mode & 0o777) for p in tmp_path.glob("*/*")} == {
      umask_027}
