"""TensorFlow's own scale-out engines: `tf.distribute` strategies.

fastcifar has one training step (`strategy.run`), so every strategy runs the
same code: one device, several GPUs of a host (MirroredStrategy), several
hosts (MultiWorkerMirroredStrategy, from `TF_CONFIG`) and TPUs.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable

import tensorflow as tf

from fastcifar.data import pipeline
from fastcifar.training import policy
from fastcifar.errors import UsageError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
  """Creates a strategy by name.

  Args:
    name: `auto` (mirrored when more than one GPU is visible, else one
      device), `one_device` (the first GPU, else the CPU), `mirrored` (every
      local GPU, else the CPU), `multi_worker` (hosts from `TF_CONFIG`) or
      `tpu` (the TPU the environment names).

  Returns:
    The strategy. Create it before any other TensorFlow work: multi-worker
    and TPU strategies must start their runtime first.
  """
  if name not in STRATEGIES:
    raise UsageError(f"unknown strategy {name!r}; choose one of "
                     f"{', '.join(STRATEGIES)}")
  gpus = tf.config.list_physical_devices("GPU")
  if name == "auto":
    name = "mirrored" if len(gpus) > 1 else "one_device"
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise UsageError("--strategy=multi_worker needs TF_CONFIG naming the "
                       "cluster and this worker's task; see the README's "
                       "'Scaling out'")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
      raise UsageError(f"TF_CONFIG is not valid JSON ({e})") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError) as e:
    raise UsageError(f"no TPU found ({e}); use another --strategy") from None
  return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's outputs (only one process does)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  # Without a "chief" task, worker 0 is the chief, as TensorFlow's own
  # multi-worker checkpointing assumes.
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and not has_chief)


def compiles_update(strategy: tf.distribute.Strategy) -> bool:
  """Whether XLA can compile the optimizer's update with the rest of a step.

  On one device nothing leaves the device, and a TPU compiles all that
  `strategy.run` runs anyway. Mirrored and multi-worker updates all-reduce
  the gradients in a cross-replica `merge_call`, which XLA cannot compile.
  """
  if isinstance(strategy, (tf.distribute.OneDeviceStrategy,
                           tf.distribute.TPUStrategy,
                           tf.distribute.experimental.TPUStrategy)):
    return True
  return _is_default(strategy)  # one device


def runs_on_cpus(strategy: tf.distribute.Strategy) -> bool:
  """Whether the strategy's replicas run on CPUs (the host's own cores)."""
  if _is_default(strategy):  # it lists the CPU even where ops go to a GPU
    return policy.detect_device() == "CPU"
  return all(tf.DeviceSpec.from_string(device).device_type == "CPU"
             for device in strategy.extended.worker_devices)


def _is_default(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` is TensorFlow's default (no `scope()` entered)."""
  return (not tf.distribute.has_strategy()
          and strategy is tf.distribute.get_strategy())


def round_up_to_replicas(batch_size: int,
                         strategy: tf.distribute.Strategy) -> int:
  """`batch_size` rounded up to a multiple of the strategy's replica count.

  For evaluation, whose last batch is padded anyway: 500 over 8 replicas
  becomes 504, so the user need not pick an evaluation batch per strategy.
  """
  replicas = strategy.num_replicas_in_sync
  return -(-batch_size // replicas) * replicas


def sync_on_read(strategy: tf.distribute.Strategy, variables) -> None:
  """Sets every replica's copy of each sync-on-read variable to their mean.

  Replicas update such variables (`layers.BatchNorm`'s moving statistics) on
  their own, while an evaluation step reads each replica's own copy and a
  save writes the mean: syncing before evaluating makes every replica
  evaluate, and report, the model that is saved.

  Args:
    strategy: the strategy the variables were made under.
    variables: Keras variables; those not synchronized on read are skipped.
  """
  if strategy.num_replicas_in_sync == 1:
    return
  with strategy.scope():
    for variable in variables:
      if variable.synchronization == "on_read":
        variable.assign(variable.value.read_value())  # the mean, on each


def any_worker(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
  """`agreed(flag)`: whether `flag` is True on any worker, said to all.

  For a decision each worker makes from its own clock (a checkpoint due
  after a duration of training): under several workers every one must
  decide the same at the same step, since a save reads the sync-on-read
  variables through a collective and a worker saving alone would hang the
  others. Every worker must call it at the same points; each call costs one
  all-reduce of one number. One worker: the flag itself.
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return bool

  @tf.function
  def count(flag: tf.Tensor) -> tf.Tensor:
    return strategy.reduce("SUM", strategy.run(tf.identity, args=(flag,)),
                           axis=None)

  return lambda flag: bool(count(tf.constant(float(flag))) > 0)


def distribute(strategy: tf.distribute.Strategy, make_dataset, batch_size: int):
  """Builds one input pipeline per worker, each fed its shard's batches.

  Args:
    strategy: the strategy the step runs under.
    make_dataset: `fn(shard_index=, num_shards=, replicas_per_shard=)` that
      returns a dataset of per-replica batches (`input_pipeline`'s functions).
    batch_size: the global batch, checked to split evenly over the replicas.

  Returns:
    A distributed dataset for `strategy.run`, or, for one replica on the
    host's CPU, the dataset itself: there is nothing to spread or copy,
    and the distributed input's per-device datasets would bring back
    tf.data's autotuning, which our pipelines turn off (see
    `pipeline.with_pipeline_options`).
  """
  pipeline.check_divisible(batch_size, strategy.num_replicas_in_sync)

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    return make_dataset(
        shard_index=context.input_pipeline_id,
        num_shards=context.num_input_pipelines,
        replicas_per_shard=(context.num_replicas_in_sync
                            // context.num_input_pipelines))

  if _nothing_to_distribute(strategy):
    return dataset_fn(tf.distribute.InputContext())
  return strategy.distribute_datasets_from_function(dataset_fn)


def _nothing_to_distribute(strategy: tf.distribute.Strategy) -> bool:
  """Whether the strategy has one replica on this process's CPU, or is the
  default strategy (whose own `distribute_datasets_from_function` returns
  the dataset as it is)."""
  if _is_default(strategy):
    return True
  return (strategy.num_replicas_in_sync == 1
          and len(strategy.extended.worker_devices) == 1
          and runs_on_cpus(strategy))


# What TensorFlow raises in the survivors when a worker is lost: its
# coordination service's heartbeats or a collective's broken connection.
LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                    tf.errors.CancelledError, tf.errors.DeadlineExceededError)

_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
# The task named lost: after "unhealthy (...):" or "remote target". A
# function node's name, "{{function_node ..._device_/job:worker/replica:0/
# task:0/device:CPU:0}}", names the reporting task, which is not lost.
_LOST_TASK = re.compile(r"(?:unhealthy \([^)]*\):\s*|remote target\s+)"
                        + _TASK.pattern)
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}")


def lost_peer(error: Exception) -> str | None:
  """Which task `error` says was lost, e.g. 'worker 1'; None if it names none.

  TensorFlow names it in the message: "The following tasks are unhealthy
  ... /job:worker/replica:0/task:1" (heartbeats) or "error information from
  remote target /job:worker/replica:0/task:1" (a collective).
  """
  if not isinstance(error, LOST_PEER_ERRORS):
    return None
  message = str(error)
  match = (_LOST_TASK.search(message)
           or _TASK.search(_FUNCTION_NODE.sub("", message)))
  return f"{match[1]} {match[2]}" if match else None


def first_line(error: Exception) -> str:
  """The first informative line of a TensorFlow error message."""
  lines = [line.strip() for line in str(error).splitlines()]
  useful = [line for line in lines if line and not line.startswith(
      ("Graph execution error", "Detected at node", "File "))]
  if not useful:
    return type(error).__name__
  if useful[0].endswith(":") and len(useful) > 1:  # "unhealthy ...:\n/job:..."
    return f"{useful[0]} {useful[1]}"
  return useful[0]
