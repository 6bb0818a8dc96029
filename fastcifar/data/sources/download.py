"""The official CIFAR archives, downloaded once into Keras's dataset cache.

As `keras.datasets.cifar10.load_data()` does: the python archive from the
CIFAR page, checked against the sha256 Keras publishes for it, through
`keras.utils.get_file` (its progress bar) into `$KERAS_HOME/datasets` (by
default ~/.keras/datasets). fastcifar then reads it with its own safe loader,
never by unpickling it freely.

A transfer lands under a `.part` name and is renamed only after its checksum
matched, so an interrupted, truncated or wrong download never sits where a
later run would take it for the archive; the cached archive is checked
against the sha256 again on every run for the same reason (a tenth of a
second for CIFAR-10).

Behind a proxy, urllib follows `https_proxy`; a mirror serving the same files
(`FASTCIFAR_MIRROR=https://host/path/` or the `mirror` argument) replaces the
Toronto server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import urllib.parse
import urllib.request

from fastcifar.errors import UsageError

ORIGIN = "https://www.cs.toronto.edu/~kriz/"
MIRROR_ENV = "FASTCIFAR_MIRROR"
# File names on the CIFAR page and the sha256 that Keras's own
# keras/src/datasets/cifar10.py and cifar100.py check them against.
ARCHIVES = {
    "cifar10": (
        "cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),
}
# Folders `keras.datasets.*.load_data()` extracts into the same cache (Keras
# 3 and Keras 2 names): a user who ran it once does not download again.
KERAS_EXTRACTED = {
    "cifar10": ("cifar-10-batches-py-target", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-python-target", "cifar-100-python"),
}
# Offline must fail in seconds: a dead route otherwise blocks for minutes.
CONNECT_TIMEOUT = 10
# A transfer that stalls this long is given up (and removed).
READ_TIMEOUT = 60


def cache_dir() -> str:
  """Keras's dataset cache: `$KERAS_HOME/datasets`, else ~/.keras/datasets.

  Keras uses /tmp/.keras when the home folder is not writable; so does this.
  """
  home = os.environ.get("KERAS_HOME")
  if not home:
    base = os.path.expanduser("~")
    home = os.path.join(base if os.access(base, os.W_OK) else "/tmp",
                        ".keras")
  return os.path.join(home, "datasets")


def archive_url(dataset: str, mirror: str | None = None) -> str:
  """Where `dataset`'s archive is fetched from.

  Args:
    dataset: "cifar10" or "cifar100".
    mirror: a base URL holding the CIFAR page's file names; None for
      `$FASTCIFAR_MIRROR`, else the CIFAR page itself.

  Returns:
    The archive's URL.
  """
  base = mirror or os.environ.get(MIRROR_ENV) or ORIGIN
  name = ARCHIVES[dataset][0]
  if base.rstrip("/").endswith("/" + name):  # a full URL of the file
    return base
  return base.rstrip("/") + "/" + name


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(2**20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _is_official(path: str, dataset: str) -> bool:
  return os.path.isfile(path) and _sha256(path) == ARCHIVES[dataset][1]


def cached(dataset: str) -> str | None:
  """The archive (or Keras's extracted folder) in the cache, if it is there.

  Args:
    dataset: "cifar10" or "cifar100".

  Returns:
    A path `sources.load_path` reads, or None. An archive counts only when
    its sha256 is the official one.
  """
  folder = cache_dir()
  archive = os.path.join(folder, ARCHIVES[dataset][0])
  if _is_official(archive, dataset):
    return archive
  for name in KERAS_EXTRACTED[dataset]:
    if os.path.isdir(os.path.join(folder, name)):
      return os.path.join(folder, name)
  return None


def where_to_put(dataset: str) -> str:
  """The cache path to drop a copy of the official archive into."""
  return os.path.join(cache_dir(), ARCHIVES[dataset][0])


def _first_hop(url: str) -> tuple[str, int]:
  """The host and port a request for `url` connects to (a proxy, if set)."""
  parts = urllib.parse.urlsplit(url)
  proxy = urllib.request.getproxies().get(parts.scheme)
  if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
    parts = urllib.parse.urlsplit(proxy if "://" in proxy
                                  else "http://" + proxy)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  return parts.hostname or "", port


@contextlib.contextmanager
def _socket_timeout(seconds: float):
  """`urlretrieve` takes no timeout: lend it the process default, then
  restore it."""
  before = socket.getdefaulttimeout()
  socket.setdefaulttimeout(seconds)
  try:
    yield
  finally:
    socket.setdefaulttimeout(before)


def _remove(path: str) -> None:
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


def offline_help(dataset: str) -> str:
  """What to do instead of downloading: every download error ends with it.

  A file already in the cache under the archive's name that is not the
  official one (a damaged or different copy) is named as such: telling the
  user to put the archive where theirs already is would not help.
  """
  where = where_to_put(dataset)
  if os.path.isfile(where) and not _is_official(where, dataset):
    put = (f"{where} is not the official archive (its sha256 differs): "
           f"replace it with the official one, or pass --data_dir={where} "
           "to read it as it is")
  else:
    put = (f"pass --data_dir=PATH to a copy you have, put the official "
           f"archive at {where}")
  return f"{put}, or train on generated data with --dataset=synthetic"


def download(dataset: str, mirror: str | None = None) -> str:
  """Downloads `dataset`'s official archive into the cache, once.

  Args:
    dataset: "cifar10" or "cifar100".
    mirror: see `archive_url`.

  Returns:
    The path of the verified archive.

  Raises:
    UsageError: the server is unreachable, the transfer failed, or the file
      is not the official one; nothing is left where a later run looks.
  """
  import keras  # pylint: disable=g-import-not-at-top
  url = archive_url(dataset, mirror)
  sha256 = ARCHIVES[dataset][1]
  target = where_to_put(dataset)
  failed = f"cannot download {dataset} from {url}"
  host, port = _first_hop(url)
  try:
    socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
  except OSError as e:
    raise UsageError(f"{failed} ({e or type(e).__name__}); "
                     + offline_help(dataset)) from None
  try:
    os.makedirs(cache_dir(), exist_ok=True)
  except OSError as e:
    raise UsageError(f"cannot create the download cache {cache_dir()} ({e}); "
                     "set KERAS_HOME to a writable folder") from None
  part = target + ".part"
  _remove(part)  # a leftover of a killed run: never resumed, never trusted
  try:
    with _socket_timeout(READ_TIMEOUT):
      part = keras.utils.get_file(
          fname=os.path.basename(part), origin=url, file_hash=sha256,
          cache_dir=os.path.dirname(cache_dir()), cache_subdir="datasets")
  except ValueError:  # get_file's checksum mismatch: the file stays behind
    _remove(part)
    raise UsageError(f"{failed}: the file's sha256 is not the official "
                     f"{sha256}; the server (or a proxy) sent something else. "
                     + offline_help(dataset)) from None
  except (Exception, KeyboardInterrupt) as e:  # get_file wraps URL errors
    _remove(part)
    if isinstance(e, KeyboardInterrupt):
      raise
    raise UsageError(f"{failed} ({e}); run again to retry, or "
                     + offline_help(dataset)) from None
  os.replace(part, target)
  return target
