"""The official CIFAR archives: python (pickle) and binary versions.

Layouts, as on the CIFAR page (https://www.cs.toronto.edu/~kriz/cifar.html):
  cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
  cifar-100-python/{train, test, meta}
  cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin, batches.meta.txt}
  cifar-100-binary/{train.bin, test.bin, fine_label_names.txt}
each either as the `.tar.gz` or extracted. Pickles are read by an unpickler
that admits only what those batches contain, so a crafted file cannot run code.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import posixpath

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.data.sources import files
from fastcifar.data.sources.dataset import ImageDataset, make_dataset

# The only globals a pickle of numpy arrays, lists, bytes and dicts names,
# under every protocol Python 2 or 3 writes: the official batches (Python 2,
# protocol 2) reconstruct arrays with `_reconstruct`; Python 3 at protocol 2
# writes bytes as `_codecs.encode(text, "latin1")`; protocol 5 rebuilds
# contiguous arrays with `_frombuffer`. numpy 2 renamed numpy.core to
# numpy._core and still reads both names.
_NUMPY_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
})


def _latin1_encode(text: str, encoding: str) -> bytes:
  """`_codecs.encode` restricted to what pickle writes for bytes."""
  if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
    raise _Refused(_forbidden(f"_codecs.encode(..., {encoding!r})"))
  return text.encode("latin1")


class _Refused(pickle.UnpicklingError):
  """A readable pickle that is not a plain batch; the message says why."""


def _forbidden(name: str) -> str:
  return (f"refused: the pickle holds something other than numpy arrays, "
          f"lists, bytes and dicts (it names {name}, which a CIFAR batch "
          "never does); loading it could run code, so use a file that holds "
          "only the batch")


class _OutOfBandBuffers:
  """Pickle's `buffers=`: refuses protocol 5's out-of-band buffers.

  `pickle.dumps(..., buffer_callback=)` keeps array data outside the pickle;
  a file holding only the pickle cannot be read back.
  """

  def __iter__(self):
    return self

  def __next__(self):
    raise _Refused(
        "refused: the pickle's array data was kept out of band "
        "(pickle.dumps with buffer_callback=), so the file does not hold it; "
        "pickle the batch without buffer_callback")


class _CifarUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) == ("_codecs", "encode"):
      return _latin1_encode
    if (module, name) in _NUMPY_GLOBALS:
      return super().find_class(module, name)
    raise _Refused(_forbidden(f"{module}.{name}"))


def safe_unpickle(data: bytes, origin: str) -> dict:
  """Unpickles one CIFAR batch, refusing anything but numpy arrays.

  Reads pickles of every protocol (2 to 5) that hold only numpy arrays,
  lists, bytes, strings, numbers and dicts; never calls anything else.

  Args:
    data: the file's bytes.
    origin: file name for error messages.

  Returns:
    The batch dict with `str` keys.
  """
  try:
    batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes",
                            buffers=_OutOfBandBuffers()).load()
  except _Refused as e:
    raise UsageError(f"{origin}: {e}") from None
  except Exception as e:  # a damaged pickle fails in many ways
    raise UsageError(f"{origin}: not a CIFAR pickle batch ({e}); the file is "
                     "damaged: download the archive again") from e
  if not isinstance(batch, dict):
    raise UsageError(f"{origin}: not a CIFAR pickle batch (holds "
                     f"{type(batch).__name__}, not a dict)")
  return {k.decode("latin1") if isinstance(k, bytes) else k: v
          for k, v in batch.items()}


def _field(batch: dict, key: str, origin: str):
  if key not in batch:
    raise UsageError(f"{origin}: no '{key}' entry; not a CIFAR batch")
  return batch[key]


def _images_from_rows(rows, origin: str) -> np.ndarray:
  rows = np.asarray(rows)
  if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072:
    raise UsageError(f"{origin}: image data is {rows.dtype} {rows.shape}, "
                     "expected uint8 rows of 3072 (32x32x3) pixels")
  # CIFAR stores each image as 1024 red, 1024 green, then 1024 blue values.
  return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _names(value) -> list[str]:
  return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]


@dataclasses.dataclass(frozen=True)
class _Layout:
  name: str
  marker: str  # a file name that identifies the layout
  train: tuple[str, ...]
  test: tuple[str, ...]
  meta: str
  binary: bool


LAYOUTS = (
    _Layout("cifar10", "data_batch_1",
            tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
            "batches.meta", binary=False),
    _Layout("cifar100", "meta", ("train",), ("test",), "meta", binary=False),
    _Layout("cifar10", "data_batch_1.bin",
            tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            ("test_batch.bin",), "batches.meta.txt", binary=True),
    _Layout("cifar100", "fine_label_names.txt", ("train.bin",), ("test.bin",),
            "fine_label_names.txt", binary=True),
)


def find_layout(names: list[str], dataset: str | None = None):
  """Finds an official CIFAR layout among the file names of a tree.

  Args:
    names: relative file names, as `files.list_files` returns them.
    dataset: "cifar10" or "cifar100" to find only that dataset's layouts;
      None for any.

  Returns:
    `(layout, folder)`, or None when no layout's files are all present.
  """
  present = set(names)
  for layout in LAYOUTS:
    if dataset is not None and layout.name != dataset:
      continue
    for name in names:
      if posixpath.basename(name) != layout.marker:
        continue
      folder = posixpath.dirname(name)
      needed = [posixpath.join(folder, f)
                for f in layout.train + layout.test + (layout.meta,)]
      if all(n in present for n in needed):
        return layout, folder
  return None


def _read_pickle_split(contents, paths, layout: _Layout):
  label_key = "fine_labels" if layout.name == "cifar100" else "labels"
  images, labels = [], []
  for path in paths:
    batch = safe_unpickle(contents[path], path)
    images.append(_images_from_rows(_field(batch, "data", path), path))
    labels.append(np.asarray(_field(batch, label_key, path), np.int64))
  return np.concatenate(images), np.concatenate(labels)


def _read_binary_split(contents, paths, layout: _Layout):
  # Each record: label byte(s) then 3072 pixel bytes. CIFAR-100 records carry
  # the coarse label first, then the fine label.
  label_bytes = 2 if layout.name == "cifar100" else 1
  record = label_bytes + 3072
  images, labels = [], []
  for path in paths:
    raw = np.frombuffer(contents[path], np.uint8)
    if raw.size == 0 or raw.size % record:
      raise UsageError(f"{path}: {raw.size} bytes is not a whole number of "
                       f"{record}-byte CIFAR records; the file is truncated")
    raw = raw.reshape(-1, record)
    labels.append(raw[:, label_bytes - 1].astype(np.int64))
    images.append(_images_from_rows(raw[:, label_bytes:], path))
  return np.concatenate(images), np.concatenate(labels)


def load_archive(path: str, layout: _Layout, folder: str) -> ImageDataset:
  """Reads an official CIFAR archive or extracted folder.

  Args:
    path: the `.tar.gz`, or the folder it was extracted to.
    layout, folder: as `find_layout` returned them.

  Returns:
    The `ImageDataset`.
  """
  def full(name):
    return posixpath.join(folder, name)

  wanted = [full(n) for n in layout.train + layout.test + (layout.meta,)]
  contents = files.read_files(path, wanted)
  read_split = _read_binary_split if layout.binary else _read_pickle_split
  train = read_split(contents, [full(n) for n in layout.train], layout)
  test = read_split(contents, [full(n) for n in layout.test], layout)
  meta_path = full(layout.meta)
  if layout.binary:
    class_names = contents[meta_path].decode("utf-8").split()
  else:
    meta = safe_unpickle(contents[meta_path], meta_path)
    key = "fine_label_names" if layout.name == "cifar100" else "label_names"
    class_names = _names(_field(meta, key, meta_path))
  return make_dataset(layout.name, *train, *test, class_names, origin=path)
