"""Stop means stop: SIGTERM and Ctrl-C end the process within seconds.

Python runs a signal handler only between bytecodes of the main thread, so a
main thread blocked inside TensorFlow (a dead tf.data service, a stuck
collective, a slow read) never runs it. `StopOnSignal` keeps the clean stop
(the handler raises KeyboardInterrupt; the entry point prints the resume hint
at the next step boundary) and adds a watchdog thread that the C-level signal
handler wakes through `signal.set_wakeup_fd`, whatever the main thread is
doing. If the process is still alive `grace_seconds` later, the watchdog
prints the same hint and ends it with `os._exit`; a second signal ends it at
once. Nothing here writes files: a checkpoint being written when the process
ends is simply not the latest one (see `checkpointing`).

Other threads that find the run cannot continue (a lost tf.data service or
worker) end it the same way, with `exit_now`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130

# Serializes the one line a stopping process prints, so the main thread and a
# watchdog never both print it.
_say_lock = threading.Lock()
_active: StopOnSignal | None = None


def say(line: str) -> None:
  """Prints the line that explains why the process stops, on stderr.

  Under an active `StopOnSignal`, its watchdog will not print another.
  """
  with _say_lock:
    print(line, file=sys.stderr, flush=True)
    if _active is not None:
      _active.said = True


def exit_now(line: str, status: int) -> NoReturn:
  """Prints `line` (unless a stop was already explained) and exits at once.

  For threads other than the main one, which may be blocked inside
  TensorFlow: `os._exit` skips clean-up that could block as well. Files
  written atomically (checkpoints, outputs) are never left half-written.
  """
  with _say_lock:
    if _active is None or not _active.said:
      print(line, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access


@contextlib.contextmanager
def deferred():
  """Holds a stop request's KeyboardInterrupt until the block has ended.

  For blocks in which TensorFlow calls back from C++ into Python (a
  checkpoint's save): an exception raised in such a callback is printed
  and swallowed, the run goes on, and only the watchdog ends it. Without
  an active `StopOnSignal`, or off the main thread, it does nothing.
  """
  active = _active
  if (active is None
      or threading.current_thread() is not threading.main_thread()):
    yield
    return
  active.deferring += 1
  try:
    yield
  finally:
    active.deferring -= 1
    if not active.deferring and active.pending:
      active.pending = False
      raise KeyboardInterrupt


class StopOnSignal:
  """Context manager: SIGTERM and SIGINT stop the process within seconds.

  Inside it, both signals raise KeyboardInterrupt in the main thread (catch
  it where the run can stop cleanly and print the hint with `say`). The
  watchdog ends the process `grace_seconds` after the first signal if it has
  not ended by then, and at once on a second. Leaving the context after a
  signal (normally or by SystemExit) ends the process with its exit status
  via `os._exit`: interpreter shutdown can block in TensorFlow as well.

  Use it in entry points only, from the main thread.
  """

  def __init__(self, message: Callable[[], str], grace_seconds: float = 7.0,
               status: int = EXIT_INTERRUPTED):
    """Sets up the watchdog (nothing is installed before `__enter__`).

    Args:
      message: the line to print when the watchdog ends the process, e.g.
        the resume hint; called only then, from the watchdog thread while
        the main thread may be stuck: it must touch neither the disk (the
        folder it would read may be what hangs) nor TensorFlow.
      grace_seconds: how long the main thread has to stop cleanly.
      status: the exit status when the watchdog ends the process.
    """
    self._message = message
    self._grace = grace_seconds
    self._status = status
    self.requested = False
    self.said = False
    self.deferring = 0  # inside `deferred()` blocks
    self.pending = False  # a stop request those blocks held
    self._reader = self._writer = None
    self._thread = None
    self._previous = {}
    self._previous_fd = -1

  def __enter__(self) -> StopOnSignal:
    global _active
    self._reader, self._writer = socket.socketpair()
    self._writer.setblocking(False)
    for signum in STOP_SIGNALS:
      self._previous[signum] = signal.signal(signum, self._interrupt)
    self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(),
                                             warn_on_full_buffer=False)
    self._thread = threading.Thread(
        target=self._watch, name="fastcifar-stop-watchdog", daemon=True)
    self._thread.start()
    _active = self
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    global _active
    if self.requested:
      status = self._status
      if isinstance(exc, SystemExit) and isinstance(exc.code, int):
        status = exc.code
      elif not self.said:  # interrupted where nothing caught it
        say(self._message())
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)  # pylint: disable=protected-access
    _active = None
    signal.set_wakeup_fd(self._previous_fd)
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    # Closing the writer ends the watchdog's wait; its socket is closed only
    # once it has returned (a context left at once, as on a bad flag, must not
    # close the socket under a watchdog that has not started waiting yet).
    self._writer.close()
    self._thread.join(timeout=1.0)
    self._reader.close()

  def _interrupt(self, signum, frame):
    """The Python-level handler: runs when the main thread can stop."""
    del signum, frame
    self.requested = True
    if self.deferring:
      self.pending = True
      return
    raise KeyboardInterrupt

  def _watch(self) -> None:
    """Woken by the C-level handler, whatever the main thread is doing."""
    deadline = None
    signals = 0
    while True:
      timeout = (None if deadline is None
                 else max(0.0, deadline - time.monotonic()))
      try:
        self._reader.settimeout(timeout)
        data = self._reader.recv(64)
      except socket.timeout:
        self._end(f"did not stop within {self._grace:.0f} s")
        return
      except OSError:
        return  # the context was left
      if not data:
        return
      for signum in data:
        if signum not in STOP_SIGNALS:
          continue
        signals += 1
        if signals > 1:
          self._end("second stop request")
          return
        self.requested = True
        deadline = time.monotonic() + self._grace

  def _end(self, why: str) -> None:
    try:
      line = self._message()
    except Exception as e:  # pylint: disable=broad-except
      line = f"stopped ({e})"
    exit_now(f"{line} [{why}]", self._status)
