"""Tests for fastcifar.data.sources: every format, every refusal, every attack.

All data is generated here, small and seeded, in the layouts the real files
use; only `test_real_cifar10_jpeg_copy` reads the real CIFAR-10 copy, and it
skips when that copy is absent.
"""

from __future__ import annotations

import codecs
import collections
import functools
import importlib
import inspect
import io
import logging
import os
import pickle
import re
import shutil
import struct
import tarfile
import time
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.data.sources import (cifar_archives, image_folder, prepared,
                               tfds_source)
from fastcifar.data.sources.dataset import is_aligned

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                 "frog", "horse", "ship", "truck")


# --- Writers for the official layouts ----------------------------------------


class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes pickles the way Python 2's cPickle wrote the CIFAR batches.

  Strings are Python 2 `str` (SHORT_BINSTRING/BINSTRING opcodes, which
  Python 3 reads as bytes under encoding="bytes") and numpy's reconstructor
  is named `numpy.core.multiarray`, as in the files on the CIFAR page. A
  Python 3 pickle at protocol 2 would instead call `_codecs.encode`, which
  the real files never do.
  """

  dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

  def save_str8(self, obj):
    data = obj.encode("latin1") if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
    self.memoize(obj)

  dispatch[bytes] = save_str8
  dispatch[str] = save_str8

  def save_global(self, obj, name=None):
    module = obj.__module__.replace("numpy._core", "numpy.core")
    name = name or obj.__qualname__
    self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
    self.memoize(obj)


def _py2_pickle(obj) -> bytes:
  buffer = io.BytesIO()
  _Py2Pickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue()


def _planar_rows(images: np.ndarray) -> np.ndarray:
  """CIFAR's row layout, written out index by index (not by a transpose).

  Pixel (y, x) of channel c is at column c*1024 + y*32 + x, so this is an
  independent check of the reshape/transpose the reader does.
  """
  n = len(images)
  rows = np.zeros((n, 3072), np.uint8)
  y, x, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3),
                        indexing="ij")
  rows[:, (c * 1024 + y * 32 + x).reshape(-1)] = images.reshape(n, -1)
  return rows


def _known_image() -> np.ndarray:
  """An image whose every pixel says where it is: red=y, green=x, blue=c."""
  y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  return np.stack([y * 8, x * 8, 255 - (y + x) * 4], -1).astype(np.uint8)


def _random_split(rng, n: int, num_classes: int):
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, n)
  return images, labels


def _expected(rng, num_train, num_test, num_classes):
  """Random splits with the known image first in train."""
  train_images, train_labels = _random_split(rng, num_train, num_classes)
  test_images, test_labels = _random_split(rng, num_test, num_classes)
  train_images[0] = _known_image()
  return train_images, train_labels, test_images, test_labels


def write_cifar10_python(root, seed: int = 0, per_batch: int = 3,
                         num_test: int = 4, labels_override=None):
  """Writes cifar-10-batches-py/ under `root` as on the CIFAR page.

  Returns:
    (folder, (train_images, train_labels, test_images, test_labels)).
  """
  rng = np.random.default_rng(seed)
  arrays = _expected(rng, 5 * per_batch, num_test, 10)
  if labels_override is not None:
    arrays[1][:len(labels_override)] = labels_override
  folder = os.path.join(root, "cifar-10-batches-py")
  os.makedirs(folder)

  def write(name, obj):
    with open(os.path.join(folder, name), "wb") as f:
      f.write(_py2_pickle(obj))

  for i in range(5):
    part = slice(i * per_batch, (i + 1) * per_batch)
    write(f"data_batch_{i + 1}", {
        "batch_label": f"training batch {i + 1} of 5",
        "labels": [int(v) for v in arrays[1][part]],
        "data": _planar_rows(arrays[0][part]),
        "filenames": [f"img_{j}.png" for j in range(per_batch)],
    })
  write("test_batch", {"batch_label": "testing batch 1 of 1",
                       "labels": [int(v) for v in arrays[3]],
                       "data": _planar_rows(arrays[2])})
  write("batches.meta", {"label_names": list(CIFAR10_NAMES),
                         "num_cases_per_batch": per_batch,
                         "num_vis": 3072})
  with open(os.path.join(folder, "readme.html"), "w") as f:
    f.write("<html></html>")
  return folder, arrays


def write_cifar100_python(root, seed: int = 0):
  """Writes cifar-100-python/{train,test,meta} under `root`."""
  rng = np.random.default_rng(seed)
  arrays = _expected(rng, 12, 5, 100)
  folder = os.path.join(root, "cifar-100-python")
  os.makedirs(folder)
  fine_names = [f"fine{i:02d}" for i in range(100)]
  for name, images, labels in (("train", arrays[0], arrays[1]),
                               ("test", arrays[2], arrays[3])):
    with open(os.path.join(folder, name), "wb") as f:
      f.write(_py2_pickle({
          "filenames": [f"{j}.png" for j in range(len(images))],
          "batch_label": f"{name} batch",
          "fine_labels": [int(v) for v in labels],
          "coarse_labels": [int(v) // 5 for v in labels],
          "data": _planar_rows(images),
      }))
  with open(os.path.join(folder, "meta"), "wb") as f:
    f.write(_py2_pickle({
        "fine_label_names": fine_names,
        "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
    }))
  return folder, arrays, tuple(fine_names)


def write_cifar10_binary(root, seed: int = 0, per_batch: int = 3,
                         num_test: int = 4):
  """Writes cifar-10-batches-bin/ under `root`: label byte + 3072 pixels."""
  rng = np.random.default_rng(seed)
  arrays = _expected(rng, 5 * per_batch, num_test, 10)
  folder = os.path.join(root, "cifar-10-batches-bin")
  os.makedirs(folder)

  def records(images, labels):
    return np.concatenate([np.asarray(labels, np.uint8)[:, None],
                           _planar_rows(images)], axis=1).tobytes()

  for i in range(5):
    part = slice(i * per_batch, (i + 1) * per_batch)
    with open(os.path.join(folder, f"data_batch_{i + 1}.bin"), "wb") as f:
      f.write(records(arrays[0][part], arrays[1][part]))
  with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
    f.write(records(arrays[2], arrays[3]))
  with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
    f.write("\n".join(CIFAR10_NAMES) + "\n\n")  # the real file ends blank
  return folder, arrays


def write_cifar100_binary(root, seed: int = 0):
  """Writes cifar-100-binary/ under `root`: coarse, fine, 3072 pixels."""
  rng = np.random.default_rng(seed)
  arrays = _expected(rng, 6, 3, 100)
  folder = os.path.join(root, "cifar-100-binary")
  os.makedirs(folder)
  for name, images, labels in (("train.bin", arrays[0], arrays[1]),
                               ("test.bin", arrays[2], arrays[3])):
    coarse = np.asarray(labels, np.uint8) // 5
    with open(os.path.join(folder, name), "wb") as f:
      f.write(np.concatenate([coarse[:, None],
                              np.asarray(labels, np.uint8)[:, None],
                              _planar_rows(images)], axis=1).tobytes())
  names = tuple(f"fine{i:02d}" for i in range(100))
  with open(os.path.join(folder, "fine_label_names.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
  return folder, arrays, names


def tar_gz(folder: str, archive: str) -> str:
  """Packs `folder` into `archive` under its own name, as CIFAR's do."""
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(folder, arcname=os.path.basename(folder))
  return archive


def _png(image: np.ndarray) -> bytes:
  return tf.io.encode_png(image).numpy()


def write_image_folder(root, classes=("dog", "cat", "bird"), per_class=(3, 2),
                       seed: int = 0):
  """Writes ROOT/{train,test}/<class>/NNN.png; returns the expected arrays.

  Classes are given unsorted on purpose: ids must come from sorted names.
  """
  rng = np.random.default_rng(seed)
  expected = {}
  for split, count in zip(("train", "test"), per_class):
    images, labels = [], []
    for class_id, name in enumerate(sorted(classes)):
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        with open(os.path.join(root, split, name, f"{i:03d}.png"), "wb") as f:
          f.write(_png(image))
        images.append(image)
        labels.append(class_id)
    expected[split] = (np.stack(images), np.array(labels))
  return expected


def _assert_arrays(dataset, arrays):
  train_images, train_labels, test_images, test_labels = arrays
  np.testing.assert_array_equal(dataset.train_images, train_images)
  np.testing.assert_array_equal(dataset.train_labels, train_labels)
  np.testing.assert_array_equal(dataset.test_images, test_images)
  np.testing.assert_array_equal(dataset.test_labels, test_labels)
  for array, dtype in ((dataset.train_images, np.uint8),
                       (dataset.test_images, np.uint8),
                       (dataset.train_labels, np.int32),
                       (dataset.test_labels, np.int32)):
    assert array.dtype == dtype


def _load_traced(path: str):
  """`sources.load_path(path)` and the peak bytes Python allocated for it."""
  tracemalloc.start()
  try:
    data = sources.load_path(path)
    return data, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def _tree(root) -> set[str]:
  """Every path below `root`, to prove a load wrote nothing."""
  found = set()
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      found.add(os.path.relpath(os.path.join(dirpath, name), root))
  return found


# --- Synthetic ---------------------------------------------------------------


def test_synthetic_shapes_dtypes_and_labels():
  data = sources.load_synthetic(num_train=300, num_test=70, num_classes=7,
                                seed=3)
  assert data.name == "synthetic"
  assert data.train_images.shape == (300, 32, 32, 3)
  assert data.test_images.shape == (70, 32, 32, 3)
  assert data.train_images.dtype == np.uint8
  assert data.train_labels.dtype == np.int32
  assert data.num_classes == 7
  for labels in (data.train_labels, data.test_labels):
    assert labels.min() >= 0 and labels.max() < 7
  assert len(np.unique(data.train_labels)) == 7
  # Not a constant image: the data has to carry a learnable signal.
  assert data.train_images.std() > 20


def test_synthetic_is_a_function_of_the_seed():
  a = sources.load_synthetic(num_train=64, num_test=16, seed=5)
  b = sources.load_synthetic(num_train=64, num_test=16, seed=5)
  c = sources.load_synthetic(num_train=64, num_test=16, seed=6)
  _assert_arrays(a, (b.train_images, b.train_labels, b.test_images,
                     b.test_labels))
  assert not np.array_equal(a.train_images, c.train_images)


def test_load_synthetic_through_load_uses_the_seed(monkeypatch):
  # CIFAR-sized by default; generating all 60,000 images takes seconds, so
  # the sizes are checked on the signature and the load on a small set.
  defaults = inspect.signature(sources.load_synthetic).parameters
  assert defaults["num_train"].default == 50_000
  assert defaults["num_test"].default == 10_000
  small = functools.partial(sources.load_synthetic, num_train=20, num_test=10)
  monkeypatch.setattr(sources, "load_synthetic", small)
  a = sources.load("synthetic", seed=1)
  np.testing.assert_array_equal(a.train_images, small(seed=1).train_images)
  assert not np.array_equal(a.train_images, small(seed=2).train_images)


# --- Official archives -------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_python(tmp_path, packed):
  folder, arrays = write_cifar10_python(str(tmp_path))
  path = tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz")) if packed \
      else folder
  data = sources.load_path(path)
  assert data.name == "cifar10"
  assert data.class_names == CIFAR10_NAMES
  assert len(data.train_images) == 15 and len(data.test_images) == 4
  _assert_arrays(data, arrays)
  # The known image comes back HWC, pixel for pixel.
  np.testing.assert_array_equal(data.train_images[0], _known_image())
  assert tuple(data.train_images[0, 5, 7]) == (40, 56, 207)


def test_cifar10_python_found_in_a_parent_folder(tmp_path):
  folder, arrays = write_cifar10_python(str(tmp_path / "extracted"))
  _assert_arrays(sources.load_path(str(tmp_path / "extracted")), arrays)
  # A folder holding the official archive name loads the archive.
  holder = tmp_path / "downloads"
  holder.mkdir()
  tar_gz(folder, str(holder / "cifar-10-python.tar.gz"))
  _assert_arrays(sources.load("cifar10", str(holder)), arrays)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar100_python(tmp_path, packed):
  folder, arrays, names = write_cifar100_python(str(tmp_path))
  path = tar_gz(folder, str(tmp_path / "cifar-100-python.tar.gz")) if packed \
      else folder
  data = sources.load_path(path, "cifar100")
  assert data.name == "cifar100"
  assert data.num_classes == 100 and data.class_names == names
  _assert_arrays(data, arrays)  # the fine labels, not the coarse ones


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_cifar10_binary(tmp_path, packed):
  folder, arrays = write_cifar10_binary(str(tmp_path))
  path = tar_gz(folder, str(tmp_path / "cifar-10-binary.tar.gz")) if packed \
      else folder
  data = sources.load_path(path)
  assert data.name == "cifar10"
  assert data.class_names == CIFAR10_NAMES
  _assert_arrays(data, arrays)
  np.testing.assert_array_equal(data.train_images[0], _known_image())


def test_cifar100_binary_takes_the_fine_label(tmp_path):
  folder, arrays, names = write_cifar100_binary(str(tmp_path))
  data = sources.load_path(folder, "cifar100")
  assert data.name == "cifar100" and data.class_names == names
  _assert_arrays(data, arrays)


@pytest.mark.parametrize("writer", [write_cifar10_python,
                                    write_cifar10_binary])
@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_archive_streams_into_one_aligned_array(tmp_path, writer, packed):
  # The loader before streaming held every member's bytes, their decoded
  # arrays and the concatenation at once: 2.0x the decoded bytes (binary)
  # to 2.7x (python) here, and its unaligned arrays were copied once more
  # by the input pipeline. Keeping each member's decoded rows until all
  # were read (then copying them into one array) was 1.8x. Now each member
  # is copied into the one array as it is read and dropped: 1.2x (binary)
  # to 1.5x (python) here, counting that array whole from the start (its
  # pages fill only as the members are copied in) and one member's bytes
  # being parsed.
  folder, arrays = writer(str(tmp_path), per_batch=600, num_test=600)
  path = tar_gz(folder, str(tmp_path / "packed.tar.gz")) if packed else folder
  data, peak = _load_traced(path)
  _assert_arrays(data, arrays)
  assert is_aligned(data.train_images) and is_aligned(data.test_images)
  decoded = data.train_images.nbytes + data.test_images.nbytes
  assert peak < 1.75 * decoded, peak / decoded


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_pickles_of_every_protocol_are_read(tmp_path, protocol):
  # Someone who re-packed the batches with Python 3: protocol 2 writes bytes
  # via _codecs.encode, protocol 5 arrays via numpy's _frombuffer.
  folder, arrays = write_cifar10_python(str(tmp_path), per_batch=2)
  train_images, train_labels, test_images, test_labels = arrays
  for name, images, labels in [
      *[(f"data_batch_{i + 1}", train_images[2 * i:2 * i + 2],
         train_labels[2 * i:2 * i + 2]) for i in range(5)],
      ("test_batch", test_images, test_labels)]:
    with open(os.path.join(folder, name), "wb") as f:
      f.write(pickle.dumps({b"batch_label": b"re-packed",
                            b"labels": [int(v) for v in labels],
                            b"data": _planar_rows(images),
                            b"filenames": [b"a.png"] * len(labels)},
                           protocol=protocol))
  _assert_arrays(sources.load_path(folder), arrays)
  rows = np.random.default_rng(protocol).integers(0, 256, (7, 3072),
                                                  dtype=np.uint8)
  batch = cifar_archives.safe_unpickle(pickle.dumps(
      {"data": rows, "name": b"\x00\xff", "sizes": np.float32([1.5])},
      protocol=protocol), "x")
  np.testing.assert_array_equal(batch["data"], rows)
  assert batch["name"] == b"\x00\xff" and batch["sizes"].dtype == np.float32


def test_out_of_band_buffers_are_refused_cleanly():
  buffers = []
  data = pickle.dumps({"data": pickle.PickleBuffer(np.zeros((2, 3072),
                                                            np.uint8))},
                      protocol=5, buffer_callback=buffers.append)
  assert buffers  # the array data really is outside the pickle
  with pytest.raises(UsageError, match=r"^f: refused: .*out of band") as e:
    cifar_archives.safe_unpickle(data, "f")
  assert "download" not in str(e.value)


class _EncodesWith:
  """Calls _codecs.encode as protocol 2 does, but with another codec."""

  def __init__(self, encoding: str):
    self.encoding = encoding

  def __reduce__(self):
    return codecs.encode, ("text", self.encoding)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("payload,name", [
    (lambda: _RunsACommand("true"), r"(posix|os)\.system"),
    (lambda: _CallsEval(), r"(builtins|__builtin__)\.eval"),
    (lambda: _EncodesWith("rot13"), r"_codecs\.encode\(\.\.\., 'rot13'\)"),
    (lambda: collections.OrderedDict(), r"collections\.OrderedDict"),
    (lambda: np.float64(1.0), r"numpy\._core\.multiarray\.scalar"),
], ids=["os.system", "eval", "codecs", "OrderedDict", "numpy-scalar"])
def test_anything_but_arrays_is_refused_by_its_first_name(protocol, payload,
                                                          name):
  data = pickle.dumps({"data": np.zeros((1, 3072), np.uint8),
                       "extra": [payload(), _CallsEval()]}, protocol=protocol)
  with pytest.raises(UsageError) as e:
    cifar_archives.safe_unpickle(data, "f")
  message = str(e.value)
  assert re.match(r"f: refused: the pickle holds something other than numpy "
                  r"arrays, lists, bytes and dicts \(it names " + name,
                  message), message
  assert "download" not in message and "\n" not in message


# --- Image folders -----------------------------------------------------------


def test_image_folder(tmp_path):
  root = tmp_path / "mini-images"
  expected = write_image_folder(str(root))
  data = sources.load_path(str(root))
  assert data.name == "mini-images"
  assert data.class_names == ("bird", "cat", "dog")
  _assert_arrays(data, (*expected["train"], *expected["test"]))


def test_image_folder_tar_gz(tmp_path):
  root = tmp_path / "cifar10-jpg"
  expected = write_image_folder(str(root))
  archive = tar_gz(str(root), str(tmp_path / "packed.tar.gz"))
  data = sources.load_path(archive)
  assert data.name == "cifar10-jpg"  # the folder inside, not the file name
  assert data.class_names == ("bird", "cat", "dog")
  _assert_arrays(data, (*expected["train"], *expected["test"]))


def test_image_folder_tar_is_decoded_as_it_streams(tmp_path, monkeypatch):
  # Holding every encoded file beside the decoded arrays (the loader before
  # streaming) peaked at 2.75x the decoded bytes here; streaming in chunks of
  # 50, at 1.65x (the rest: names and places, the chunk, tarfile's buffers).
  monkeypatch.setattr(image_folder, "_CHUNK", 50)
  root = tmp_path / "noise"
  # Enough images that the loader's fixed costs (and any other thread's
  # allocations, which tracemalloc also counts) stay small beside the data:
  # at 250 images a CI run once peaked at 2.13x.
  expected = write_image_folder(str(root), classes=("a", "b"),
                                per_class=(800, 200))
  archive = tar_gz(str(root), str(tmp_path / "noise.tar.gz"))
  sources.load_path(archive)  # TensorFlow's one-off allocations happen here
  data, peak = _load_traced(archive)
  _assert_arrays(data, (*expected["train"], *expected["test"]))
  decoded = data.train_images.nbytes + data.test_images.nbytes
  assert peak < 2.0 * decoded, peak / decoded


def test_image_folder_with_jpegs(tmp_path):
  rng = np.random.default_rng(0)
  blobs = {}
  for split in ("train", "test"):
    os.makedirs(tmp_path / split / "only")
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    blobs[split] = tf.io.encode_jpeg(image, quality=75).numpy()
    (tmp_path / split / "only" / "a.JPEG").write_bytes(blobs[split])
  data = sources.load_path(str(tmp_path))
  assert data.class_names == ("only",)
  # JPEG is lossy: what comes back is exactly what the decoder makes of it.
  np.testing.assert_array_equal(data.train_images[0],
                                tf.io.decode_jpeg(blobs["train"]).numpy())
  np.testing.assert_array_equal(data.test_images[0],
                                tf.io.decode_jpeg(blobs["test"]).numpy())


def test_image_folder_train_and_test_classes_must_match(tmp_path):
  write_image_folder(str(tmp_path))
  os.makedirs(tmp_path / "train" / "emu")
  (tmp_path / "train" / "emu" / "0.png").write_bytes(
      _png(np.zeros((32, 32, 3), np.uint8)))
  with pytest.raises(UsageError, match="'emu' is in only one"):
    sources.load_path(str(tmp_path))


def test_real_cifar10_jpeg_copy(real_cifar10_path):
  data = sources.load_path(real_cifar10_path)
  assert data.name == "cifar10-jpg"
  assert data.train_images.shape == (50_000, 32, 32, 3)
  assert data.test_images.shape == (10_000, 32, 32, 3)
  assert data.class_names == CIFAR10_NAMES
  np.testing.assert_array_equal(np.bincount(data.train_labels), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(data.test_labels), [1000] * 10)
  # Real photographs, not zeros from a silent decoding failure.
  assert 100 < data.train_images.mean() < 140
  assert data.train_images.std() > 50


# --- TFDS --------------------------------------------------------------------


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10),
                                              ("cifar100", 100)])
def test_tfds_through_load(tmp_path, monkeypatch, name, num_classes):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  version = tmp_path / name / "3.0.2"  # a prepared TFDS dataset, found first
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text("{}")
  # USE_CODE: the mock ignores the stand-in metadata file.
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = sources.load(name, download=False)
  assert data.name == name
  assert data.num_classes == num_classes
  assert data.train_images.shape == (6, 32, 32, 3)
  assert data.test_images.shape == (6, 32, 32, 3)
  assert data.train_images.dtype == np.uint8
  assert data.train_labels.dtype == np.int32
  assert 0 <= data.train_labels.min() and data.train_labels.max() < num_classes


def test_load_tfds_directly(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=3):
    data = tfds_source.load_tfds("cifar10", str(tmp_path), download=False)
  assert len(data.train_images) == 3 and data.num_classes == 10


def test_tfds_data_dir_is_detected_by_load_path(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  assert not tfds_source.is_tfds_dir(str(tmp_path), "cifar10")
  version = tmp_path / "cifar10" / "3.0.2"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text("{}")
  assert tfds_source.is_tfds_dir(str(tmp_path), "cifar10")
  assert not tfds_source.is_tfds_dir(str(tmp_path), "cifar100")
  # USE_CODE: the mock ignores the stand-in metadata file.
  with tfds.testing.mock_data(num_examples=5,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = sources.load("cifar10", str(tmp_path))
  assert data.name == "cifar10" and len(data.train_images) == 5


def test_nodownload_without_data_says_what_to_do(tmp_path, monkeypatch):
  importlib.import_module("tensorflow_datasets")  # not part of the timing
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  start = time.monotonic()
  with pytest.raises(UsageError) as error:
    sources.load("cifar10", None, download=False)
  assert time.monotonic() - start < 5
  message = str(error.value)
  assert "--data_dir" in message
  assert "--dataset=synthetic" in message
  assert "--nodownload" in message
  assert "\n" not in message


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory) -> str:
  """A TFDS data dir prepared by a tiny builder, as `download_and_prepare`
  leaves it: grayscale images of two sizes under other feature names than
  image/label, and only a train split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Unregistered: fastcifar reads it from its files, as a dataset whose code
  # is not installed; and a second module's copy of this fixture (in the
  # same worker) cannot collide with the first's name.
  class FastcifarTinyImages(tfds.core.GeneratorBasedBuilder,
                            skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      features = tfds.features.FeaturesDict({
          "picture": tfds.features.Image(shape=(None, None, 1)),
          "kind": tfds.features.ClassLabel(names=["round", "square", "star"]),
          "note": tfds.features.Text()})
      return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for i in range(20):
        size = (12, 12) if i % 2 else (16, 10)
        yield i, {"picture": rng.integers(0, 256, (*size, 1), np.uint8),
                  "kind": i % 3, "note": f"#{i}"}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  FastcifarTinyImages(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_any_tfds_dataset_from_its_data_dir(tiny_tfds_dir):
  with pytest.raises(UsageError, match="images differ in size"):
    sources.load("tfds:fastcifar_tiny_images", tiny_tfds_dir, download=False)
  data = sources.load("tfds:fastcifar_tiny_images", tiny_tfds_dir,
                      download=False, image_size=(12, 12))
  assert data.class_names == ("round", "square", "star")  # from info.features
  # No test split: TFDS's own slicing holds the last 10% of train out.
  assert (len(data.train_images), len(data.test_images)) == (18, 2)
  assert data.test_split.startswith("train[90%:]")
  assert data.image_shape == (12, 12, 3)
  for split in (data.train_images, data.test_images):  # gray made RGB
    np.testing.assert_array_equal(split[..., 0], split[..., 2])
  assert set(data.train_labels) == {0, 1, 2}


def test_tfds_flags_say_which_split_is_tested(tiny_tfds_dir, capsys):
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from fastcifar.cli import common as cli  # pylint: disable=g-import-not-at-top
  data_flags = cli.data_flags()
  with flagsaver.flagsaver(dataset="tfds:fastcifar_tiny_images",
                           data_dir=tiny_tfds_dir, image_size="12,8",
                           download=False):
    data = cli.load_data(data_flags, seed=0)
  assert data.image_shape == (12, 8, 3)
  assert ("tfds:fastcifar_tiny_images tests on train[90%:]"
          in capsys.readouterr().out)
  from absl import flags  # pylint: disable=g-import-not-at-top
  for bad in ("tfds:", "tfds:Two Words", "imagenet"):
    with pytest.raises(flags.IllegalFlagValueError, match="tfds:NAME"):
      with flagsaver.flagsaver(dataset=bad):
        pass


def test_tfds_name_through_mock_data(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = sources.load("tfds:svhn_cropped", download=False)
  assert data.name == "svhn_cropped" and data.num_classes == 10
  assert data.train_images.shape == (6, 32, 32, 3)
  assert data.test_split == "test"


def test_tfds_offline_and_unknown_names_fail_fast_in_one_line(tmp_path,
                                                              monkeypatch):
  importlib.import_module("tensorflow_datasets")  # not part of the timing

  def unreachable(*args, **kwargs):
    raise OSError("Network is unreachable")
  monkeypatch.setattr(tfds_source.socket, "create_connection", unreachable)
  start = time.monotonic()
  messages = []
  for name, download in (("tfds:cifar10", True), ("tfds:cifar10", False),
                         ("tfds:no_such_dataset", True),
                         ("tfds:glue/cola", False)):
    with pytest.raises(UsageError) as error:
      sources.load(name, str(tmp_path), download=download)
    messages.append(str(error.value))
  assert time.monotonic() - start < 30
  assert all("\n" not in m for m in messages)
  assert ("cannot download cifar10: no network (www.cs.toronto.edu"
          in messages[0])
  assert f"not prepared in {tmp_path}" in messages[1]
  assert "--download" in messages[1]
  assert "TFDS has no dataset of that name" in messages[2]
  assert "no single image feature and class label" in messages[3]


def test_unknown_dataset():
  with pytest.raises(UsageError, match="unknown dataset 'mnist'.*tfds:NAME"):
    sources.load("mnist")


# --- Prepared .npz -----------------------------------------------------------


def test_prepared_round_trip(tmp_path):
  original = sources.load_synthetic(num_train=40, num_test=12, num_classes=4,
                                    seed=9)
  path = sources.prepared_path(str(tmp_path), "cifar10")
  assert os.path.basename(path) == "fastcifar-cifar10.npz"
  sources.save_prepared(original, path)
  assert os.listdir(tmp_path) == ["fastcifar-cifar10.npz"]  # no temp left
  for loaded in (sources.load_path(path), sources.load_path(str(tmp_path)),
                 sources.load("cifar10", str(tmp_path))):
    assert loaded.name == "cifar10"
    assert loaded.class_names == original.class_names
    _assert_arrays(loaded, (original.train_images, original.train_labels,
                            original.test_images, original.test_labels))


def test_prepared_in_the_default_tfds_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  original = sources.load_synthetic(num_train=8, num_test=4, seed=1)
  sources.save_prepared(original,
                        sources.prepared_path(str(tmp_path), "cifar100"))
  loaded = sources.load("cifar100")
  np.testing.assert_array_equal(loaded.train_images, original.train_images)


def test_prepared_refuses_damaged_or_pickled_files(tmp_path):
  path = str(tmp_path / "fastcifar-x.npz")
  sources.save_prepared(
      sources.load_synthetic(num_train=8, num_test=4, seed=1), path)
  with open(path, "rb") as f:
    good = f.read()
  with open(path, "wb") as f:
    f.write(good[:len(good) // 2])
  with pytest.raises(UsageError, match="unreadable"):
    sources.load_path(path)

  # Object arrays need pickle; np.load(allow_pickle=False) must refuse them.
  np.savez(path, train_images=np.zeros((1, 32, 32, 3), np.uint8),
           train_labels=np.zeros(1, np.int32),
           test_images=np.zeros((1, 32, 32, 3), np.uint8),
           test_labels=np.zeros(1, np.int32),
           class_names=np.array([object()], dtype=object))
  with pytest.raises(UsageError, match="unreadable"):
    prepared.load_prepared(path)

  np.savez(path, train_images=np.zeros((1, 32, 32, 3), np.uint8))
  with pytest.raises(UsageError, match="no 'train_labels' array"):
    prepared.load_prepared(path)


def test_a_keras_layout_npz_is_read(tmp_path):
  # As keras.datasets.cifar10.load_data() returns them: y is (N, 1) uint8.
  data = sources.load_synthetic(num_train=40, num_test=20, seed=2)
  arrays = dict(x_train=data.train_images,
                y_train=data.train_labels.astype(np.uint8)[:, None],
                x_test=data.test_images,
                y_test=data.test_labels.astype(np.uint8)[:, None])
  path = str(tmp_path / "cifar10.npz")
  np.savez(path, **arrays)
  loaded = sources.load_path(path)
  assert loaded.name == "cifar10"
  assert loaded.class_names == tuple(str(c) for c in range(10))
  _assert_arrays(loaded, (data.train_images, data.train_labels,
                          data.test_images, data.test_labels))
  np.savez(path, **arrays, class_names=np.array(CIFAR10_NAMES))
  assert sources.load_path(path).class_names == CIFAR10_NAMES
  np.savez(path, **{**arrays, "y_test": np.array([object()] * 20)})
  with pytest.raises(UsageError, match="unreadable"):  # still no pickle
    sources.load_path(path)
  del arrays["y_test"]
  np.savez(path, **arrays)
  with pytest.raises(UsageError, match="no 'y_test' array; expected the "
                     "arrays of tools/prepare_data.py"):
    sources.load_path(path)


# --- Format detection and its messages ---------------------------------------


def test_nonexistent_path(tmp_path):
  with pytest.raises(UsageError, match="does not exist; expected a TFDS"):
    sources.load_path(str(tmp_path / "nowhere"))


def test_empty_folder(tmp_path):
  with pytest.raises(UsageError, match=r"is empty; expected"):
    sources.load_path(str(tmp_path))


def test_folder_of_unrelated_files(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "photo.png").write_bytes(
      _png(np.zeros((32, 32, 3), np.uint8)))
  with pytest.raises(UsageError, match="holds no dataset I recognise"):
    sources.load_path(str(tmp_path))


def test_file_that_is_not_an_archive(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("hello")
  with pytest.raises(UsageError, match="is not a folder, a tar archive or a "
                     ".npz"):
    sources.load_path(str(path))
  fake = tmp_path / "fake.tar.gz"
  fake.write_text("not gzip at all")
  with pytest.raises(UsageError, match="not a readable tar archive"):
    sources.load_path(str(fake))


@pytest.mark.parametrize("suffix,fraction", [(".tar.gz", 0.3),
                                             (".tar.gz", 0.7),
                                             (".tar.gz", 0.97),
                                             (".tar", 0.5)])
def test_truncated_tar(tmp_path, suffix, fraction):
  folder, _ = write_cifar10_python(str(tmp_path / "src"))
  full = str(tmp_path / f"full{suffix}")
  with tarfile.open(full, "w:gz" if suffix == ".tar.gz" else "w") as tar:
    tar.add(folder, arcname=os.path.basename(folder))
  with open(full, "rb") as f:
    data = f.read()
  cut = tmp_path / f"cut{suffix}"
  cut.write_bytes(data[:int(len(data) * fraction)])
  with pytest.raises(UsageError, match=r"cut\.tar(\.gz)?: the archive is "
                     "truncated or corrupt"):
    sources.load_path(str(cut))


def test_corrupt_image_is_named(tmp_path):
  write_image_folder(str(tmp_path))
  bad = tmp_path / "train" / "cat" / "001.png"
  bad.write_bytes(bad.read_bytes()[:40])
  with pytest.raises(UsageError, match=r"train/cat/001\.png is not a readable"):
    sources.load_path(str(tmp_path))


def test_an_image_of_another_size_is_named_with_the_fix(tmp_path):
  write_image_folder(str(tmp_path))
  (tmp_path / "test" / "dog" / "001.png").write_bytes(
      _png(np.full((16, 32, 3), 7, np.uint8)))
  with pytest.raises(UsageError) as error:
    sources.load_path(str(tmp_path))
  message = str(error.value)
  assert "test/dog/001.png is 16x32" in message
  assert "train/bird/000.png is 32x32" in message
  assert "--image_size=H[,W]" in message and "\n" not in message


@pytest.mark.parametrize("channels", [1, 4])
def test_grayscale_and_rgba_images_become_rgb(tmp_path, channels):
  write_image_folder(str(tmp_path))
  pixels = np.random.default_rng(0).integers(0, 256, (32, 32, channels),
                                             dtype=np.uint8)
  (tmp_path / "test" / "dog" / "001.png").write_bytes(_png(pixels))
  data = sources.load_path(str(tmp_path))
  rgb = data.test_images[-1]  # dog sorts last, 001 is its second image
  expected = np.repeat(pixels, 3, -1) if channels == 1 else pixels[..., :3]
  np.testing.assert_array_equal(rgb, expected)


def test_labels_out_of_range_in_an_archive(tmp_path):
  folder, _ = write_cifar10_python(str(tmp_path), labels_override=[10])
  archive = tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz"))
  with pytest.raises(UsageError, match=r"train labels range 0\.\.10 but there "
                     "are 10 classes"):
    sources.load_path(archive)


def test_binary_label_out_of_range_and_truncated_record(tmp_path):
  folder, _ = write_cifar10_binary(str(tmp_path))
  path = os.path.join(folder, "test_batch.bin")
  with open(path, "r+b") as f:
    f.write(bytes([200]))  # the first record's label byte
  with pytest.raises(UsageError, match=r"test labels range .*\.\.200"):
    sources.load_path(folder)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:-1])
  with pytest.raises(UsageError, match="not a whole number of 3073-byte"):
    sources.load_path(folder)


def test_pickle_that_is_not_a_batch(tmp_path):
  folder, _ = write_cifar10_python(str(tmp_path))
  with open(os.path.join(folder, "data_batch_3"), "wb") as f:
    f.write(pickle.dumps(["not", "a", "dict"]))
  with pytest.raises(UsageError, match="holds list, not a dict"):
    sources.load_path(folder)
  with open(os.path.join(folder, "data_batch_3"), "wb") as f:
    f.write(pickle.dumps({"labels": [1]}))
  with pytest.raises(UsageError, match="no 'data' entry"):
    sources.load_path(folder)


# --- Attacks -----------------------------------------------------------------


class _RunsACommand:
  """Unpickling this calls os.system: what a hostile 'CIFAR batch' would do."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


class _CallsEval:

  def __reduce__(self):
    return eval, ("__import__('os').system('true')",)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL,
                                      pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol,
                                                    packed):
  marker = tmp_path / "pwned"
  folder, _ = write_cifar10_python(str(tmp_path / "src"))
  hostile = {"data": _RunsACommand(f"touch {marker}"), "labels": [0]}
  with open(os.path.join(folder, "data_batch_2"), "wb") as f:
    f.write(pickle.dumps(hostile, protocol=protocol))
  path = tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz")) if packed \
      else folder
  with pytest.raises(UsageError, match=r"data_batch_2: refused: .* \(it names "
                     r"(posix|os)\.system"):
    sources.load_path(path)
  assert not marker.exists()


def test_malicious_pickle_in_the_meta_file(tmp_path):
  marker = tmp_path / "pwned"
  folder, _ = write_cifar10_python(str(tmp_path))
  with open(os.path.join(folder, "batches.meta"), "wb") as f:
    f.write(pickle.dumps({"label_names": _RunsACommand(f"touch {marker}")}))
  with pytest.raises(UsageError, match="refused"):
    sources.load_path(folder)
  with open(os.path.join(folder, "batches.meta"), "wb") as f:
    f.write(pickle.dumps({"label_names": _CallsEval()}))
  with pytest.raises(UsageError, match="it names builtins.eval"):
    sources.load_path(folder)
  assert not marker.exists()


def test_the_hostile_pickle_would_run_without_the_guard(tmp_path):
  # Guards the test above: the payload really does run under plain pickle.
  marker = tmp_path / "pwned"
  pickle.loads(pickle.dumps(_RunsACommand(f"touch {marker}")))
  assert marker.exists()


def _add(tar, name, data=b"", **attributes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  info.mtime = 0
  for key, value in attributes.items():
    setattr(info, key, value)
  tar.addfile(info, io.BytesIO(data) if data else None)


def test_malicious_tar_members_are_never_loaded_or_written(tmp_path,
                                                           monkeypatch):
  root = tmp_path / "src" / "imgs"
  expected = write_image_folder(str(root))
  archive = str(tmp_path / "hostile.tar.gz")
  escape_png = _png(np.full((32, 32, 3), 255, np.uint8))
  absolute = str(tmp_path / "absolute.png")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(str(root), arcname="imgs")
    _add(tar, "../../escape.png", escape_png)
    _add(tar, "imgs/../../escape2.png", escape_png)
    _add(tar, absolute, escape_png)
    # Links and special files dressed up as dataset images.
    _add(tar, "imgs/train/cat/symlink.png", type=tarfile.SYMTYPE,
         linkname="/etc/passwd")
    _add(tar, "imgs/train/cat/escape-link.png", type=tarfile.SYMTYPE,
         linkname="../../../../escape.png")
    _add(tar, "imgs/train/dog/hardlink.png", type=tarfile.LNKTYPE,
         linkname="/etc/passwd")
    _add(tar, "imgs/test/dog/samelink.png", type=tarfile.LNKTYPE,
         linkname="imgs/test/dog/000.png")
    _add(tar, "imgs/train/bird/fifo.png", type=tarfile.FIFOTYPE)
    _add(tar, "imgs/test/bird/device.png", type=tarfile.CHRTYPE, devmajor=1,
         devminor=3)
    _add(tar, "imgs/train/evil", type=tarfile.SYMTYPE, linkname="/")
  work = tmp_path / "a" / "b"
  work.mkdir(parents=True)
  monkeypatch.chdir(work)  # so "../../x" from here would land in tmp_path
  before = _tree(tmp_path)

  names = sources.files.list_files(archive)
  assert "imgs/train/cat/symlink.png" not in names
  assert "imgs/train/bird/fifo.png" not in names
  data = sources.load_path(archive)

  # Exactly the real images: no link, device, FIFO or stray member got in.
  assert data.class_names == ("bird", "cat", "dog")
  _assert_arrays(data, (*expected["train"], *expected["test"]))
  assert _tree(tmp_path) == before
  assert not os.path.exists(absolute)
  assert not (tmp_path / "escape.png").exists()


def test_symlinks_in_a_folder_are_not_followed(tmp_path):
  expected = write_image_folder(str(tmp_path / "imgs"))
  outside = tmp_path / "outside.png"
  outside.write_bytes(_png(np.zeros((32, 32, 3), np.uint8)))
  os.symlink(outside, tmp_path / "imgs" / "train" / "cat" / "link.png")
  os.symlink(tmp_path, tmp_path / "imgs" / "train" / "loop")
  data = sources.load_path(str(tmp_path / "imgs"))
  _assert_arrays(data, (*expected["train"], *expected["test"]))


def test_oversized_member_is_refused_before_reading(tmp_path, monkeypatch):
  folder, _ = write_cifar10_python(str(tmp_path))
  monkeypatch.setattr(sources.files, "MAX_MEMBER_BYTES", 1000)
  with pytest.raises(UsageError, match="larger than any CIFAR file"):
    sources.load_path(folder)


@pytest.mark.parametrize("packed", [False, True])
def test_files_adding_up_past_any_cap_are_read(tmp_path, monkeypatch, packed):
  # The files were capped at 4 GiB in all (here: a few kB), read one at a
  # time or not; the message blamed a file under the per-file limit.
  root = tmp_path / "imgs"
  expected = write_image_folder(str(root))
  path = tar_gz(str(root), str(tmp_path / "i.tar.gz")) if packed else str(root)
  monkeypatch.setattr(sources.files, "MAX_TOTAL_BYTES", 1000, raising=False)
  _assert_arrays(sources.load_path(path),
                 (*expected["train"], *expected["test"]))


def test_an_image_folder_larger_than_memory_is_sent_to_shards(tmp_path,
                                                              monkeypatch):
  root = tmp_path / "imgs"
  write_image_folder(str(root))
  monkeypatch.setattr(image_folder, "available_memory", lambda: 1000)
  with pytest.raises(UsageError, match=(
      r"images take 0\.0 GB decoded, more than the 0\.0 GB of memory "
      r"available; prepare them as shards, which training streams: "
      r"tools/prepare_data.py --format=shards --source=")):
    sources.load_path(str(root))


@pytest.mark.parametrize("packed", [False, True])
def test_empty_class_folder_is_named(tmp_path, packed):
  root = tmp_path / "imgs"
  for split in ("train", "test"):
    for cls in ("bird", "cat"):
      (root / split / cls).mkdir(parents=True)
    png = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy()
    (root / split / "bird" / "0.png").write_bytes(png)
  (root / "test" / "cat" / "0.png").write_bytes(png)  # train/cat stays empty
  path = str(root)
  if packed:
    path = str(tmp_path / "imgs.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
      tar.add(root, arcname="imgs")
  with pytest.raises(UsageError, match="train/cat holds no PNG or JPEG"):
    sources.load_path(path)


def test_the_dataset_picks_its_own_official_layout(tmp_path):
  write_cifar10_python(str(tmp_path))
  write_cifar100_python(str(tmp_path))
  assert sources.load("cifar100", str(tmp_path)).name == "cifar100"
  assert sources.load("cifar10", str(tmp_path)).name == "cifar10"


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_another_datasets_archive_is_refused_on_one_line(tmp_path, packed):
  folder, _ = write_cifar10_python(str(tmp_path))
  path = (tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz"))
          if packed else folder)
  with pytest.raises(UsageError, match=r"holds cifar10 .*not cifar100; "
                     r"pass --dataset=cifar10"):
    sources.load("cifar100", path)
  if packed:  # a folder holding only the other dataset's archive
    shutil.rmtree(folder)
    with pytest.raises(UsageError, match=r"cifar-10-python.tar.gz.*not "
                       "cifar100"):
      sources.load("cifar100", str(tmp_path))


def test_an_extracted_layout_beats_the_other_datasets_archive(tmp_path):
  folder, _ = write_cifar10_python(str(tmp_path / "ten"))
  tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz"))
  write_cifar100_python(str(tmp_path))
  assert sources.load("cifar100", str(tmp_path)).name == "cifar100"


def test_all_is_the_public_names_only():
  assert all(hasattr(sources, name) for name in sources.__all__)
  assert {"load", "load_path", "ImageDataset", "make_dataset"} <= set(
      sources.__all__)
  # Errors have their module; the rest are the sources' or the tools' own.
  assert not {"UsageError", "array_chunks", "shards_path",
              "prepared_path"} & set(sources.__all__)


def test_offline_tfds_other_than_cifar_is_not_sent_to_a_cifar_archive(
    tmp_path, monkeypatch):
  # `--dataset=tfds:svhn_cropped` offline was told to "point --data_dir at a
  # CIFAR archive, extracted folder or image folder".
  def unreachable(*args, **kwargs):
    raise OSError("Network is unreachable")
  monkeypatch.setattr(tfds_source.socket, "create_connection", unreachable)
  messages = []
  for download in (True, False):
    with pytest.raises(UsageError) as error:
      sources.load("tfds:mnist", str(tmp_path), download=download)
    messages.append(str(error.value))
  for message in messages:
    assert "CIFAR archive" not in message, message
    assert ("point --data_dir at a TFDS data dir where mnist is prepared "
            "(`tfds build mnist` on a machine with network, then copy its "
            "folder)") in message, message
  assert "cannot download mnist: no network" in messages[0]


def test_offline_tfds_logs_no_variant_folder_warning(tmp_path, monkeypatch,
                                                     caplog):
  # TFDS warned "Variant folder .../svhn_cropped/3.1.0 has no
  # dataset_info.json" (a folder that does not exist) before fastcifar's own
  # line: a TensorFlow-family log line a user should not see.
  def unreachable(*args, **kwargs):
    raise OSError("Network is unreachable")
  monkeypatch.setattr(tfds_source.socket, "create_connection", unreachable)
  with caplog.at_level(logging.WARNING):
    with pytest.raises(UsageError, match="cannot download mnist"):
      sources.load("tfds:mnist", str(tmp_path), download=True)
  assert not [r for r in caplog.records if "Variant folder" in r.getMessage()]
  # The filter is the lookup's only: afterwards absl's logger is as it was.
  assert not logging.getLogger("absl").filters
