"""Tests for fastcifar.cli.common's process settings for commands."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# A child that starts many threads, each allocating while all are alive,
# and prints how many arenas glibc made (malloc_stats, on stderr).
ARENAS = textwrap.dedent("""
    import ctypes, os, sys, threading
    from fastcifar.cli import common
    if sys.argv[1] == "limit":
      assert common.limit_malloc_arenas()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    threads = 4 * len(os.sched_getaffinity(0)) + 4
    alive = threading.Barrier(threads)
    def allocate():
      alive.wait()
      for _ in range(100):
        libc.free(libc.malloc(1 << 16))
      alive.wait()
    workers = [threading.Thread(target=allocate) for _ in range(threads)]
    for w in workers:
      w.start()
    for w in workers:
      w.join()
    libc.malloc_stats()
""")


def _arenas(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", ARENAS, mode],
                       capture_output=True, text=True, cwd=REPO_ROOT,
                       timeout=120, check=True)
  return out.stderr.count("Arena ")


@pytest.mark.skipif(not hasattr(os, "confstr") or "glibc" not in (
    os.confstr("CS_GNU_LIBC_VERSION") or ""), reason="glibc only")
def test_commands_keep_one_malloc_arena_per_core():
  # Freed memory stays resident in the arena of the thread that freed it:
  # TensorFlow's threads in 16 arenas held 200-400 MB so on 2 cores.
  cores = len(os.sched_getaffinity(0))
  assert _arenas("limit") <= cores < _arenas("default")


def test_the_train_command_caps_arenas_before_it_runs(monkeypatch):
  from fastcifar import train  # pylint: disable=g-import-not-at-top
  from fastcifar.cli import common  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(common, "limit_malloc_arenas",
                      lambda: calls.append("arenas"))
  monkeypatch.setattr(common, "run", lambda main, name: calls.append(name))
  train.run()
  assert calls == ["arenas", "fastcifar.train"]


def test_a_users_malloc_arena_max_is_left_as_set(monkeypatch):
  # glibc reads MALLOC_ARENA_MAX at start-up; a later mallopt would
  # override the user's setting.
  from fastcifar.cli import common  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
  assert not common.limit_malloc_arenas()
