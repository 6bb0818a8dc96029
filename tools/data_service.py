"""Starts a tf.data service cluster: a dispatcher and N workers.

    python -m tools.data_service --port=5050 --num_workers=2
    python -m fastcifar.train --data_service=grpc://localhost:5050 ...

Workers on other hosts join with `--dispatcher=HOST:PORT --num_workers=K`
(no dispatcher is started then). Runs until SIGTERM or Ctrl-C, then stops
its servers and exits 0. This is TensorFlow's own service
(`tf.data.experimental.service`), not a home-made one.
"""

from __future__ import annotations

import signal
import sys
import threading

from absl import app, flags

from fastcifar.cli import quiet

if __name__ == "__main__":
  quiet.start()  # TensorFlow's start-up lines off, unless --verbose

_PORT = flags.DEFINE_integer("port", 5050, "Dispatcher port (0: any free).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Workers to start.")
_WORKER_PORT = flags.DEFINE_integer(
    "worker_port", 0, "Port of the first worker, the next ones follow; 0 "
    "picks free ports, or with --work_dir the ports after --port.")
_DISPATCHER = flags.DEFINE_string(
    "dispatcher", None, "HOST:PORT of a running dispatcher: start only "
    "workers, joined to it.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Folder for the dispatcher's journal; with it a "
    "restarted dispatcher recovers its jobs (fault-tolerant mode).")
_WORKER_HOST = flags.DEFINE_string(
    "worker_host", "localhost", "Host name the workers advertise to "
    "clients; set it when clients run on other hosts.")


def start_cluster(port: int, num_workers: int, worker_port: int = 0,
                  dispatcher: str | None = None, work_dir: str | None = None,
                  worker_host: str = "localhost"):
  """Starts a dispatcher (unless `dispatcher` is given) and workers.

  Args:
    port: the dispatcher's port, 0 for any free one.
    num_workers: how many workers to start in this process.
    worker_port: the first worker's port, 0 for free ports.
    dispatcher: join this HOST:PORT instead of starting a dispatcher.
    work_dir: the dispatcher's journal folder (fault tolerance).
    worker_host: the host the workers advertise.

  Returns:
    `(address, servers)`: the dispatcher's `grpc://` address and every server
    started, to keep alive.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  service = tf.data.experimental.service
  servers = []
  if dispatcher is None:
    server = service.DispatchServer(service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir)))
    servers.append(server)
    dispatcher = server.target.split("://", 1)[1]
  for i in range(num_workers):
    servers.append(service.WorkerServer(service.WorkerConfig(
        dispatcher_address=dispatcher,
        worker_address=f"{worker_host}:%port%",
        port=worker_port + i if worker_port else 0)))
  return f"grpc://{dispatcher}", servers


def main(argv: list[str]) -> int:
  del argv
  if _NUM_WORKERS.value < 0 or (_NUM_WORKERS.value == 0 and _DISPATCHER.value):
    print("data_service: error: --num_workers must be at least 1 when "
          "joining a dispatcher, and not negative", file=sys.stderr)
    return 2
  stop = threading.Event()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())
  worker_port = _WORKER_PORT.value
  if _WORK_DIR.value and not worker_port and _PORT.value:
    # The journal names the workers by address: a cluster restarted with the
    # same flags must come back at the same ones for its jobs to continue.
    worker_port = _PORT.value + 1
  try:
    address, servers = start_cluster(
        _PORT.value, _NUM_WORKERS.value, worker_port,
        _DISPATCHER.value, _WORK_DIR.value, _WORKER_HOST.value)
  except Exception as e:  # pylint: disable=broad-except
    # A port in use or an unreachable dispatcher: say so on one line.
    print(f"data_service: error: could not start ({str(e).splitlines()[0]}); "
          "choose other ports or check --dispatcher", file=sys.stderr)
    return 2
  print(f"data_service: dispatcher {address}, {_NUM_WORKERS.value} "
        f"worker(s) started; train with --data_service={address}; stop with "
        "Ctrl-C or SIGTERM", flush=True)
  while not stop.wait(0.5):
    pass
  for server in reversed(servers):
    server._stop()  # pylint: disable=protected-access  # the only stop call
  print("data_service: stopped", flush=True)
  return 0


if __name__ == "__main__":
  quiet.define_verbose_flag()  # here: importing this module defines none
  app.run(main)
