"""Command runs forked from one process that has imported them.

A test whose point is a process (killed with SIGKILL inside an epoch, sent
SIGTERM after a save, a cluster's worker lost) but not a fresh interpreter
pays ~7 s of `import tensorflow` for every process it starts (2-core AMD
EPYC). A `CommandServer` imports TensorFlow, Keras and the fastcifar
library once, as a command's start-up does (oneDNN on, TensorFlow's start-up
logging silenced, then the import), and forks each run from there: a real
process of its own, with its own pid, its own TensorFlow runtime (none has
started in the server when it forks: importing TensorFlow starts none) and
its own exit status, killed and signalled like any. The run imports its
command's module itself (hundredths of a second), so it has that command's
flags and no other's, as `python -m fastcifar.X` has.

What a forked run does not have: moments inside start-up (the import is
done), and environment variables read at import by TensorFlow
(TF_ENABLE_ONEDNN_OPTS, TF_CPP_MIN_LOG_LEVEL), which are the server's.
Tests of those keep a fresh interpreter (`python -m fastcifar.train`).
TFDS, which reads $TFDS_DATA_DIR when imported, is imported by each run.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What every command imports, and defines no flag: a command's module does
# (fastcifar.cli.common, fastcifar.train...), so no command's is here.
LIBRARY = ("tensorflow", "keras", "fastcifar.data.datasets",
           "fastcifar.data.service", "fastcifar.doctor.checks",
           "fastcifar.doctor.watch", "fastcifar.models",
           "fastcifar.optimizers", "fastcifar.serving",
           "fastcifar.training.checkpointing",
           "fastcifar.training.evaluation", "fastcifar.training.fit",
           "fastcifar.training.trainer")

# Reads one JSON request a line on stdin, forks a child for each, and says
# "started ID PID" and "exited PID CODE" (CODE as subprocess's returncode:
# -N when signal N ended it). One thread only, so nothing is mid-print, and
# no lock held, when it forks.
_SERVER = textwrap.dedent("""
    import importlib, json, os, select, signal, sys, traceback

    from fastcifar.cli import cpu, quiet
    cpu.enable_onednn()  # as a command's start-up does, before TensorFlow
    quiet.start(verbose=False)
    for module in sys.argv[1:]:
      importlib.import_module(module)

    def say(*words):
      os.write(1, (" ".join(map(str, words)) + "\\n").encode())

    def child(request):
      code = 1
      try:
        if request["new_session"]:
          os.setsid()
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        # As the interpreter puts PYTHONPATH on sys.path, after the folder
        # `python -m` puts first ("" here: the run's cwd).
        if request["env"].get("PYTHONPATH"):
          sys.path[1:1] = request["env"]["PYTHONPATH"].split(os.pathsep)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
          os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        module = importlib.import_module(request["module"])
        sys.argv = [module.__file__, *request["args"]]  # as `python -m`
        module.run()
        code = 0
      except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
          code = e.code or 0
        else:
          print(e.code, file=sys.stderr)
      except BaseException:
        traceback.print_exc()
      finally:
        for stream in (sys.stdout, sys.stderr):
          try:
            stream.flush()
          except BaseException:
            pass
        os._exit(code)

    children, pending = set(), b""
    say("ready")
    while True:
      ready, _, _ = select.select([0], [], [], 0.02 if children else None)
      if ready:
        data = os.read(0, 1 << 16)
        if not data:  # the tests are done: nothing outlives them
          for pid in children:
            os.kill(pid, signal.SIGKILL)
          break
        pending += data
        while b"\\n" in pending:
          line, pending = pending.split(b"\\n", 1)
          request = json.loads(line)
          pid = os.fork()
          if pid == 0:
            child(request)
          children.add(pid)
          say("started", request["id"], pid)
      for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
          children.discard(pid)
          say("exited", pid, os.waitstatus_to_exitcode(status))
""")


class CommandServer:
  """One process that imported fastcifar's library; forks each command run.

  Use as a context manager, or `close()` it: runs still going then are
  killed.
  """

  def __init__(self, modules: Sequence[str] = LIBRARY,
               env: dict[str, str] | None = None, timeout: float = 180):
    """Starts the server and waits until it has imported `modules`.

    Args:
      modules: what to import ahead. Not a command's module: each defines
        its flags, and two commands' flags clash (--model).
      env: variables for the server, and so for every run (read by
        TensorFlow at import, or by the commands).
      timeout: seconds to wait for the imports.
    """
    self._folder = tempfile.mkdtemp(prefix="fastcifar-forked-")
    self._ids = itertools.count()
    self._started: dict[int, int] = {}
    self._exits: dict[int, int] = {}
    self._pending = b""
    self._process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, *modules],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT, **(env or {})),
        cwd=REPO_ROOT)
    self._ready = False
    self._read_until(lambda: self._ready, timeout, "the server's imports")

  def start(self, module: str, args: Sequence[str], *,
            cwd: str | None = None, env: dict[str, str] | None = None,
            new_session: bool = False) -> ForkedRun:
    """Forks a run of `python -m MODULE ARGS...`.

    Args:
      module: the command, e.g. "fastcifar.train".
      args: its command line after the module.
      cwd: its working folder (the repository's when None).
      env: variables to add to its environment (e.g. TF_CONFIG); a
        PYTHONPATH's folders go on sys.path too, as the interpreter does.
      new_session: run it in a session (and process group) of its own.

    Returns:
      The running process.
    """
    request_id = next(self._ids)
    paths = [os.path.join(self._folder, f"{request_id}.{name}")
             for name in ("stdout", "stderr")]
    for path in paths:  # readable (empty) before the run opens them
      open(path, "w").close()
    request = {"id": request_id, "module": module, "args": list(args),
               "cwd": cwd or REPO_ROOT, "env": dict(env or {}),
               "stdout": paths[0], "stderr": paths[1],
               "new_session": new_session}
    self._process.stdin.write(json.dumps(request).encode() + b"\n")
    self._process.stdin.flush()
    self._read_until(lambda: request_id in self._started, 30, "a fork")
    return ForkedRun(self, self._started[request_id], [module, *args],
                     *paths)

  def run(self, module: str, args: Sequence[str], *, timeout: float = 300,
          **kwargs) -> subprocess.CompletedProcess:
    """`start` and wait: as `subprocess.run(..., capture_output=True)`.

    Args:
      module: the command, e.g. "fastcifar.train".
      args: its command line after the module.
      timeout: seconds it may take (subprocess.TimeoutExpired, killed).
      **kwargs: `start`'s cwd, env, new_session.

    Returns:
      Its exit code, stdout and stderr (text).
    """
    process = self.start(module, args, **kwargs)
    try:
      stdout, stderr = process.communicate(timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(60)
      raise
    return subprocess.CompletedProcess(process.args, process.returncode,
                                       stdout, stderr)

  def close(self) -> None:
    """Kills the runs still going and ends the server."""
    if self._process.poll() is None:
      self._process.stdin.close()  # the server kills its children
      self._process.wait(timeout=60)
    self._process.stdout.close()
    shutil.rmtree(self._folder, ignore_errors=True)

  def __enter__(self) -> CommandServer:
    return self

  def __exit__(self, *unused) -> None:
    self.close()

  def exit_code(self, pid: int) -> int | None:
    """A run's exit code, None while it runs (reads what the server said)."""
    fd = self._process.stdout.fileno()
    while select.select([fd], [], [], 0)[0]:  # what it has said, no waiting
      data = os.read(fd, 1 << 16)
      if not data:
        break
      self._pending += data
    self._take_lines()
    return self._exits.get(pid)

  def wait(self, pid: int, timeout: float | None, what: str) -> int:
    """Waits for a run to end; TimeoutError after `timeout` seconds."""
    self._read_until(lambda: pid in self._exits, timeout, what)
    return self._exits[pid]

  def _read_until(self, done, timeout: float | None, what: str) -> None:
    """Reads the server's lines until `done()`; TimeoutError after timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = self._process.stdout.fileno()
    while True:
      self._take_lines()
      if done():
        return
      left = None if deadline is None else deadline - time.monotonic()
      if left is not None and left <= 0:
        raise TimeoutError(f"no {what} within {timeout} s")
      ready, _, _ = select.select([fd], [], [], left)
      if ready:
        data = os.read(fd, 1 << 16)
        if not data:
          raise RuntimeError(f"the command server ended (exit "
                             f"{self._process.wait()}) waiting for {what}")
        self._pending += data

  def _take_lines(self) -> None:
    """Notes each complete line the server has said."""
    while b"\n" in self._pending:
      line, self._pending = self._pending.split(b"\n", 1)
      self._note(line.decode().split())

  def _note(self, words: list[str]) -> None:
    if words == ["ready"]:
      self._ready = True
    elif words[0] == "started":
      self._started[int(words[1])] = int(words[2])
    elif words[0] == "exited":
      self._exits[int(words[1])] = int(words[2])


class ForkedRun:
  """A forked command run, used as a `subprocess.Popen` would be."""

  def __init__(self, server: CommandServer, pid: int, args: list[str],
               stdout_path: str, stderr_path: str):
    self._server = server
    self.pid = pid
    self.args = args
    self.stdout_path = stdout_path
    self.stderr_path = stderr_path
    self.returncode: int | None = None

  def poll(self) -> int | None:
    """Its exit code, or None while it runs."""
    if self.returncode is None:
      self.returncode = self._server.exit_code(self.pid)
    return self.returncode

  def wait(self, timeout: float | None = None) -> int:
    """Waits for it to end (subprocess.TimeoutExpired after `timeout`)."""
    if self.returncode is None:
      try:
        self.returncode = self._server.wait(self.pid, timeout,
                                            f"exit of {self.args}")
      except TimeoutError:
        raise subprocess.TimeoutExpired(self.args, timeout) from None
    return self.returncode

  def send_signal(self, sig: int) -> None:
    """Sends `sig` unless it has ended (its pid may be another's then)."""
    if self.poll() is None:
      try:
        os.kill(self.pid, sig)
      except ProcessLookupError:
        pass  # it ended, and the server reaped it, since poll read

  def terminate(self) -> None:
    self.send_signal(signal.SIGTERM)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)

  @property
  def stdout(self) -> str:
    """What it wrote on stdout so far."""
    with open(self.stdout_path, encoding="utf-8", errors="replace") as f:
      return f.read()

  @property
  def stderr(self) -> str:
    """What it wrote on stderr so far."""
    with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
      return f.read()

  def printed(self, enough: Callable[[list[str]], bool],
              timeout: float = 240) -> list[str]:
    """The complete lines it has printed, once they are `enough`.

    Args:
      enough: whether the lines so far are what to wait for.
      timeout: seconds to wait (AssertionError after them, or if it ends).

    Returns:
      Its stdout's lines so far, each ending in a newline.
    """
    deadline = time.monotonic() + timeout
    while True:
      lines = [line for line in self.stdout.splitlines(keepends=True)
               if line.endswith("\n")]
      if enough(lines):
        return lines
      if self.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(
            f"not printed: {self.stdout!r}, {self.stderr[-3000:]}")
      time.sleep(0.05)

  def communicate(self, timeout: float | None = None) -> tuple[str, str]:
    """Waits for it to end; returns (stdout, stderr)."""
    self.wait(timeout)
    return self.stdout, self.stderr
