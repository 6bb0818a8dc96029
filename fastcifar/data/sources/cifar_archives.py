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
from fastcifar.data.sources.dataset import (CIFAR_SHAPE, ImageDataset,
                                            aligned_empty, make_dataset)

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


def _rows(rows, origin: str) -> np.ndarray:
  """The batch's pixel rows, checked: uint8 `(N, 3072)`."""
  rows = np.asarray(rows)
  if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072:
    raise UsageError(f"{origin}: image data is {rows.dtype} {rows.shape}, "
                     "expected uint8 rows of 3072 (32x32x3) pixels")
  return rows


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


def _pickle_member(data: bytes, path: str, layout: _Layout):
  """One pickled batch's `(rows, labels)`: uint8 rows of 3072, int64."""
  batch = safe_unpickle(data, path)
  label_key = "fine_labels" if layout.name == "cifar100" else "labels"
  return (_rows(_field(batch, "data", path), path),
          np.asarray(_field(batch, label_key, path), np.int64))


def _binary_member(data: bytes, path: str, layout: _Layout):
  """One binary batch's `(rows, labels)`: the rows are a view of `data`."""
  label_bytes = _label_bytes(layout)
  record = label_bytes + 3072
  raw = np.frombuffer(data, np.uint8)
  if raw.size == 0 or raw.size % record:
    raise UsageError(f"{path}: {raw.size} bytes is not a whole number of "
                     f"{record}-byte CIFAR records; the file is truncated")
  raw = raw.reshape(-1, record)
  return raw[:, label_bytes:], raw[:, label_bytes - 1].astype(np.int64)


def _label_bytes(layout: _Layout) -> int:
  # Each binary record: label byte(s) then 3072 pixel bytes. CIFAR-100
  # records carry the coarse label first, then the fine label.
  return 2 if layout.name == "cifar100" else 1


def _move_down(images: np.ndarray, source: int, target: int, count: int,
               chunk: int = 1024) -> None:
  """Moves `count` images from row `source` down to row `target` in place.

  Front to back, a chunk at a time: with `target <= source` no chunk
  overwrites rows still to be moved, and only a chunk is ever buffered.
  """
  for i in range(0, count, chunk):
    n = min(chunk, count - i)
    images[target + i:target + i + n] = images[source + i:source + i + n]


def load_archive(path: str, layout: _Layout, folder: str) -> ImageDataset:
  """Reads an official CIFAR archive or extracted folder, member by member.

  Each split's images go straight into one preallocated, aligned array (the
  input pipeline then uses it without a copy): every batch file is given a
  slot as large as its size allows (a record or 3,072 pixel bytes per
  image), parsed as it streams in, copied to its slot and dropped; the
  slots are then closed up in the layout's order. So the archive and its
  decoded copy are never held at once, and no decoded batch outlives its
  copy (memory freed in pieces is not always given back to the system, so
  holding the batches until the end would raise the peak by their size).

  Args:
    path: the `.tar.gz`, or the folder it was extracted to.
    layout, folder: as `find_layout` returned them.

  Returns:
    The `ImageDataset`, its images views of the start of those arrays
    (the rest, the slots' slack, is never touched and takes no memory).
  """
  def full(name):
    return posixpath.join(folder, name)

  members = {"train": [full(n) for n in layout.train],
             "test": [full(n) for n in layout.test]}
  split_of = {name: split for split in members for name in members[split]}
  sizes = files.file_sizes(path, list(split_of))
  per_image = _label_bytes(layout) + 3072 if layout.binary else 3072
  slots, room = {}, {}
  for split, names in members.items():
    room[split] = 0
    for name in names:  # a missing file: iter_files names it below
      slots[name] = (room[split], sizes.get(name, 0) // per_image)
      room[split] += slots[name][1]
  images = {split: aligned_empty((room[split],) + CIFAR_SHAPE, np.uint8)
            for split in members}
  counts, labels = {}, {}
  parse = _binary_member if layout.binary else _pickle_member
  meta_path, meta = full(layout.meta), None
  for name, data in files.iter_files(path, [*split_of, meta_path]):
    if name == meta_path:
      meta = data
      continue
    rows, labels[name] = parse(data, name, layout)
    del data  # the binary rows still view it, until copied below
    start, slot = slots[name]
    if len(rows) > slot:  # never write past the slot
      raise UsageError(f"{name}: {len(rows)} images in a {sizes[name]}-byte "
                       "file; the file is damaged")
    # CIFAR stores each image as 1024 red, 1024 green, then 1024 blue values.
    images[split_of[name]][start:start + len(rows)] = rows.reshape(
        -1, 3, 32, 32).transpose(0, 2, 3, 1)
    counts[name] = len(rows)
    del rows
  arrays = []
  for split, names in members.items():
    end = 0
    for name in names:
      _move_down(images[split], slots[name][0], end, counts[name])
      end += counts[name]
    arrays += [images[split][:end],
               np.concatenate([labels[n] for n in names])]
  if layout.binary:
    class_names = meta.decode("utf-8").split()
  else:
    unpickled = safe_unpickle(meta, meta_path)
    key = "fine_label_names" if layout.name == "cifar100" else "label_names"
    class_names = _names(_field(unpickled, key, meta_path))
  return make_dataset(layout.name, *arrays, class_names, origin=path)
