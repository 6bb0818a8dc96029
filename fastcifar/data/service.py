"""Is the tf.data service there? Asked before training and while it runs.

`tf.data.experimental.service` has no connect timeout: a client of an
address where no dispatcher listens, or of a dispatcher that died, retries
forever inside TensorFlow. So fastcifar asks the dispatcher itself, over
gRPC with a deadline, for its workers (`DispatcherService/GetWorkers`, the
call the dispatcher serves for exactly this), and checks that each worker's
gRPC port answers.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import grpc

from fastcifar.errors import UsageError

_GET_WORKERS = "/tensorflow.data.DispatcherService/GetWorkers"


def _worker_addresses(response: bytes) -> list[str]:
  """Decodes a GetWorkersResponse: `repeated WorkerInfo workers = 1`,
  `WorkerInfo.address = 1` (tensorflow/core/data/service/dispatcher.proto).
  """

  def fields(data: bytes):
    i = 0
    while i < len(data):
      key, i = _varint(data, i)
      if key & 7 != 2:  # only length-delimited fields appear here
        raise ValueError("unexpected field")
      size, i = _varint(data, i)
      yield key >> 3, data[i:i + size]
      i += size

  return [address.decode()
          for number, info in fields(response) if number == 1
          for field, address in fields(info) if field == 1]


def _varint(data: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[i]
    value |= (byte & 0x7F) << shift
    i += 1
    if not byte & 0x80:
      return value, i
    shift += 7


def host_port(address: str) -> str:
  """`grpc://HOST:PORT` -> `HOST:PORT`."""
  return address.split("://", 1)[-1]


def get_workers(address: str, timeout: float) -> list[str]:
  """The addresses of the dispatcher's workers.

  Args:
    address: the dispatcher, `grpc://HOST:PORT` or `HOST:PORT`.
    timeout: seconds to wait for an answer.

  Raises:
    grpc.RpcError: no dispatcher answered in time.
  """
  with grpc.insecure_channel(host_port(address)) as channel:
    return _worker_addresses(channel.unary_unary(_GET_WORKERS)(
        b"", timeout=timeout, wait_for_ready=True))


def answers(address: str, timeout: float) -> bool:
  """Whether a gRPC server accepts a connection at `address` in time."""
  with grpc.insecure_channel(host_port(address)) as channel:
    try:
      grpc.channel_ready_future(channel).result(timeout=timeout)
      return True
    except grpc.FutureTimeoutError:
      return False


def _problem(address: str, timeout: float) -> str | None:
  """What is wrong with the service at `address`, or None if nothing."""
  try:
    workers = get_workers(address, timeout)
  except grpc.RpcError as e:
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
      return "no tf.data service dispatcher answers there"
    return f"no tf.data service dispatcher answers there ({e.code().name})"
  except (ValueError, IndexError):  # an answer, but not GetWorkersResponse
    return "what answers there is not a tf.data service dispatcher"
  if not workers:
    return "the dispatcher has no workers"
  lost = [w for w in workers if not answers(w, timeout)]
  if lost:
    return f"its worker {lost[0]} does not answer"
  return None


def check(address: str, timeout: float = 10.0) -> None:
  """Waits up to `timeout` s for a dispatcher with workers that answer.

  Raises:
    UsageError: naming the address and what to check.
  """
  deadline = time.monotonic() + timeout
  while True:
    problem = _problem(address, max(1.0, min(5.0, deadline - time.monotonic())))
    if problem is None:
      return
    if time.monotonic() >= deadline:
      raise UsageError(
          f"--data_service={address}: {problem} (waited {timeout:.0f} s); "
          "is `python -m tools.data_service` running there, with workers, "
          f"and is {host_port(address)} its host and --port?")
    time.sleep(1.0)


class Monitor:
  """Watches a tf.data service while training reads from it.

  Every `interval` s a background thread asks the dispatcher for its workers
  and checks that they answer. A problem that lasts `patience` s calls
  `on_lost(problem)` from that thread (the main thread may be blocked inside
  TensorFlow, retrying forever). A dispatcher restarted within `patience`
  -- in fault-tolerant mode (`tools/data_service.py --work_dir`) it recovers
  its jobs -- lets training continue.
  """

  def __init__(self, address: str, on_lost: Callable[[str], None],
               patience: float = 30.0, interval: float = 5.0):
    self._address = address
    self._on_lost = on_lost
    self._patience = patience
    self._interval = interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name="fastcifar-data-service-monitor")

  def __enter__(self) -> Monitor:
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._stop.set()

  def _watch(self) -> None:
    since = None
    while not self._stop.wait(self._interval):
      problem = _problem(self._address, self._interval)
      if problem is None:
        since = None
        continue
      since = since or time.monotonic()
      if time.monotonic() - since >= self._patience and not self._stop.is_set():
        self._on_lost(f"{problem} for {self._patience:.0f} s")
        return
