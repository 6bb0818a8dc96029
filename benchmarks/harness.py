"""What the benchmark scripts share: flags, data, the sweep, clocks, the report.

Each script defines its flags only when it runs (`run_main`, or
`run_in_process`), so importing a script to reuse its functions defines no
flag, and scripts can import one another without two definitions of
`--quick` colliding. They go in a FlagValues of the benchmarks' own, not
absl's global FLAGS: fastcifar.train defines --seed, --data_dir, --dataset,
--train_examples and --verbose too, and a process that imports both (a test
run) could not define them twice.

Flags hold the full-mode values; `--quick` swaps in small ones through
`setting`, except for a flag given on the command line, which always wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterable, Iterator, Sequence

from absl import app, flags
import keras
import tensorflow as tf

from benchmarks import environment
from fastcifar.cli import quiet
from fastcifar.data import pipeline, sources
from fastcifar.errors import UsageError
from fastcifar.training import policy, step_loop

FLAGS = flags.FlagValues()  # the benchmarks' own (see above)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Names of the flags the running script defined, for every record, and the
# values `--quick` put in force for some of them.
_flag_names: list[str] = []
_quick_values: dict[str, object] = {}


def define_common_flags() -> None:
  """The flags every benchmark has, in `FLAGS`."""
  flags.DEFINE_boolean(
      "quick", False,
      "Small slices and few steps, under 3 minutes on 2 CPU cores: checks "
      "that the benchmark runs. Its figures are not measurements to quote.",
      flag_values=FLAGS)
  flags.DEFINE_string("output", None,
                      "Also append each JSON line to this file.",
                      flag_values=FLAGS)
  flags.DEFINE_string(
      "data_dir", None,
      "Real data, anything fastcifar.data.sources.load_path reads (e.g. "
      "PATH/cifar-10-python.tar.gz, or a folder of JPEGs). Default: "
      "synthetic data.", flag_values=FLAGS)
  flags.DEFINE_enum("dataset", "cifar10",
                    [d for d in sources.DATASETS if d != "synthetic"],
                    "Which dataset to take from --data_dir.",
                    flag_values=FLAGS)
  flags.DEFINE_integer("seed", 0, "Seeds the synthetic data, the subsets "
                       "and the training runs.", flag_values=FLAGS)
  quiet.define_verbose_flag(FLAGS)


@contextlib.contextmanager
def _script_flags(define_flags: Callable[[], None],
                  common: bool) -> Iterator[None]:
  """The script's flags (and the common ones if `common`) defined in
  `FLAGS`, removed after."""
  before = set(FLAGS)
  if common:
    define_common_flags()
  define_flags()
  _flag_names[:] = sorted(set(FLAGS) - before)
  _quick_values.clear()
  try:
    yield
  finally:
    for name in _flag_names:
      delattr(FLAGS, name)


def _checked_main(main: Callable[[list[str]], int | None],
                  argv: list[str]) -> int:
  """`main(argv)`'s exit status; a `UsageError` ends it as fastcifar's
  commands do: one line on stderr, exit 2, no traceback (unless
  --verbose)."""
  try:
    return main(argv) or 0
  except UsageError as e:
    if FLAGS.verbose:
      raise
    program = os.path.splitext(os.path.basename(argv[0]))[0]
    print(f"benchmarks.{program}: error: {e}", file=sys.stderr)
    return 2


def run_main(main: Callable[[list[str]], int | None],
             define_flags: Callable[[], None], common: bool = True) -> None:
  """Defines the common and the script's flags, then runs `main` under absl.

  absl's global FLAGS takes them in too, so that `app.run` parses them with
  its own (--help, --flagfile, logging) and --help lists them.

  Args:
    main: the script's; returns its exit status (None: 0).
    define_flags: defines the script's own flags in `FLAGS`.
    common: define the common flags too (the recipe has its own).
  """
  with _script_flags(define_flags, common):
    flags.FLAGS.append_flag_values(FLAGS)
    for module, module_flags in FLAGS.flags_by_module_dict().items():
      for flag in module_flags:
        flags.FLAGS.register_flag_by_module(module, flag)

    def parsed_main(argv: list[str]) -> int:
      FLAGS.mark_as_parsed()  # app.run parsed the very Flag objects
      return _checked_main(main, argv)

    app.run(parsed_main)


def run_in_process(main: Callable[[list[str]], int | None],
                   define_flags: Callable[[], None], argv: Sequence[str],
                   common: bool = True) -> int:
  """Runs a script in this process, as `python -m` runs it with `argv`.

  The script's flags exist only meanwhile, so another script (or
  fastcifar's commands, whose flag names some share) can run next.

  Args:
    main, define_flags, common: as for `run_main`.
    argv: the command line, the script's path first.

  Returns:
    The exit status `python -m` would end with (2 for a `UsageError`).
  """
  with _script_flags(define_flags, common):
    FLAGS(list(argv))
    return _checked_main(main, list(argv))


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
  train = pipeline.subset(data.train_images, data.train_labels,
                                train_examples, seed)
  test = pipeline.subset(data.test_images, data.test_labels,
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
    data_dir: a path `fastcifar.data.sources.load_path` reads, or None.
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
  turns it on because it measured it 7-16x slower
  (`fastcifar.training.policy`)."""
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
    config: a `fastcifar.training.config.Config`; its `steps_per_loop` and
      batch.
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
    # A field of the measurement's own (a child process's `onednn`) says
    # more than this process's environment.
    record = {
        "benchmark": self.benchmark, **self.environment, **fields,
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


# --- Child processes ---------------------------------------------------------
# For the benchmarks that run whole programs, each in a process of its own,
# started from the command line users type.


def child_data(workdir: str, dataset: str, data_dir: str | None,
               train_examples: int, test_examples: int, seed: int
               ) -> tuple[str, int | None, int | None]:
  """The data every child reads, as `--data_dir`.

  When the data is synthetic or sliced, it is written once to a temporary
  `.npz` that every child loads, so all read the same bytes the same way. A
  slice is `slice_dataset`'s, which picks what `fastcifar.train
  --train_examples=N --seed=S` picks from the whole split.

  Args:
    workdir: where the `.npz` goes (a temporary folder of the caller's).
    dataset, data_dir: the data, as the command-line programs take it.
    train_examples, test_examples: sizes of the slices; 0 keeps a split whole.
    seed: the synthetic data and the slices.

  Returns:
    `(data_dir, num_train, num_test)`; the sizes are None when the children
    read all of `data_dir` itself.
  """
  if data_dir and not train_examples and not test_examples:
    return data_dir, None, None  # all of it, as the programs load it
  data, _ = load_data(dataset, data_dir, train_examples, test_examples, seed)
  path = sources.prepared_path(workdir, data.name)
  sources.save_prepared(data, path)
  return path, len(data.train_images), len(data.test_images)


def configurations(settings: list[Setting], dataset: str, data_dir: str,
                   epochs: int, seed: int, train_examples: int = 0
                   ) -> list[tuple[str, Setting | None, list[str]]]:
  """fastcifar's and the recipe's training runs, as users type them.

  Args:
    settings: fastcifar's precision x XLA settings (`sweep`).
    dataset, data_dir: the data, as the command-line programs take it.
    epochs: epochs each training run trains.
    seed: fastcifar's seed.
    train_examples: fastcifar's `--train_examples`; 0: not given.

  Returns:
    `(name, setting, rss_probe arguments)`: fastcifar per setting, then the
    recipe (which takes neither a seed nor a slice).
  """
  data = [f"--dataset={dataset}", f"--data_dir={data_dir}"]
  sliced = [f"--train_examples={train_examples}"] if train_examples else []
  runs = []
  for s in settings:
    precision, jit = (("auto", "auto") if s.default
                      else (s.precision, str(s.jit_compile).lower()))
    runs.append(("fastcifar", s, [
        "-m", "fastcifar.train", *data, f"--epochs={epochs}", *sliced,
        f"--precision={precision}", f"--jit_compile={jit}", f"--seed={seed}"]))
  runs.append(("recipe", None, ["-m", "benchmarks.recipe", *data,
                                f"--epochs={epochs}"]))
  return runs


def child_env() -> dict[str, str]:
  """This environment, with the repository first on PYTHONPATH: a child
  `python -m benchmarks.NAME` or `fastcifar.X` finds this checkout's code
  wherever it runs."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, env.get("PYTHONPATH")) if p)
  return env


def gnu_time() -> str | None:
  """The path of GNU time if it is installed (it takes `-f` and `-o`)."""
  path = shutil.which("time")  # the program: a shell's `time` is a keyword
  if not path:
    return None
  try:
    probe = subprocess.run([path, "-f", "%M", "true"], capture_output=True,
                           timeout=10, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return None
  words = probe.stderr.decode(errors="replace").split()
  gnu = probe.returncode == 0 and words and words[-1].isdigit()
  return path if gnu else None  # BSD time has no -f


def run_child(probe_args: list[str], workdir: str, timeout: float,
              time_path: str | None = None) -> dict:
  """Runs one program in a child process: its wall time and peak RSS.

  The child is `python benchmarks/rss_probe.py`, which runs the program in
  its own process and writes that process's peak as it ends; `seconds` is
  the child's whole life as this process sees it, from before its start to
  after its exit (start-up and imports included).

  Args:
    probe_args: what follows `python benchmarks/rss_probe.py OUT.json`.
    workdir: where the child's report and log go.
    timeout: seconds before the child is killed.
    time_path: GNU time, to run the child under `time -f %M` too; None: not.

  Returns:
    `peak_rss_bytes` (None if the child wrote none), `rss_source`,
    `time_maxrss_bytes` (GNU time's `%M`; None without it), `exit_code`,
    `seconds`, and `log` (the tail of its output on failure).
  """
  fd, report_path = tempfile.mkstemp(suffix=".json", dir=workdir)
  os.close(fd)
  log_path = report_path[:-len(".json")] + ".log"
  maxrss_path = report_path[:-len(".json")] + ".maxrss"
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "rss_probe.py"),
             report_path, *probe_args]
  if time_path:
    command = [time_path, "-f", "%M", "-o", maxrss_path, *command]
  start = time.perf_counter()
  with open(log_path, "w") as log:
    try:
      exit_code = subprocess.run(
          command, cwd=ROOT, env=child_env(), stdout=log,
          stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired:
      exit_code = None
  seconds = time.perf_counter() - start
  try:
    with open(report_path) as f:
      probe = json.load(f)
  except (OSError, ValueError):
    probe = {}
  time_maxrss = None
  try:
    with open(maxrss_path) as f:  # GNU time's last line: %M, in KiB
      time_maxrss = int(f.read().split()[-1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  result = {"peak_rss_bytes": probe.get("peak_rss_bytes"),
            "rss_source": probe.get("source"),
            "time_maxrss_bytes": time_maxrss, "exit_code": exit_code,
            "seconds": seconds}
  if exit_code != 0:
    with open(log_path, errors="replace") as f:
      result["log"] = f.read()[-3000:]
  return result


def define_sweep_flags() -> None:
  """--precisions and --jit_compile: the settings a sweep measures."""
  flags.DEFINE_list(
      "precisions", [],
      "Precisions (or auto) to measure; empty: all that apply on this device.",
      flag_values=FLAGS)
  flags.DEFINE_list(
      "jit_compile", [],
      "XLA choices (true, false, auto); empty: all that apply on this device.",
      flag_values=FLAGS)
