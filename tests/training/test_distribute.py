"""Strategies and the tf.data service, on this machine's loopback only."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import service as data_service, pipeline, sources
from fastcifar.training import checkpointing, distribute, trainer
from fastcifar.errors import UsageError
from tests.conftest import halved
from tests.test_train import run_in_process
from tests.training.test_checkpointing import comparable

def free_ports(count: int) -> list[int]:
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_strategy_names():
  assert isinstance(distribute.make_strategy("one_device"),
                    tf.distribute.OneDeviceStrategy)
  assert isinstance(distribute.make_strategy("auto"),
                    tf.distribute.OneDeviceStrategy)  # no GPUs here
  with pytest.raises(UsageError, match="unknown strategy"):
    distribute.make_strategy("horovod")


def test_multi_worker_needs_tf_config(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(UsageError, match="TF_CONFIG"):
    distribute.make_strategy("multi_worker")


def test_only_one_chief():
  def resolver(task_type, task_id, cluster):
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

  class FakeStrategy:
    def __init__(self, r):
      self.cluster_resolver = r

  workers = {"worker": ["a:1", "b:1"]}
  assert distribute.is_chief(FakeStrategy(resolver("worker", 0, workers)))
  assert not distribute.is_chief(FakeStrategy(resolver("worker", 1, workers)))
  with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
  assert distribute.is_chief(FakeStrategy(resolver("chief", 0, with_chief)))
  assert not distribute.is_chief(FakeStrategy(resolver("worker", 0,
                                                        with_chief)))
  assert distribute.is_chief(tf.distribute.get_strategy())


def test_the_eval_batch_rounds_up_to_the_replica_count():
  class Replicas:  # all round_up_to_replicas asks of a strategy
    def __init__(self, count):
      self.num_replicas_in_sync = count

  assert [distribute.round_up_to_replicas(500, Replicas(n))
          for n in (1, 3, 8, 500, 501)] == [500, 501, 504, 500, 501]
  # The rounded batch splits evenly; padding (weight 0) covers the rest.
  images = np.zeros((300, 32, 32, 3), np.uint8)
  labels = np.arange(300, dtype=np.int32)
  batches = list(pipeline.eval_dataset(images, labels, 504,
                                             replicas_per_shard=8))
  weights = np.concatenate([w.numpy() for _, _, w in batches])
  seen = np.concatenate([y.numpy() for _, y, _ in batches])
  assert len(weights) == 504 and weights.sum() == 300
  assert sorted(seen[weights == 1]) == list(range(300))


def test_sharded_pipelines_cover_each_global_batch_once():
  images = np.zeros((48, 32, 32, 3), np.uint8)
  labels = np.arange(48, dtype=np.int32)  # labels name the examples
  whole = [b[1].numpy() for b in pipeline.train_dataset(
      images, labels, 8, seed=1, epochs=2)]
  shards = [[b[1].numpy() for b in pipeline.train_dataset(
      images, labels, 8, seed=1, epochs=2, shard_index=i, num_shards=2,
      replicas_per_shard=2)] for i in range(2)]
  for step, batch in enumerate(whole):
    parts = [shards[i][2 * step + r] for i in range(2) for r in range(2)]
    assert sorted(np.concatenate(parts)) == sorted(batch)
    assert all(len(p) == 2 for p in parts)


def test_one_replica_on_the_cpu_iterates_the_pipeline_itself():
  # Nothing to spread or copy: the pipeline as built, autotuning off (a
  # distributed dataset's per-device datasets would turn it back on).
  images = np.zeros((48, 32, 32, 3), np.uint8)
  labels = np.arange(48, dtype=np.int32)
  make = functools.partial(pipeline.train_dataset, images, labels, 8,
                           seed=1, epochs=1)
  for strategy in (distribute.make_strategy("one_device"),
                   tf.distribute.get_strategy()):
    data = distribute.distribute(strategy, make, 8)
    assert isinstance(data, tf.data.Dataset)
    assert data.options().autotune.enabled is False
    assert [b[1].numpy().tolist() for b in data] == [
        b[1].numpy().tolist() for b in make()]


def start_workers(server, module: str, args: list[str]) -> list:
  """Forks `module` as the two workers of a cluster on fresh loopback ports.

  Each worker is a process of its own (a lost one is a killed process) but
  not a fresh interpreter: forked from the command server, it skips the
  ~7 s import, twice a cluster.

  Args:
    server: the `command_server` fixture.
    module: `fastcifar.train`, or `tests.training.cluster_workers`.
    args: its command line.

  Returns:
    The two running workers (`tests.forked.ForkedRun`), chief first.
  """
  cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
  return [server.start(module, args, env={"TF_CONFIG": json.dumps({
      "cluster": cluster, "task": {"type": "worker", "index": index}})})
          for index in range(2)]


def finish_workers(processes) -> list[tuple[str, str]]:
  """Waits for every worker to succeed; their `(stdout, stderr)`."""
  try:
    outs = [p.communicate(timeout=300) for p in processes]
  finally:
    for p in processes:
      p.kill()
  for p, (_, err) in zip(processes, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


@pytest.mark.slow
def test_two_workers_train_alike_stop_alike_resume_bit_for_bit(
    command_server, tmp_path):
  """Two localhost workers: one cluster, two runs' points (a process makes
  one strategy, used by every run in it; `cluster_workers.alike_and_resumed`
  is what each worker runs).

  1. Train alike, stop alike, only the chief writes: the validation loss
  is all-reduced, so every worker's early stopping sees the same number
  and decides the same; a worker that stopped alone would hang the other
  in its next all-reduce.

  2. Stopped inside epochs, resumed bit for bit: both workers stop at the
  same step (as a preemption of the job would leave them: at their last
  common checkpoint); a duration interval is decided alike on both (a
  save is a collective: one saving alone hangs).
  """
  outs = finish_workers(start_workers(
      command_server, "tests.training.cluster_workers",
      ["alike_and_resumed", str(tmp_path)]))
  first, second = [json.loads(out.strip().splitlines()[-2])
                   for out, _ in outs]
  assert first[1] == 2  # replicas
  # All-reduced updates: the same weights, bit for bit, and the same
  # epochs, best epoch, losses and accuracy.
  assert first == second
  assert first[2] < 6  # it did stop early
  written = json.loads((tmp_path / "alike" / "results.json").read_text())
  assert written["stopped_early"] and written["epochs"] == first[2]
  assert sorted(os.listdir(tmp_path / "alike")) == [
      "history.json", "model.keras", "results.json", "run.json"]
  # Stopped inside epochs: both resumed and ended as the whole run.
  assert [out.strip().splitlines()[-1] for out, _ in outs] == ["same"] * 2


@pytest.fixture
def data_service_cluster():
  """An in-process tf.data service: `(dispatcher, workers)`."""
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  address = dispatcher.target.split("://", 1)[1]
  workers = [service.WorkerServer(service.WorkerConfig(
      dispatcher_address=address)) for _ in range(2)]
  yield dispatcher, workers
  for server in workers + [dispatcher]:
    server._stop()  # pylint: disable=protected-access


@pytest.fixture
def service_address(data_service_cluster):
  return data_service_cluster[0].target


def test_data_service_sees_every_example_once_per_epoch(service_address):
  images = np.zeros((400, 32, 32, 3), np.uint8)
  labels = np.arange(400, dtype=np.int32)
  ds = pipeline.through_data_service(
      pipeline.train_dataset(images, labels, 20, seed=0, epochs=3),
      service_address)
  assert ds.options().autotune.enabled is False  # the client's side too
  seen = np.concatenate([y.numpy() for _, y in ds])
  assert np.array_equal(np.bincount(seen, minlength=400), np.full(400, 3))


def test_training_through_data_service(service_address):
  # 16x16: a quarter of the steps' cost; the batches' way is the point.
  data = halved(sources.load_synthetic(num_train=512, num_test=128, seed=1))
  config = trainer.Config(epochs=2, batch_size=64, precision="float32",
                           eval_batch_size=64)
  results = trainer.train_and_evaluate(config, data, verbose=0,
                                        data_service=service_address)
  assert results["epochs"] == 2 and np.isfinite(results["test_loss"])


def test_data_service_tool_stops_on_sigterm(command_server):
  # A process of its own (SIGTERM is the point), forked from the command
  # server: a fresh interpreter is not.
  port = free_ports(1)[0]
  process = command_server.start(
      "tests.training.cluster_workers",
      ["data_service_tool", f"--port={port}", "--num_workers=2"])
  process.printed(bool, timeout=60)  # its first line says it started
  assert f"grpc://localhost:{port}" in process.stdout, process.stderr
  process.send_signal(signal.SIGTERM)
  assert process.wait(60) == 0, process.stderr
  assert "stopped" in process.stdout


def _lose_one(processes, victim: int, output_dir, after_epoch: int) -> str:
  """Kills worker `victim` with SIGKILL in the epoch after `after_epoch`.

  Returns:
    The survivor's stderr, once it has exited on its own.
  """
  deadline = time.monotonic() + 240
  while checkpointing.latest_epoch(str(output_dir)) != after_epoch:
    assert all(p.poll() is None for p in processes), [
        p.communicate()[1][-2000:] for p in processes]
    assert time.monotonic() < deadline, "no checkpoint in time"
    time.sleep(0.1)
  time.sleep(0.3)  # into the next epoch's steps
  processes[victim].kill()
  killed = time.monotonic()
  survivor = processes[1 - victim]
  try:
    _, err = survivor.communicate(timeout=60)
  finally:
    for p in processes:
      p.kill()
      p.communicate()
  assert time.monotonic() - killed < 60
  assert survivor.returncode == 1, err[-3000:]
  return err


@pytest.mark.slow
def test_a_lost_worker_or_chief_ends_the_other_and_both_resume(
    command_server, tmp_path):
  # 16x16: a quarter of the steps' cost, the same 8 steps an epoch; what
  # is tested is the loss of a peer and the resume, not the pixels.
  data = str(tmp_path / "fastcifar-tiny.npz")
  sources.save_prepared(halved(sources.load_synthetic(
      num_train=512, num_test=128, seed=1)), data)
  train = ["--strategy=multi_worker",
           f"--data_dir={data}", "--epochs=3", "--batch_size=64",
           "--precision=float32", "--deterministic", "--nopreflight",
           "--notensorboard"]
  output_dir = tmp_path / "run"
  # A worker, then the chief, lost mid-epoch; each time the other one ends.
  for victim, after_epoch in ((1, 1), (0, 2)):
    err = _lose_one(start_workers(command_server, "fastcifar.train",
                                  [*train, f"--output_dir={output_dir}"]),
                    victim, output_dir, after_epoch)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fastcifar.train: error: lost worker {victim} ("
                           ), err[-3000:]
    assert "start every worker again with the same command to resume after " \
           f"epoch {checkpointing.latest_epoch(str(output_dir))}" in last
    assert "Traceback" not in err
    assert checkpointing.latest_epoch(str(output_dir)) >= after_epoch
  # The resume, then the run uninterrupted, by the same cluster: one
  # cluster less than a command for each.
  finish_workers(start_workers(
      command_server, "tests.training.cluster_workers",
      ["main_for_each_folder", json.dumps(["fastcifar.train", *train]),
       str(output_dir), str(tmp_path / "whole")]))
  results = json.loads((output_dir / "results.json").read_text())
  assert results["resumed_after_epoch"] >= 2
  whole = json.loads((tmp_path / "whole" / "results.json").read_text())
  assert whole["resumed_after_epoch"] == 0  # a run of its own
  assert comparable(results) == comparable(whole)


def test_no_dispatcher_at_the_address_fails_fast():
  address = f"grpc://127.0.0.1:{free_ports(1)[0]}"
  start = time.monotonic()
  with pytest.raises(UsageError) as e:
    data_service.check(address, timeout=2)
  assert time.monotonic() - start < 10
  assert str(e.value).startswith(f"--data_service={address}: no tf.data "
                                 "service dispatcher answers there")
  assert "tools.data_service" in str(e.value) and "--port" in str(e.value)


def test_a_dispatcher_without_workers_is_refused():
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  try:
    with pytest.raises(UsageError, match="the dispatcher has no workers"):
      data_service.check(dispatcher.target, timeout=1)
  finally:
    dispatcher._stop()  # pylint: disable=protected-access


def test_dead_data_service_address_from_the_command_line(capsys):
  # The command's own path (flags, main, cli.run's one line and status), in
  # this process: a process of its own only added TensorFlow's start-up.
  address = f"grpc://127.0.0.1:{free_ports(1)[0]}"
  start = time.monotonic()
  out = run_in_process(capsys, f"--data_service={address}",
                       "--dataset=synthetic")
  # 10 s of asking; the bound leaves room for a machine shared with other
  # test runs.
  assert time.monotonic() - start <= 30
  assert "(waited 10 s)" in out.stderr
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(
      f"fastcifar.train: error: --data_service={address}: no tf.data service")
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("victim,problem", [
    ("worker", r"its worker localhost:\d+ does not answer for 1 s"),
    ("dispatcher", "no tf.data service dispatcher answers there for 1 s")])
def test_monitor_reports_a_lost_worker_or_dispatcher(data_service_cluster,
                                                     victim, problem):
  dispatcher, workers = data_service_cluster
  assert len(data_service.get_workers(dispatcher.target, 5)) == 2
  lost = []
  with data_service.Monitor(dispatcher.target, lost.append, patience=1,
                            interval=0.3):
    time.sleep(1)
    assert not lost  # a healthy service is left alone
    server = workers[0] if victim == "worker" else dispatcher
    server._stop()  # pylint: disable=protected-access
    deadline = time.monotonic() + 20
    while not lost and time.monotonic() < deadline:
      time.sleep(0.1)
  assert lost and re.fullmatch(problem, lost[0]), lost


def test_training_continues_through_a_restarted_dispatcher(tmp_path):
  # Fault-tolerant mode: the dispatcher journals its state in work_dir, and
  # one restarted on the same port picks up the job where it was.
  service = tf.data.experimental.service
  port = free_ports(1)[0]

  def start_dispatcher():
    return service.DispatchServer(service.DispatcherConfig(
        port=port, work_dir=str(tmp_path), fault_tolerant_mode=True))

  dispatchers = [start_dispatcher()]
  workers = [service.WorkerServer(service.WorkerConfig(
      dispatcher_address=f"localhost:{port}")) for _ in range(2)]

  class RestartDispatcher(trainer.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 0:
        dispatchers[-1]._stop()  # pylint: disable=protected-access
        time.sleep(1)
        dispatchers.append(start_dispatcher())

  lost = []
  # 16x16: a quarter of the steps' cost; the same 32 steps an epoch.
  data = halved(sources.load_synthetic(num_train=2048, num_test=128,
                                       seed=1))
  config = trainer.Config(epochs=2, batch_size=64, precision="float32",
                           eval_batch_size=64)
  try:
    with data_service.Monitor(f"grpc://localhost:{port}", lost.append,
                              patience=20, interval=0.5):
      results = trainer.train_and_evaluate(
          config, data, verbose=0, data_service=f"grpc://localhost:{port}",
          callbacks=[RestartDispatcher()])
  finally:
    for server in workers + dispatchers:
      server._stop()  # pylint: disable=protected-access
  assert len(dispatchers) == 2 and not lost
  assert results["epochs"] == 2 and np.isfinite(results["test_loss"])


@pytest.mark.parametrize("message,lost,first", [
    ("Graph execution error:\n\nDetected at node x defined at:\n  File a\n\n"
     "Collective ops is aborted by: Error reported from /job:worker/task:1: "
     "The following tasks are unhealthy (stopped sending heartbeats):\n"
     "/job:worker/replica:0/task:1\nThe tasks have crashed.",
     "worker 1", "Collective ops is aborted by: Error reported from "
     "/job:worker/task:1: The following tasks are unhealthy (stopped sending "
     "heartbeats): /job:worker/replica:0/task:1"),
    # The survivor's own device first, in the function node's name (a CI
    # run said "lost worker 0" here, from worker 0, when 1 was killed).
    ("{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_"
     "device_/job:worker/replica:0/task:0/device:CPU:0}} Collective ops is "
     "aborted by: Error reported from /job:worker/task:1: The following tasks "
     "are unhealthy (stopped sending heartbeats):\n"
     "/job:worker/replica:0/task:1\nThe tasks have crashed.",
     "worker 1", "{{function_node __wrapped__CollectiveReduceV2_Nordering_"
     "token_1_device_/job:worker/replica:0/task:0/device:CPU:0}} Collective "
     "ops is aborted by: Error reported from /job:worker/task:1: The "
     "following tasks are unhealthy (stopped sending heartbeats): "
     "/job:worker/replica:0/task:1"),
    ("Collective ops is aborted by: recvmsg:Connection reset by peer\n"
     "Additional GRPC error information from remote target "
     "/job:worker/replica:0/task:0 while calling RecvBuf",
     "worker 0", "Collective ops is aborted by: recvmsg:Connection reset by "
     "peer"),
])
def test_lost_peer_names_the_task_tensorflow_names(message, lost, first):
  error = tf.errors.UnavailableError(None, None, message)
  assert distribute.lost_peer(error) == lost
  assert distribute.first_line(error) == first
  assert distribute.lost_peer(tf.errors.InvalidArgumentError(
      None, None, message)) is None


def test_streamed_shards_through_the_data_service_once_per_epoch(
    service_address, tmp_path):
  images = np.zeros((400, 8, 8, 3), np.uint8)
  labels = np.arange(400, dtype=np.int32)  # a label per example: its id
  path = str(tmp_path / "shards")
  sources.write_shards(path, "ids", [str(i) for i in range(400)],
                       [("train", images, labels), ("test", images[:1],
                                                    labels[:1])],
                       {"train": 400, "test": 1}, shard_bytes=64 * 8 * 8 * 3)
  streamed = sources.load_path(path, cache="disk", shuffle_buffer=50)
  ds = pipeline.through_data_service(
      pipeline.train_dataset(streamed.train_images, labels, 20, seed=0,
                                   epochs=3), service_address)
  seen = np.concatenate([y.numpy() for _, y in ds])
  assert np.array_equal(np.bincount(seen, minlength=400), np.full(400, 3))
