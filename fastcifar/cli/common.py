"""What every fastcifar command shares: absl, one-line errors, --help.

Imported only by entry points (it defines the `--verbose` flag).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Callable, NamedTuple, Sequence

from absl import app, flags

from fastcifar.cli import quiet
from fastcifar.data import sources
from fastcifar.errors import UsageError

_VERBOSE = quiet.define_verbose_flag()


def _list_flags_in_help(module_name: str) -> None:
  """Makes `--help` show the command's flags and description.

  absl's `--help` prints the docstring of `__main__` and the key flags of
  the module named `sys.argv[0]`. Under `python -m fastcifar.train` those are
  train.py's own; under the installed `fastcifar-train` script, `__main__` is
  a generated wrapper with neither. So the command's flags, and the ones
  defined here (--dataset, --verbose, ...), are declared key to whichever
  module runs, and the wrapper gets the command's docstring.
  """
  main_module = sys.modules["__main__"]
  for name in (module_name, __name__, quiet.__name__):
    if name == "__main__":  # already registered under sys.argv[0]
      continue
    for flag in flags.FLAGS.get_key_flags_for_module(name):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  if not main_module.__doc__:
    main_module.__doc__ = sys.modules[module_name].__doc__


def run(main: Callable[[list[str]], int | None], program: str) -> None:
  """`absl.app.run` with fastcifar's error contract.

  A bad flag, a stray argument or a `UsageError` from `main` prints one line,
  `PROGRAM: error: ...`, on stderr and exits 2 without a traceback
  (`--verbose` shows it).

  Args:
    main: the command's main; it takes argv and returns an exit status.
    program: the name errors start with, e.g. "fastcifar.train".
  """
  def fail(message: str) -> int:
    print(f"{program}: error: {message}", file=sys.stderr)
    return 2

  def parse_flags(argv: list[str]) -> list[str]:
    try:
      remaining = flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(fail(f"{e}; see --helpfull for every flag"))
    quiet.quiet_logging(_VERBOSE.value)
    return remaining

  _list_flags_in_help(main.__module__)

  def checked_main(argv: list[str]) -> int | None:
    if len(argv) > 1:
      return fail(f"unexpected arguments {' '.join(argv[1:])}; flags are "
                  "written --name=value")
    try:
      return main(argv)
    except UsageError as e:
      if _VERBOSE.value:
        raise
      return fail(str(e))

  app.run(checked_main, flags_parser=parse_flags)


# glibc's mallopt parameter for the most malloc arenas (malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas() -> bool:
  """Caps this process's glibc malloc arenas at one per usable core.

  glibc gives each new thread an arena of its own, up to 8 per core, and
  memory a thread frees stays in its arena, resident, for that arena's
  threads to reuse. TensorFlow's threads (op pools, tf.data, Eigen; 35 in
  a seed CNN run) allocate and free tensors of many sizes: one epoch on
  CIFAR-10 held 200-400 MB freed but resident in 16 arenas (2-core AMD
  EPYC, float32). At most one thread per core allocates at any instant, so
  one arena per core costs no waiting that matters. For a command's process
  only (call it before TensorFlow starts its threads): importing fastcifar
  changes no process setting.

  Returns:
    Whether the cap was set (glibc only; elsewhere, or when the user set
    MALLOC_ARENA_MAX, nothing is done).
  """
  if "MALLOC_ARENA_MAX" in os.environ:  # the user's own choice stands
    return False
  try:
    if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
      return False
    libc = ctypes.CDLL(None)
    cores = (len(os.sched_getaffinity(0))
             if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return libc.mallopt(_M_ARENA_MAX, max(1, cores)) == 1
  except (ValueError, OSError, AttributeError):  # no glibc here
    return False


class DataFlags(NamedTuple):
  dataset: flags.FlagHolder
  data_dir: flags.FlagHolder
  download: flags.FlagHolder
  mirror: flags.FlagHolder
  image_size: flags.FlagHolder
  resize: flags.FlagHolder
  cache: flags.FlagHolder
  shuffle_buffer: flags.FlagHolder


def _validate(name: str, check: Callable[[str], object]) -> None:
  """Checks --name with `check`, which raises UsageError, as absl parses it."""
  def validate(value: str) -> bool:
    try:
      check(value)
    except UsageError as e:
      # absl starts the message with "flag --name=value: " itself.
      raise flags.ValidationError(
          str(e).removeprefix(f"--{name}={value}: ")) from None
    return True
  flags.register_validator(name, validate)


@functools.cache
def data_flags() -> DataFlags:
  """Defines the data flags (--dataset, --data_dir, --image_size...), once.

  Every command that reads data calls this at import; the cache lets two
  commands be imported together (as tests do) without defining them twice.
  """
  dataset = flags.DEFINE_string(
      "dataset", "cifar10",
      "cifar10 / cifar100 (from --data_dir or TFDS), generated synthetic "
      "data, or tfds:NAME: any TFDS image classification dataset (e.g. "
      "tfds:svhn_cropped, tfds:imagenette/160px) from TFDS's data dir or "
      "--data_dir.")
  image_size = flags.DEFINE_string(
      "image_size", None,
      "H or H,W: resize every image to this size once, at load time (see "
      "--resize). Default: the data's own size, which every image must "
      "then share.")
  _validate("dataset", sources.check_dataset)
  _validate("image_size", sources.parse_image_size)
  return DataFlags(
      dataset=dataset,
      data_dir=flags.DEFINE_string(
          "data_dir", None,
          "A TFDS data dir, a CIFAR archive (python or binary, .tar.gz or "
          "extracted), an image folder ROOT/{train,test}/<class>/ or a "
          ".tar.gz of one, a .npz or shard folder from "
          "tools/prepare_data.py, or a .npz of keras.datasets' x_train, "
          "y_train, x_test, y_test (see docs/data.md). Default: "
          "TFDS's data dir, else Keras's cache ($KERAS_HOME/datasets, "
          "~/.keras/datasets), else a download into that cache."),
      download=flags.DEFINE_boolean(
          "download", True,
          "Without --data_dir: download the official archive (once, "
          "sha256-checked, into Keras's cache) when the data is nowhere on "
          "disk. --nodownload never touches the network."),
      mirror=flags.DEFINE_string(
          "data_mirror", None,
          "Base URL of a mirror serving the CIFAR page's archive files "
          "(e.g. behind a proxy). Default: $FASTCIFAR_MIRROR, else "
          "https://www.cs.toronto.edu/~kriz/."),
      image_size=image_size,
      resize=flags.DEFINE_enum(
          "resize", "crop", sources.RESIZE_METHODS,
          "How --image_size resizes an image of another shape. crop: scale "
          "the shorter side to fit and crop the centre (nothing distorted, "
          "no borders). pad: scale the longer side to fit and pad with "
          "black (nothing cut off)."),
      cache=flags.DEFINE_enum(
          "cache", "auto", sources.CACHES,
          "Where the training images are kept, for a shard folder from "
          "tools/prepare_data.py --format=shards (other sources are always "
          "in memory). memory: read them into memory once. disk: stream them "
          "from the shards every epoch (interleaved reads, a seeded shuffle "
          "buffer), for data larger than memory. auto: disk when the "
          "decoded images would take more than half the memory available, "
          "else memory."),
      shuffle_buffer=flags.DEFINE_integer(
          "shuffle_buffer", 10_000,
          "Streamed training data (--cache=disk): examples in the shuffle "
          "buffer. Larger mixes better and holds more memory (buffer x "
          "image bytes: 123 MB at 64x64).", lower_bound=1))


def load_data(data: DataFlags, seed: int,
              model_input: Sequence[int | None] | None = None,
              record: dict | None = None) -> sources.ImageDataset:
  """The dataset the data flags name (`seed` seeds synthetic data).

  Args:
    data: the data flags.
    seed: seeds synthetic data.
    model_input: `model.input_shape` of a trained model the data is for:
      without --image_size, images are brought to its size.
    record: the data record of the run that trained that model
      (`sources.data_record`): the data flags not given take its values.

  Returns:
    The dataset.

  Raises:
    UsageError: a flag given contradicts `record`, or the data loaded has
      other classes than it.
  """
  settings = dict(dataset=data.dataset.value, data_dir=data.data_dir.value,
                  image_size=sources.parse_image_size(data.image_size.value),
                  resize=data.resize.value, seed=seed)
  if record:
    settings.update(recorded_settings(data, record))
  size = settings["image_size"]
  if size is None and model_input is not None and None not in model_input[1:3]:
    size = tuple(model_input[1:3])
  dataset = sources.load(
      settings["dataset"], settings["data_dir"], download=data.download.value,
      mirror=data.mirror.value, seed=settings["seed"], image_size=size,
      resize=settings["resize"], cache=data.cache.value,
      shuffle_buffer=data.shuffle_buffer.value)
  if record and list(dataset.class_names) != record["class_names"]:
    raise UsageError(
        f"{dataset.name} has the classes {', '.join(dataset.class_names[:4])}"
        f"..., not those the model was trained on ("
        f"{', '.join(record['class_names'][:4])}...); pass the --data_dir it "
        "was trained on")
  if dataset.test_split != "test":
    print(f"fastcifar: {data.dataset.value} tests on {dataset.test_split}",
          flush=True)
  return dataset


def recorded_settings(data: DataFlags, record: dict) -> dict:
  """`sources.load`'s settings from a run's data record, flags checked.

  A data flag given on the command line must agree with the record (or be
  --data_dir: the same data may have moved); one not given takes the
  record's value.
  """
  recorded = {"dataset": record.get("dataset"),
              "image_size": tuple(record["image_size"]),
              "resize": record.get("resize")}
  settings = {k: v for k, v in recorded.items() if v is not None}
  for key, value in settings.items():
    holder = getattr(data, key)
    given = holder.value
    if key == "image_size":
      given = sources.parse_image_size(given)
    if not flags.FLAGS[holder.name].using_default_value and given != value:
      shown = ",".join(map(str, value)) if key == "image_size" else value
      raise UsageError(
          f"--{holder.name}={holder.value} contradicts the run that trained "
          f"the model, which used --{holder.name}={shown} (its run.json); "
          f"drop --{holder.name}")
  if record.get("data_dir") and data.data_dir.value is None:
    settings["data_dir"] = record["data_dir"]
  if record.get("seed") is not None and record.get("dataset") == "synthetic":
    settings["seed"] = record["seed"]  # synthetic data is made from it
  return settings
