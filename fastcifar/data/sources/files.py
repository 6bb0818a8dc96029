"""Reading the files of a folder or a tar archive as bytes, safely.

Archives are never extracted to disk: members are read into memory by name,
so a crafted member name ("../../etc/passwd", an absolute path) cannot write
anywhere, and links, devices and FIFOs are ignored outright. Sizes are checked
against limits before any member is read.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from typing import Iterator

from fastcifar.errors import UsageError

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_MEMBER_BYTES = 512 * 2**20  # the largest CIFAR file (cifar-100 train) is 150 MiB
# No limit on the files' total: they are read one at a time, and a source
# larger than memory is what `--format=shards` is for.
MAX_FILES = 1_000_000


def is_tar_path(path: str) -> bool:
  return path.lower().endswith(TAR_SUFFIXES)


def _clean(name: str) -> str:
  parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
  return "/".join(parts)


def _open_tar(path: str) -> tarfile.TarFile:
  try:
    return tarfile.open(path, mode="r|*")  # one streaming pass, no seeks
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise UsageError(f"{path}: not a readable tar archive ({e}); download or "
                     "repack it") from e


def _tar_members(tar: tarfile.TarFile, path: str, with_dirs: bool = False):
  """Regular files (and folders, if asked) only: links, devices and FIFOs
  are never followed."""
  try:
    count = 0
    while (member := tar.next()) is not None:
      # tarfile keeps every TarInfo it has read (measured: some 30 MB for a
      # 60,000-image archive); a stream is read once, so forget them.
      tar.members.clear()
      count += 1
      if count > MAX_FILES:
        raise UsageError(f"{path}: more than {MAX_FILES} members; not a CIFAR "
                         "archive")
      if member.isreg() or (with_dirs and member.isdir()):
        yield member
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise UsageError(f"{path}: the archive is truncated or corrupt ({e}); "
                     "download or repack it") from e


def list_files(path: str) -> list[str]:
  """Lists the regular files and folders below a folder or in a tar archive.

  Args:
    path: a folder, or a `.tar`, `.tar.gz` or `.tgz` file.

  Returns:
    Relative '/'-separated names, sorted; folders end with '/' (so that an
    empty class folder can be told apart from no folder at all).
  """
  if os.path.isdir(path):
    names = []
    for root, dirs, files in os.walk(path):
      names += [_clean(os.path.relpath(os.path.join(root, d), path)) + "/"
                for d in dirs if not os.path.islink(os.path.join(root, d))]
      for f in files:
        full = os.path.join(root, f)
        if os.path.isfile(full) and not os.path.islink(full):
          names.append(_clean(os.path.relpath(full, path)))
      if len(names) > MAX_FILES:
        raise UsageError(f"{path}: more than {MAX_FILES} files; point "
                         "--data_dir at the dataset's own folder")
    return sorted(names)
  with _open_tar(path) as tar:
    return sorted(_clean(m.name) + ("/" if m.isdir() else "")
                  for m in _tar_members(tar, path, with_dirs=True))


def file_sizes(path: str, names) -> dict[str, int]:
  """The sizes of the named files of a folder or a tar archive, unread.

  Args:
    path: a folder, or a `.tar`, `.tar.gz` or `.tgz` file.
    names: relative names as `list_files` returns them.

  Returns:
    name -> size in bytes, for those of `names` that exist (a tar is read
    through once, its members' contents skipped).
  """
  wanted = set(names)
  if os.path.isdir(path):
    found = {n: os.path.join(path, *n.split("/")) for n in wanted}
    return {n: os.path.getsize(f) for n, f in found.items()
            if os.path.isfile(f)}
  with _open_tar(path) as tar:
    return {_clean(m.name): m.size for m in _tar_members(tar, path)
            if _clean(m.name) in wanted}


def iter_files(path: str, names) -> Iterator[tuple[str, bytes]]:
  """Reads the named files of a folder or a tar archive one at a time.

  Only the file at hand is in memory (a caller that decodes as it goes never
  holds the whole archive); a tar is read in one streaming pass.

  Args:
    path: a folder, or a `.tar`, `.tar.gz` or `.tgz` file.
    names: relative names as `list_files` returns them.

  Yields:
    `(name, contents)` for every name asked for, each once: in the order
    asked for from a folder, in the order stored from a tar.

  Raises:
    UsageError: a file is missing (raised after the others were yielded), too
      large, or the archive is damaged.
  """
  wanted = set(names)
  seen: set[str] = set()

  def check_size(name: str, size: int) -> None:
    if size > MAX_MEMBER_BYTES:
      raise UsageError(f"{path}: {name} is {size} bytes, larger than any CIFAR "
                       f"file or image (at most {MAX_MEMBER_BYTES >> 20} MiB "
                       "each); point --data_dir at the dataset itself")

  if os.path.isdir(path):
    for name in dict.fromkeys(names):  # asked-for order, each once
      full = os.path.join(path, *name.split("/"))
      try:
        check_size(name, os.path.getsize(full))
        with open(full, "rb") as f:
          data = f.read()
      except OSError as e:  # not the writer's fault: name the file
        raise UsageError(f"cannot read {full} ({e.strerror or e}); make it "
                         "readable or remove it from the source") from e
      seen.add(name)
      yield name, data
      del data  # not held while the next file is read
  else:
    with _open_tar(path) as tar:
      for member in _tar_members(tar, path):
        name = _clean(member.name)
        if name in wanted and name not in seen:
          check_size(name, member.size)
          try:
            data = tar.extractfile(member).read()
          except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise UsageError(f"{path}: the archive is truncated or corrupt "
                             f"({e}); download or repack it") from e
          if len(data) != member.size:
            raise UsageError(f"{path}: {name} is truncated; download or "
                             "repack the archive")
          seen.add(name)
          yield name, data
          del data  # not held while the next member is read
  missing = wanted - seen
  if missing:
    raise UsageError(f"{path}: missing {sorted(missing)[0]}; the archive or "
                     "folder is incomplete")
