"""What the benchmark scripts share: flags, data, the sweep, clocks, the report.

Each script defines its flags only when it runs as a program (`run_main`), so
importing a script to reuse its functions defines no flag, and scripts can
import one another without two definitions of `--quick` colliding.

Flags hold the full-mode values; `--quick` swaps in small ones through
`setting`, except for a flag given on the command line, which always wins.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from typing import Callable, Iterable, Sequence

from absl import app, flags
import keras
import tensorflow as tf

from benchmarks import environment
from fastcifar import input_pipeline, policy, quiet, sources, step_loop

FLAGS = flags.FLAGS

# Names of the flags the running script defined, for every record, and the
# values `--quick` put in force for some of them.
_flag_names: list[str] = []
_quick_values: dict[str, object] = {}


def define_common_flags() -> None:
  """The flags every benchmark has."""
  flags.DEFINE_boolean(
      "quick", False,
      "Small slices and few steps, under 3 minutes on 2 CPU cores: checks "
      "that the benchmark runs. Its figures are not measurements to quote.")
  flags.DEFINE_string("output", None,
                      "Also append each JSON line to this file.")
  flags.DEFINE_string(
      "data_dir", None,
      "Real data, anything fastcifar.sources.load_path reads (e.g. "
      "../shared/data/cifar10-jpg.tar.gz). Default: synthetic data.")
  flags.DEFINE_enum("dataset", "cifar10",
                    [d for d in sources.DATASETS if d != "synthetic"],
                    "Which dataset to take from --data_dir.")
  flags.DEFINE_integer("seed", 0, "Seeds the synthetic data, the subsets "
                       "and the training runs.")
  quiet.define_verbose_flag()


def run_main(main: Callable[[list[str]], None],
             define_flags: Callable[[], None]) -> None:
  """Defines the common and the script's flags, then runs `main` under absl."""
  before = set(FLAGS)
  define_common_flags()
  define_flags()
  _flag_names[:] = sorted(set(FLAGS) - before)
  app.run(main)


def flag_values() -> dict:
  """The running script's flags and their values in force (--quick's too)."""
  return {name: _quick_values.get(name, FLAGS[name].value)
          for name in _flag_names}


def setting(name: str, quick_value):
  """A flag's value for this run.

  Args:
    name: a flag whose default is the full-mode value.
    quick_value: the value under `--quick`.

  Returns:
    The flag's value when given on the command line or not `--quick`, else
    `quick_value`.
  """
  flag = FLAGS[name]
  if flag.present or not FLAGS.quick:
    return flag.value
  _quick_values[name] = quick_value
  return quick_value


# --- Data --------------------------------------------------------------------


def slice_dataset(data: sources.ImageDataset, train_examples: int,
                  test_examples: int, seed: int) -> sources.ImageDataset:
  """Seeded random subsets of both splits (0 keeps a split whole)."""
  train = input_pipeline.subset(data.train_images, data.train_labels,
                                train_examples, seed)
  test = input_pipeline.subset(data.test_images, data.test_labels,
                               test_examples, seed)
  return dataclasses.replace(data, train_images=train[0],
                             train_labels=train[1], test_images=test[0],
                             test_labels=test[1])


def load_data(dataset: str, data_dir: str | None, train_examples: int = 0,
              test_examples: int = 0, seed: int = 0
              ) -> tuple[sources.ImageDataset, float]:
  """The benchmark's data: real from `data_dir`, else synthetic.

  Synthetic data is generated at the requested size only (generating 60,000
  images to keep 1,000 would dominate a quick run).

  Args:
    dataset: which dataset to take from `data_dir`.
    data_dir: a path `fastcifar.sources.load_path` reads, or None.
    train_examples, test_examples: sizes of the subsets; 0 keeps everything
      (50,000 and 10,000 synthetic images).
    seed: the synthetic data and the subsets.

  Returns:
    `(dataset, seconds it took to load)`.
  """
  start = time.perf_counter()
  if data_dir:
    data = sources.load_path(data_dir, dataset)
  else:
    data = sources.load_synthetic(num_train=train_examples or 50_000,
                                  num_test=test_examples or 10_000, seed=seed)
  data = slice_dataset(data, train_examples, test_examples, seed)
  return data, time.perf_counter() - start


# --- The sweep ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
  """One precision x XLA choice; `default` marks what fastcifar's auto picks."""

  precision: str
  jit_compile: bool
  default: bool


def _gpu_capability() -> tuple[int, int]:
  details = [tf.config.experimental.get_device_details(g)
             for g in tf.config.list_physical_devices("GPU")]
  capabilities = [d.get("compute_capability", (0, 0)) for d in details]
  return min(capabilities) if capabilities else (0, 0)


def applicable_precisions(device: str, cpu_bfloat16: bool | None = None,
                          gpu_capability: tuple[int, int] | None = None
                          ) -> list[str]:
  """The precisions worth measuring on `device`.

  CPUs: float32, and mixed_bfloat16 where the CPU has bfloat16 units
  (mixed_float16 has no fast path on CPUs). GPUs: float32 and mixed_float16,
  and mixed_bfloat16 from compute capability 8.0. TPUs: both that run there.
  """
  if device == "TPU":
    return ["float32", "mixed_bfloat16"]
  if device == "GPU":
    capability = gpu_capability or _gpu_capability()
    return ["float32", "mixed_float16"] + (
        ["mixed_bfloat16"] if capability >= (8, 0) else [])
  bf16 = policy.cpu_has_bfloat16() if cpu_bfloat16 is None else cpu_bfloat16
  return ["float32"] + (["mixed_bfloat16"] if bf16 else [])


def applicable_jit(device: str) -> list[bool]:
  """XLA off and on for accelerators; off only on CPUs, where fastcifar never
  turns it on because it measured it 7-16x slower (`fastcifar.policy`)."""
  return [False] if device == "CPU" else [False, True]


def sweep(precisions: Iterable[str] = (), jit_choices: Iterable[str] = (),
          device: str | None = None, cpu_bfloat16: bool | None = None,
          gpu_capability: tuple[int, int] | None = None) -> list[Setting]:
  """Every precision x XLA setting to measure, fastcifar's default included.

  Args:
    precisions: policy names or "auto"; empty means all that apply.
    jit_choices: "true", "false" or "auto"; empty means all that apply.
    device: "CPU", "GPU" or "TPU"; detected when None.
    cpu_bfloat16, gpu_capability: detected when None.

  Returns:
    The settings, fastcifar's default (auto, auto) first.
  """
  device = device or policy.detect_device()
  default_precision = policy.resolve_precision(
      "auto", device, cpu_bfloat16=cpu_bfloat16, gpu_capability=gpu_capability)
  default_jit = policy.resolve_jit_compile("auto", device)
  precisions = [policy.resolve_precision(p, device, cpu_bfloat16=cpu_bfloat16,
                                         gpu_capability=gpu_capability)
                for p in precisions] or applicable_precisions(
                    device, cpu_bfloat16, gpu_capability)
  jits = [policy.resolve_jit_compile(j, device) for j in jit_choices
          ] or applicable_jit(device)
  pairs = [(default_precision, default_jit)]
  pairs += [(p, j) for p in precisions for j in jits
            if (p, j) not in pairs]
  return [Setting(p, j, (p, j) == (default_precision, default_jit))
          for p, j in pairs]


# --- Clocks ------------------------------------------------------------------


class BatchClock(keras.callbacks.Callback):
  """The wall time at the end of each call of the training step.

  Both training paths call `on_train_batch_end` after the step's results
  reached the host (fastcifar reads its sums once per loop of
  `--steps_per_loop` steps; Keras `fit` converts its logs for a callback
  that defines this hook, once per `steps_per_execution` steps), with the
  index of the last step the call ran: `steps` counts steps, not calls.
  """

  def __init__(self):
    super().__init__()
    self.times: list[float] = []
    self.steps: list[int] = []  # steps done when each time was taken
    self._epoch_start = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self.steps[-1] if self.steps else 0

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter())
    self.steps.append(self._epoch_start + batch + 1)

  def _first_timed(self, warmup_steps: int) -> int:
    """The record timing starts from: the first after the warm-up."""
    warmup_steps = max(1, warmup_steps)
    first = next((i for i, s in enumerate(self.steps) if s >= warmup_steps),
                 len(self.steps))
    if first >= len(self.steps) - 1:
      raise ValueError(f"{self.steps[-1] if self.steps else 0} steps ran in "
                       f"{len(self.steps)} calls; need a call after the "
                       f"{warmup_steps} warm-up steps")
    return first

  def steps_timed(self, warmup_steps: int) -> int:
    """Steps after the call that ended the warm-up (at least 1 step)."""
    return self.steps[-1] - self.steps[self._first_timed(warmup_steps)]

  def seconds_per_step(self, warmup_steps: int) -> float:
    """Mean wall time of a step over the steps after the warm-up."""
    first = self._first_timed(warmup_steps)
    return ((self.times[-1] - self.times[first])
            / (self.steps[-1] - self.steps[first]))

  def images_per_second(self, batch_size: int, warmup_steps: int) -> float:
    """Throughput over the steps after the first `warmup_steps`.

    Args:
      batch_size: images per step.
      warmup_steps: steps left out, at least 1 (the first traces and
        compiles); timing starts at the first call that ends at or after it.

    Returns:
      Images per second of the timed steps.
    """
    return batch_size / self.seconds_per_step(warmup_steps)


def whole_calls(warmup_steps: int, steps: int,
                per_call: int) -> tuple[int, int]:
  """Warm-up and timed steps rounded up to whole calls of `per_call` steps.

  Python hears of steps only when a call ends (a loop of fastcifar's, an
  execution of Keras's): both counts become multiples of it, at least one
  call each.
  """
  return tuple(-(-max(1, n) // per_call) * per_call
               for n in (warmup_steps, steps))


def whole_loops(config, warmup_steps: int, steps: int) -> tuple[int, int]:
  """`whole_calls` for fastcifar's loops under `config` on this device.

  Args:
    config: a `fastcifar.config.Config`; its `steps_per_loop` and batch.
    warmup_steps, steps: at least these many.

  Returns:
    `(warmup_steps, steps)`, each a multiple of the loop length that
    `config` resolves to (an epoch of their sum has it too).
  """
  per_loop = step_loop.resolve(config.steps_per_loop, policy.detect_device(),
                               2**31, config.batch_size)
  return whole_calls(warmup_steps, steps, per_loop)


def timed_rate(work: Callable[[], int], warmup_seconds: float,
               seconds: float) -> float:
  """Items per second of `work`, after a warm-up.

  Args:
    work: does some work and returns how many items it processed.
    warmup_seconds: call `work` (at least once) this long before timing.
    seconds: then time whole calls until at least this long has passed.

  Returns:
    Items per second over the timed calls.
  """
  deadline = time.perf_counter() + warmup_seconds
  work()
  while time.perf_counter() < deadline:
    work()
  items = 0
  start = time.perf_counter()
  while True:
    items += work()
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return items / elapsed


def median(values: Sequence[float]) -> float:
  """The median, as a plain float for JSON."""
  return float(statistics.median(values))


# --- The report --------------------------------------------------------------


class Report:
  """Prints one JSON line per measurement, and a markdown table at the end.

  Every record carries the benchmark's name, the hardware and versions
  (`environment.environment()`), the flags and a UTC timestamp.
  """

  def __init__(self, benchmark: str, output: str | None):
    self.benchmark = benchmark
    self.output = output
    self.environment = environment.environment()
    self.rows: list[dict] = []

  def add(self, **fields) -> dict:
    """Emits one measurement and keeps it for the table; returns the record."""
    record = {
        "benchmark": self.benchmark, **fields, **self.environment,
        "flags": flag_values(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }
    environment.emit(record, self.output)
    self.rows.append(record)
    return record

  def print_table(self, title: str, columns: list[str]) -> None:
    """The markdown table of every record so far, under a title and the
    hardware it ran on."""
    env = self.environment
    where = env["gpu"] or f"{env['cpu_model']} ({env['cpu_count']} cores)"
    quick = " (--quick: a smoke run, not a measurement)" if (
        FLAGS.is_parsed() and "quick" in FLAGS and FLAGS.quick) else ""
    print(f"\n### {title}{quick}\n\n{env['device']}: {where}; TensorFlow "
          f"{env['tensorflow_version']}, Keras {env['keras_version']}\n")
    print(environment.markdown_table(self.rows, columns), flush=True)


def define_sweep_flags() -> None:
  """--precisions and --jit_compile: the settings a sweep measures."""
  flags.DEFINE_list(
      "precisions", [],
      "Precisions (or auto) to measure; empty: all that apply on this device.")
  flags.DEFINE_list(
      "jit_compile", [],
      "XLA choices (true, false, auto); empty: all that apply on this device.")
