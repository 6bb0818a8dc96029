#!/usr/bin/env python3
"""Prepares a dataset ahead of the first training run.

  python tools/prepare_data.py --source=PATH --data_dir=DIR [--name=NAME]
  python tools/prepare_data.py --source=PATH --data_dir=DIR --format=shards
  python tools/prepare_data.py --download --dataset=cifar10 --data_dir=DIR

(or `python -m tools.prepare_data ...` from the repository root).

With --source (a CIFAR archive or its extracted folder, an image folder
ROOT/{train,test}/<class>/ or a tar of one, a TFDS data dir, or a .npz) it
reads and checks the data once and writes DIR/fastcifar-NAME.npz, plain uint8
arrays that load in a second instead of being decoded again on every run.
NAME defaults to the source's dataset name: "cifar10" for the official
archives, the folder's name for an image folder. Training with
`--dataset=NAME --data_dir=DIR` finds the file when NAME is cifar10 or
cifar100; pass --name=cifar10 to prepare an image folder under that name, or
train with --data_dir=DIR/fastcifar-NAME.npz.

With --format=shards it writes the folder DIR/fastcifar-NAME/ instead:
TFRecord shards of the decoded images and a JSON manifest (classes, counts,
per-channel statistics), for data larger than memory; training streams them
with --data_dir=DIR/fastcifar-NAME (--cache=disk, or auto when they would
not fit). See docs/data.md.

With --download it lets TFDS download and prepare --dataset into DIR, for
machines that will train offline later.

Bad input ends with one line `prepare_data: error: ...` on stderr and exit
status 2.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

from absl import flags

if __name__ == "__main__" and not __package__:
  # Run as `python tools/prepare_data.py`: sys.path[0] is tools/, so the
  # repository root must be added for `import fastcifar` to work uninstalled.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=wrong-import-position
from fastcifar.cli import quiet
from fastcifar.data import sources
from fastcifar.errors import UsageError
# pylint: enable=wrong-import-position

if __name__ == "__main__":
  quiet.start()  # TensorFlow's start-up lines off, unless --verbose

PROGRAM = "prepare_data"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# A FlagValues of its own, not absl's global FLAGS: fastcifar.train defines
# --dataset, --data_dir and --download too, and two modules defining one flag
# name in the same process (a test run importing both) is a DuplicateFlagError.
FLAGS = flags.FlagValues()
_VERBOSE = quiet.define_verbose_flag(FLAGS)
_SOURCE = flags.DEFINE_string(
    "source", None,
    "What to prepare: anything --data_dir of fastcifar.train accepts (a CIFAR "
    "archive or extracted folder, an image folder or a .tar.gz of one, a TFDS "
    "data dir, a .npz).", flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "The folder to write into (created if missing).",
    flag_values=FLAGS)
_DOWNLOAD = flags.DEFINE_boolean(
    "download", False, "Download --dataset through TFDS into --data_dir.",
    flag_values=FLAGS)
_DATASET = flags.DEFINE_enum(
    "dataset", "cifar10", sources.TFDS_NAMES,
    "The dataset to download, or to take from a --source holding several.",
    flag_values=FLAGS)
_NAME = flags.DEFINE_string(
    "name", None,
    "The NAME in DIR/fastcifar-NAME.npz. Default: the source's dataset name.",
    flag_values=FLAGS)
_IMAGE_SIZE = flags.DEFINE_string(
    "image_size", None,
    "H or H,W: with --source, resize every image to this size once (as "
    "fastcifar.train --image_size does). Default: the data's own size.",
    flag_values=FLAGS)
_RESIZE = flags.DEFINE_enum(
    "resize", "crop", sources.RESIZE_METHODS,
    "How --image_size resizes: crop (shorter side fits, centre cropped) or "
    "pad (longer side fits, black borders).", flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum(
    "format", "npz", ("npz", "shards"),
    "npz: one file of arrays, loaded into memory. shards: a folder of "
    "TFRecord shards and a manifest, streamed when larger than memory.",
    flag_values=FLAGS)
_HELP = flags.DEFINE_boolean("help", False, "Show this help.",
                             flag_values=FLAGS)


def describe(dataset: sources.ImageDataset) -> str:
  """One line saying what a dataset holds: counts and classes."""
  names = list(dataset.class_names)
  shown = ", ".join(names if len(names) <= 10 else names[:9] + ["..."])
  return (f"{dataset.name}: {len(dataset.train_images):,} train and "
          f"{len(dataset.test_images):,} test images, {dataset.num_classes} "
          f"classes ({shown}), {'x'.join(map(str, dataset.image_shape))} "
          "pixels")


def prepare_source(source: str, data_dir: str, dataset: str = "cifar10",
                   name: str | None = None,
                   image_size: tuple[int, int] | None = None,
                   resize: str = "crop", file_format: str = "npz"
                   ) -> tuple[sources.ImageDataset, str]:
  """Loads `source` and writes it as DIR/fastcifar-NAME.npz (or shards).

  Args:
    source: a path `sources.load_path` understands.
    data_dir: the folder to write into.
    dataset: which dataset to take from a source holding several.
    name: the NAME of the file; None for the source's dataset name.
    image_size, resize: as `sources.load_path` takes them.
    file_format: "npz", or "shards" for the folder DIR/fastcifar-NAME/.

  Returns:
    `(dataset, path)`: what was loaded and the file (or folder) it was
    written to.

  Raises:
    UsageError: the source is unreadable or the name is not a file name.
  """
  if name is not None and not NAME_RE.match(name):
    raise UsageError(f"--name={name!r} must be letters, digits, '.', '_' or "
                     "'-' (it becomes part of a file name)")
  created = not os.path.lexists(data_dir)
  try:
    return _prepare(source, data_dir, dataset, name, image_size, resize,
                    file_format)
  except UsageError as e:
    # load_path words its messages for training's --data_dir flag; here the
    # path came from --source.
    raise UsageError(str(e).replace(f"--data_dir {os.path.expanduser(source)}",
                                    f"--source={source}")) from e
  finally:
    if created and os.path.isdir(data_dir) and not os.listdir(data_dir):
      os.rmdir(data_dir)  # made for a file that was not written


def _prepare(source: str, data_dir: str, dataset: str, name: str | None,
             image_size: tuple[int, int] | None, resize: str,
             file_format: str) -> tuple[sources.ImageDataset, str]:
  """`prepare_source` after its checks; OSErrors here are writes.

  Reading the source raises UsageError naming what cannot be read.
  """
  if file_format == "shards":
    # A chunk at a time: an image folder larger than memory is never held
    # whole.
    found, class_names, test_split, counts, chunks = sources.load_chunks(
        source, dataset, image_size=image_size, resize=resize)
    name = _checked_name(name or found)
    path = sources.shards_path(data_dir, name)
    with _writing(path):
      sources.write_shards(path, name, class_names, chunks, counts,
                           test_split)
    return sources.load_path(path, cache="disk"), path
  data = sources.load_path(source, dataset, image_size=image_size,
                           resize=resize)
  path = sources.prepared_path(data_dir, _checked_name(name or data.name))
  with _writing(path):
    sources.save_prepared(data, path)
  return data, path


@contextlib.contextmanager
def _writing(path: str):
  """Turns an OSError while writing `path` into a UsageError."""
  try:
    yield
  except OSError as e:
    raise UsageError(f"cannot write {path} ({e.strerror or e}); choose "
                     "another --data_dir") from e


def _checked_name(name: str) -> str:
  """`name`, if it can be part of a file name."""
  if not NAME_RE.match(name):
    raise UsageError(f"the source's name {name!r} cannot be used in a file "
                     "name; choose one with --name")
  return name


def download(dataset: str, data_dir: str) -> sources.ImageDataset:
  """Lets TFDS download and prepare `dataset` into `data_dir`."""
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise UsageError(f"cannot create --data_dir {data_dir} ({e.strerror or e})"
                     ) from e
  return sources.load_path(data_dir, dataset, download=True)


def disk_size(path: str) -> int:
  """Bytes of a file, or of the files directly in a folder."""
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(path, f))
               for f in os.listdir(path))
  return os.path.getsize(path)


def how_to_train(name: str, data_dir: str, path: str) -> str:
  """The training flags that load what was just prepared."""
  if name in sources.TFDS_NAMES:
    return f"--dataset={name} --data_dir={data_dir}"
  return f"--data_dir={path}"


def run() -> str:
  """Does what the parsed flags ask.

  Returns:
    The report to print.

  Raises:
    UsageError: the flags or the data are wrong; the message says how.
  """
  data_dir = _DATA_DIR.value
  if not data_dir:
    raise UsageError("--data_dir is required: the folder to write into")
  data_dir = os.path.expanduser(data_dir)
  if _SOURCE.value and _DOWNLOAD.value:
    raise UsageError("pass --source=PATH or --download, not both")
  start = time.monotonic()
  if _SOURCE.value:
    data, path = prepare_source(
        _SOURCE.value, data_dir, _DATASET.value, _NAME.value,
        sources.parse_image_size(_IMAGE_SIZE.value), _RESIZE.value,
        _FORMAT.value)
    size = disk_size(path) / 2**20
    name = _NAME.value or data.name
    return (f"{PROGRAM}: wrote {path} ({size:,.1f} MiB) in "
            f"{time.monotonic() - start:.1f} s: {describe(data)}. Train with "
            f"{how_to_train(name, data_dir, path)}")
  if _DOWNLOAD.value:
    if _NAME.value:
      raise UsageError("--name applies to --source only")
    if _FORMAT.value != "npz":
      raise UsageError("--format applies to --source only; TFDS keeps what "
                       "it downloads in its own format")
    data = download(_DATASET.value, data_dir)
    return (f"{PROGRAM}: {_DATASET.value} is in {data_dir} after "
            f"{time.monotonic() - start:.1f} s: {describe(data)}. Train with "
            f"--dataset={_DATASET.value} --data_dir={data_dir}")
  raise UsageError("nothing to do: pass --source=PATH to prepare a dataset "
                   "you have, or --download --dataset=cifar10|cifar100 to "
                   "fetch one")


def main(argv: list[str]) -> int:
  """Parses `argv` (program name first), runs, and returns the exit status."""
  FLAGS.unparse_flags()  # a clean slate when called more than once in-process
  try:
    rest = FLAGS(argv)
    if _HELP.value:
      print(__doc__.strip() + "\n\nFlags:\n"
            + FLAGS.get_help(include_special_flags=False))
      return 0
    if len(rest) > 1:
      raise UsageError(f"unexpected arguments {rest[1:]}; flags are written "
                       "--flag=value")
    print(run())
  except (UsageError, flags.Error) as e:
    # One line, whatever the message: scripts read stderr line by line.
    message = " ".join(str(e).split())
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
