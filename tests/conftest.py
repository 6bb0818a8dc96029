"""Shared test fixtures: the real CIFAR-10 copy when present, global-state
resets, and a loopback HTTP mirror of the CIFAR page."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import os
import platform
import sys
import threading

from fastcifar.cli import cpu

# TensorFlow's oneDNN kernels in this process and every one the tests start,
# as fastcifar's commands run them (before anything imports TensorFlow):
# tests compare runs in this process with commands' runs bit for bit.
cpu.enable_onednn()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import keras
import pytest

from fastcifar.data import sources
from fastcifar.data.sources import download

# Entry points' flags keep their defaults unless a test sets them with
# flagsaver; pytest's own argv is not absl's to parse.
flags.FLAGS.mark_as_parsed()

# Where TensorFlow's x86 Linux wheel runs oneDNN's kernels once told to
# (fastcifar.cli.cpu turns them on there).
X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"

REAL_CIFAR10 = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                            "data", "cifar10-jpg.tar.gz")


def pytest_collection_modifyitems(items) -> None:
  """Tests marked slow run first, the rest in their order.

  pytest-xdist's `-n 2` hands tests out in collection order; a slow test
  collected last (tests/training/ is) keeps one worker busy for a minute
  while the other has nothing left. First, the other worker takes the many
  short tests meanwhile, and the run ends on short ones.
  """
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def real_cifar10_path() -> str:
  """Path of the real CIFAR-10 JPEG copy in ../shared; skips when absent."""
  if not os.path.isfile(REAL_CIFAR10):
    pytest.skip("real CIFAR-10 copy not found at ../shared/data")
  return REAL_CIFAR10


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory) -> str:
  """Synthetic data, 1,280 train and 256 test images, as a prepared .npz.

  For runs in a process of their own whose point is not the data:
  `--dataset=synthetic` generates all 60,000 images (seconds per process)
  and validates on 10,000 after every epoch.
  """
  path = str(tmp_path_factory.mktemp("data") / "fastcifar-small.npz")
  sources.save_prepared(sources.load_synthetic(num_train=1280, num_test=256,
                                               seed=0), path)
  return path


def halved(data: sources.ImageDataset) -> sources.ImageDataset:
  """`data` at half the height and width: every other pixel.

  For runs whose point is neither the pixels nor the size: the seed CNN's
  step costs a quarter (resizing would cost more than it saves).
  """
  return dataclasses.replace(data, train_images=data.train_images[:, ::2, ::2],
                             test_images=data.test_images[:, ::2, ::2])


@pytest.fixture(scope="session")
def small_npz_16(tmp_path_factory) -> str:
  """`small_npz` resized to 16x16 (as `--image_size=16` does), a .npz.

  Resized once here rather than by every process that reads it.
  """
  path = str(tmp_path_factory.mktemp("data") / "fastcifar-small-16.npz")
  sources.save_prepared(sources.resize_dataset(sources.load_synthetic(
      num_train=1280, num_test=256, seed=0), (16, 16)), path)
  return path


@pytest.fixture(autouse=True)
def _restore_keras_policy():
  """Every test leaves Keras's global dtype policy as it found it."""
  before = keras.mixed_precision.global_policy().name
  yield
  keras.mixed_precision.set_global_policy(before)


@contextlib.contextmanager
def op_determinism_restored():
  """A deterministic run inside does not make what follows it so.

  (TensorFlow's op determinism has no public switch back: a run turns it
  on for good, and XLA, for one, refuses some ops under it.)
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import config as tf_config
  before = tf_config.is_op_determinism_enabled()
  try:
    yield
  finally:
    if not before and tf_config.is_op_determinism_enabled():
      tf_config.disable_op_determinism()


@pytest.fixture(autouse=True)
def _restore_op_determinism():
  """A test's deterministic run does not make the tests after it so."""
  with op_determinism_restored():
    yield


# --- A loopback mirror of the CIFAR page --------------------------------------

_CIFAR10_ARCHIVE = download.ARCHIVES["cifar10"][0]


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves `server.files`; `server.short` names files sent cut in half."""

  def do_GET(self):  # pylint: disable=invalid-name
    self.server.requests.append(self.path)
    body = self.server.files.get(self.path.lstrip("/"))
    if body is None:
      self.send_error(404)
      return
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.path.lstrip("/") in self.server.short:
      body = body[:len(body) // 2]  # then HTTP/1.0 closes the connection
    self.wfile.write(body)

  def log_message(self, *args):  # keep the test output clean
    del args


def cifar10_archive(root, seed: int) -> tuple[bytes, tuple]:
  """A tiny cifar-10-python.tar.gz (100 train, 10 test images), arrays."""
  # pylint: disable=g-import-not-at-top
  from tests.data.test_sources import tar_gz, write_cifar10_python
  folder, arrays = write_cifar10_python(str(root), seed=seed, per_batch=20,
                                        num_test=10)
  with open(tar_gz(folder, str(root / _CIFAR10_ARCHIVE)), "rb") as f:
    return f.read(), arrays


@pytest.fixture
def mirror(tmp_path, monkeypatch):
  """A loopback server with a tiny archive; its hash counts as official."""
  data, arrays = cifar10_archive(tmp_path / "build", seed=3)
  monkeypatch.setitem(download.ARCHIVES, "cifar10",
                      (_CIFAR10_ARCHIVE, hashlib.sha256(data).hexdigest()))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.delenv(download.MIRROR_ENV, raising=False)
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  server.files = {_CIFAR10_ARCHIVE: data}
  server.short, server.requests = set(), []
  server.arrays = arrays
  server.url = f"http://127.0.0.1:{server.server_address[1]}/"
  thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                            daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()


@pytest.fixture(scope="session")
def pad_run(tmp_path_factory) -> str:
  """model.keras of a run trained on images resized by pad: its path.

  Non-square images (50x90, 80x60): pad and crop give other pixels.
  """
  # pylint: disable=g-import-not-at-top
  from fastcifar.training import trainer
  from tests.data.test_images import write_sized_folder
  root = tmp_path_factory.mktemp("pad")
  write_sized_folder(str(root / "data"), [(64, 64), (50, 90), (80, 60)],
                     per_class=(12, 4))
  data = sources.load(data_dir=str(root / "data"), image_size=(32, 32),
                      resize="pad")
  trainer.train_and_evaluate(
      trainer.Config(epochs=1, batch_size=8, precision="float32"), data,
      str(root / "run"), verbose=0)
  return str(root / "run" / "model.keras")


@pytest.fixture(scope="session")
def command_server():
  """A `tests.forked.CommandServer` for every command, one a worker.

  For tests whose point is a process but not a fresh interpreter: each run
  forked from it skips the ~7 s import.
  """
  from tests import forked  # pylint: disable=g-import-not-at-top
  with forked.CommandServer() as server:
    yield server
