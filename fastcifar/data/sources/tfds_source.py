"""Datasets through tensorflow-datasets (TFDS): CIFAR, or any `tfds:NAME`.

The image and label features come from the dataset's `info.features`, the
splits from its `info.splits`; the data dir is TFDS's own ($TFDS_DATA_DIR,
else ~/tensorflow_datasets) unless --data_dir names one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import urllib.parse

from fastcifar.errors import UsageError
from fastcifar.data.sources.dataset import ImageDataset, make_dataset
from fastcifar.data.sources.images import fit_images

TFDS_NAMES = ("cifar10", "cifar100")  # also found in Keras's cache or archives
TFDS_PREFIX = "tfds:"  # --dataset=tfds:NAME: any TFDS image classification set
_NAME_RE = re.compile(r"^[a-z0-9_]+(/[\w.-]+)?(:[\d.*]+)?$")
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)  # where TFDS fetches CIFAR from


def _not_yet_prepared(record: logging.LogRecord) -> bool:
  """False for TFDS's warning that a version folder is not prepared yet.

  TFDS logs "Variant folder ... has no dataset_info.json" while it looks
  for a prepared version, before anything is prepared, even for a folder
  that does not exist; fastcifar says what is missing in its own line.
  """
  return not str(record.msg).startswith("Variant folder")


@contextlib.contextmanager
def _tfds_lookup_quiet():
  """Drops `_not_yet_prepared` lines from absl's logger for the block only."""
  absl_logger = logging.getLogger("absl")
  absl_logger.addFilter(_not_yet_prepared)
  try:
    yield
  finally:
    absl_logger.removeFilter(_not_yet_prepared)


def default_tfds_dir() -> str:
  """TFDS's own convention: `$TFDS_DATA_DIR`, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def is_tfds_dir(path: str, name: str) -> bool:
  """Whether `path` holds a prepared TFDS `name` (any version)."""
  root = os.path.join(path, name)
  if not os.path.isdir(root):
    return False
  for dirpath, _, filenames in os.walk(root):
    if "dataset_info.json" in filenames:
      return True
  return False


def offline_options(name: str) -> str:
  """What to do without a network: the options every offline error lists.

  Args:
    name: the TFDS name; CIFAR's have archives fastcifar reads itself,
      other datasets only TFDS's prepared folder.
  """
  if name.split("/")[0].split(":")[0] in ("cifar10", "cifar100"):
    where = ("a CIFAR archive, extracted folder or image folder, prepare one "
             "with tools/prepare_data.py")
  else:
    where = (f"a TFDS data dir where {name} is prepared (`tfds build {name}` "
             "on a machine with network, then copy its folder)")
  return (f"point --data_dir at {where}, or train on generated data with "
          "--dataset=synthetic")


def _check_network(name: str, host: tuple[str, int] = DOWNLOAD_HOST) -> None:
  """Fails in seconds, not after TFDS's retries, when `host` is unreachable."""
  try:
    socket.create_connection(host, timeout=5).close()
  except OSError as e:
    raise UsageError(f"cannot download {name}: no network ({host[0]}: {e}); "
                     + offline_options(name)) from None


def tfds_name(dataset: str) -> str | None:
  """NAME of `--dataset=tfds:NAME`, else None; UsageError for a bad NAME."""
  if not dataset.startswith(TFDS_PREFIX):
    return None
  name = dataset[len(TFDS_PREFIX):]
  if not _NAME_RE.match(name):
    raise UsageError(f"--dataset={dataset}: write tfds:NAME[/CONFIG][:VERSION]"
                     ", e.g. tfds:svhn_cropped or tfds:imagenette/160px")
  return name


def _feature_keys(name: str, info) -> tuple[str, str]:
  """The image and class-label features: the supervised keys, or the only ones.

  Args:
    name: the dataset, for errors.
    info: its `tfds.core.DatasetInfo`.

  Returns:
    `(image_key, label_key)`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = info.features
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  labels = [k for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)]
  keys = tuple(info.supervised_keys or ())
  if len(keys) == 2 and keys[0] in images and keys[1] in labels:
    return keys

  def only(found: list[str], usual: str) -> str | None:
    return usual if usual in found else found[0] if len(found) == 1 else None

  image, label = only(images, "image"), only(labels, "label")
  if image is None or label is None:
    raise UsageError(
        f"tfds:{name} has no single image feature and class label "
        f"(its features: {', '.join(features.keys())}); fastcifar trains "
        "image classification datasets")
  return image, label


def _choose_splits(name: str, info) -> tuple[str, str, str]:
  """`(train, test, test_from)` TFDS split specs, from `info.splits`.

  The test split is "test", else "validation" (e.g. imagenette's), else the
  last 10% of train, held out (TFDS's slicing API, so it is the same 10%
  on every machine).
  """
  # An unprepared builder (and TFDS's mock_data) records no splits: assume
  # train and test, and let reading them say what is missing.
  splits = list(info.splits.keys()) or ["train", "test"]
  if "train" not in splits:
    raise UsageError(f"tfds:{name} has no train split (its splits: "
                     f"{', '.join(splits)}); fastcifar needs one")
  for test in ("test", "validation"):
    if test in splits:
      return "train", test, test
  return ("train[:90%]", "train[90%:]",
          "train[90%:] (no test split: the last 10% of train, held out)")


def load_tfds(name: str, data_dir: str | None, download: bool,
              image_size: tuple[int, int] | None = None,
              resize: str = "crop") -> ImageDataset:
  """Loads a TFDS image classification dataset as arrays.

  Args:
    name: a TFDS name, "NAME[/CONFIG][:VERSION]", e.g. "cifar10".
    data_dir: the TFDS data dir; None: TFDS's own default
      ($TFDS_DATA_DIR, else ~/tensorflow_datasets).
    download: whether TFDS may download and prepare the data.
    image_size, resize: see `fastcifar.data.sources.images.fit_images`.

  Returns:
    The `ImageDataset`; `test_split` says which split it tests on.

  Raises:
    UsageError: an unknown name, data not prepared and no download asked
      for, no network, or not an image classification dataset.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    with _tfds_lookup_quiet():
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
  except tfds.core.DatasetNotFoundError:
    raise UsageError(
        f"tfds:{name}: TFDS has no dataset of that name (nor is it prepared "
        f"in {data_dir or default_tfds_dir()}); see "
        "https://www.tensorflow.org/datasets/catalog") from None
  where = builder.data_dir
  if download and not prepared:
    # The first host in the builder's checksums list (CIFAR's: the CIFAR
    # page); a dataset without one is left to TFDS.
    hosts = sorted({urllib.parse.urlsplit(url).hostname
                    for url in (builder.url_infos or {})} - {None})
    if hosts:
      _check_network(name, (hosts[0], 443))
    builder.download_and_prepare()
  image_key, label_key = _feature_keys(name, builder.info)
  train, test, test_from = _choose_splits(name, builder.info)
  origin = f"TFDS {name} in {where}"
  arrays = []
  for split in (train, test):
    try:
      examples = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, tfds.core.DatasetNotFoundError) as e:
      raise UsageError(
          f"{name} is not prepared in {where}: pass --download to fetch it "
          f"with TFDS, or " + offline_options(name)) from e
    count = (builder.info.splits[split].num_examples if builder.info.splits
             else int(examples.reduce(0, lambda n, _: n + 1)))
    examples = examples.map(lambda ex: (_rgb(ex[image_key]), ex[label_key]))
    arrays += fit_images(examples, count, lambda i, s=split: f"{s}[{i}]",
                         origin, image_size, resize)
    if image_size is None and len(arrays[-2]):
      image_size = arrays[-2].shape[1:3]  # the test split must match train
  return make_dataset(name, *arrays, builder.info.features[label_key].names,
                      origin=origin, test_split=test_from)


def _rgb(image):
  """TFDS images as RGB: grayscale repeated, alpha dropped."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if image.shape[-1] == 1:
    return tf.image.grayscale_to_rgb(image)
  return image[..., :3]
