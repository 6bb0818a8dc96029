"""Runs a Python program and writes its own peak resident memory to a file.

    python benchmarks/rss_probe.py OUT.json -m MODULE [ARG...]
    python benchmarks/rss_probe.py OUT.json -c CODE [ARG...]

The program runs in this very process, as `python -m MODULE` or `python -c
CODE` would run it; at its end, even by an exception or `sys.exit`, OUT.json
receives `{"peak_rss_bytes": ..., "source": ...}` and the exit status is the
program's.

Why not the parent's `os.wait4` or `getrusage(RUSAGE_CHILDREN)`: on Linux a
child's `ru_maxrss` includes the parent's high-water mark at the time of the
fork (the kernel carries it across `exec`), so a parent holding 1 GB would
report at least 1 GB for a child that used 10 MB. `VmHWM` in
/proc/self/status is the high-water mark of this process's own memory only.
This module imports nothing heavy, so it adds nothing to the peak; it runs
by its path, not as `python -m benchmarks.rss_probe`, because importing the
`benchmarks` package that way would silence and so import TensorFlow first
(see `benchmarks/__init__.py`).
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys


def peak_rss() -> tuple[int, str]:
  """This process's peak resident memory in bytes, and where it was read."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024, "VmHWM"
  except OSError:
    pass
  # No /proc (macOS): ru_maxrss, in bytes there, KiB on Linux.
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return (maxrss if sys.platform == "darwin" else maxrss * 1024,
          "ru_maxrss")


def main(argv: list[str]) -> None:
  if len(argv) < 4 or argv[2] not in ("-m", "-c"):
    sys.exit(__doc__)
  out, kind, target, args = argv[1], argv[2], argv[3], argv[4:]
  # The program looks for modules where `python -m`/`-c` would: in the
  # current folder, not in this file's.
  sys.path[0] = os.getcwd()
  try:
    if kind == "-m":
      # As `python -m` has it while the module is located (fastcifar's
      # package reads it, see fastcifar/__init__.py); run_module then puts
      # the module's path first.
      sys.argv = ["-m", *args]
      runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
      sys.argv = ["-c", *args]
      code = compile(target, "<string>", "exec")
      exec(code, {"__name__": "__main__"})  # pylint: disable=exec-used
  finally:
    peak, source = peak_rss()
    with open(out, "w") as f:
      json.dump({"peak_rss_bytes": peak, "source": source}, f)


if __name__ == "__main__":
  main(sys.argv)
