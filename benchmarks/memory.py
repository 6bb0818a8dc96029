"""Memory: peak resident memory of each configuration, each in its own process.

What it measures: the peak RSS of a training run of
  load_only  Python, TensorFlow and Keras imported and the data loaded: the
             floor every configuration shares;
  fastcifar  `python -m fastcifar.train`, once per precision x jit_compile
             setting that applies on the device (the default one with
             `--precision=auto --jit_compile=auto`, as users run it);
  recipe     `python -m benchmarks.recipe`, the textbook recipe verbatim;
and each one's ratio to the recipe's.

Conditions: every configuration runs in a process of its own, started from the
command line users type, so none can hide in another's peak; the peak is the
child's own `VmHWM`, written by `benchmarks/rss_probe.py` as the child ends (not
this process's `wait4` `ru_maxrss`, which on Linux includes this process's own
high-water mark). Where GNU time is installed, each child also runs under
`/usr/bin/time -f %M`, the figure users take by hand: the child's `ru_maxrss` as
GNU time's own small process reaps it, i.e. the largest peak of the child and of
any process it started and waited for (the larger, not the sum). Both are
high-water marks kept by the kernel, shared-library pages included, so on one
machine they agree to a few MiB; `time_maxrss_*` and `time_ratio_to_recipe`
report the second. Each run trains `--epochs` (1: the peak is reached in the
first epoch and its evaluation; later epochs allocate nothing new) on the whole
data, real with `--data_dir`, else 50,000 + 10,000 synthetic images. When the
data is synthetic or sliced (`--train_examples`, `--test_examples`, `--quick`),
this process writes it once to a temporary `.npz` that every child loads, so all
read the same bytes the same way. This is host memory: on a GPU, device memory
is not part of it.

    python -m benchmarks.memory --quick
    python -m benchmarks.memory --data_dir=PATH/cifar-10-python.tar.gz \\
        --output=runs/bench.jsonl
"""

from __future__ import annotations

import sys
import tempfile

from absl import flags

from benchmarks import harness

FLAGS = harness.FLAGS

# The floor: what any run holds before training, the data included.
LOAD_ONLY = ("import sys, keras, tensorflow\n"
             "from fastcifar.data import sources\n"
             "data = sources.load(sys.argv[1], sys.argv[2] or None)\n")


def configurations(settings: list[harness.Setting], dataset: str,
                   data_dir: str, epochs: int, seed: int
                   ) -> list[tuple[str, harness.Setting | None, list[str]]]:
  """The runs to measure: `(name, setting, rss_probe arguments)` each.

  Args:
    settings: fastcifar's precision x XLA settings (`harness.sweep`).
    dataset, data_dir: the data, as the command-line programs take it.
    epochs: epochs each training run trains.
    seed: fastcifar's seed.

  Returns:
    load_only, then fastcifar per setting, then the recipe.
  """
  return [("load_only", None, ["-c", LOAD_ONLY, dataset, data_dir]),
          *harness.configurations(settings, dataset, data_dir, epochs, seed)]


def define_flags() -> None:
  flags.DEFINE_integer("epochs", 1, "Epochs each training run trains.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("train_examples", 0, "Training images; 0: all. "
                       "--quick: 1024.", lower_bound=0, flag_values=FLAGS)
  flags.DEFINE_integer("test_examples", 0, "Test images; 0: all. --quick: "
                       "500.", lower_bound=0, flag_values=FLAGS)
  harness.define_sweep_flags()
  flags.DEFINE_float("timeout", 3 * 3600, "Seconds before a run is killed.",
                     lower_bound=1, flag_values=FLAGS)


def main(argv):
  del argv
  train_examples = harness.setting("train_examples", 1024)
  test_examples = harness.setting("test_examples", 500)
  report = harness.Report("memory", FLAGS.output)
  settings = harness.sweep(FLAGS.precisions, FLAGS.jit_compile)
  failures = 0
  with tempfile.TemporaryDirectory(prefix="fastcifar-memory-") as workdir:
    data_dir, num_train, num_test = harness.child_data(
        workdir, FLAGS.dataset, FLAGS.data_dir, train_examples, test_examples,
        FLAGS.seed)
    runs = []
    time_path = harness.gnu_time()
    for name, setting, probe_args in configurations(
        settings, FLAGS.dataset, data_dir, FLAGS.epochs, FLAGS.seed):
      measured = harness.run_child(probe_args, workdir, FLAGS.timeout,
                                   time_path)
      if measured["exit_code"] != 0 or measured["peak_rss_bytes"] is None:
        failures += 1
        print(f"memory: {name} failed (exit {measured['exit_code']}):\n"
              f"{measured.get('log', '')}", file=sys.stderr)
      runs.append((name, setting, probe_args, measured))

  recipe = next(m for n, _, _, m in runs if n == "recipe")
  recipe_peak, recipe_time = (recipe["peak_rss_bytes"],
                              recipe["time_maxrss_bytes"])
  for name, setting, probe_args, measured in runs:
    peak = measured.pop("peak_rss_bytes")
    by_time = measured.pop("time_maxrss_bytes")
    report.add(
        measurement="peak_rss", configuration=name,
        precision=setting.precision if setting else (
            "float32" if name == "recipe" else None),
        jit_compile=setting.jit_compile if setting else None,
        fastcifar_default=bool(setting and setting.default),
        peak_rss_bytes=peak,
        peak_rss_mb=peak / 2**20 if peak else None,
        ratio_to_recipe=peak / recipe_peak if peak and recipe_peak else None,
        time_maxrss_bytes=by_time,
        time_maxrss_mb=by_time / 2**20 if by_time else None,
        time_ratio_to_recipe=(by_time / recipe_time
                              if by_time and recipe_time else None),
        epochs=FLAGS.epochs, num_train_examples=num_train,
        num_test_examples=num_test,
        command=["python", *probe_args[:1],
                 "<load-only code>" if name == "load_only" else probe_args[1],
                 *probe_args[2:]],
        **measured)
  report.print_table(
      "Peak resident memory (each configuration in its own process)",
      ["configuration", "precision", "jit_compile", "fastcifar_default",
       "peak_rss_mb", "ratio_to_recipe", "time_maxrss_mb",
       "time_ratio_to_recipe", "exit_code", "seconds"])
  return 1 if failures else 0


if __name__ == "__main__":
  harness.run_main(main, define_flags)
