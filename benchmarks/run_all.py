"""Runs every benchmark, one after another, each in its own process.

Each benchmark gets its own process so that none inherits another's memory,
threads or compiled graphs; the common flags (`--quick`, `--data_dir`,
`--dataset`, `--seed`, `--output`) are passed on to each. Their JSON lines
and tables go to standard output (and to `--output`) as they come.

    python -m benchmarks.run_all --quick
    python -m benchmarks.run_all --data_dir=PATH/cifar-10-python.tar.gz \\
        --output=runs/bench.jsonl
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import flags

from benchmarks import harness

FLAGS = harness.FLAGS
# Shortest first, so a broken set-up shows early.
BENCHMARKS = ("input_pipeline", "training_throughput", "step_overhead",
              "epoch_cost", "memory", "time_to_accuracy")


def commands(names: list[str], quick: bool, data_dir: str | None,
             dataset: str, seed: int, output: str | None) -> list[list[str]]:
  """The command line of each benchmark, with the common flags passed on."""
  common = [f"--dataset={dataset}", f"--seed={seed}"]
  common += ["--quick"] if quick else []
  common += [f"--data_dir={data_dir}"] if data_dir else []
  common += [f"--output={os.path.abspath(output)}"] if output else []
  return [[sys.executable, "-m", f"benchmarks.{name}", *common]
          for name in names]


def define_flags() -> None:
  flags.DEFINE_list("only", list(BENCHMARKS), "Which benchmarks to run.",
                    flag_values=FLAGS)
  flags.DEFINE_boolean("dry_run", False, "Print the commands, run nothing.",
                       flag_values=FLAGS)


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.only) - set(BENCHMARKS))
  if unknown:
    sys.exit(f"run_all: unknown benchmarks {unknown}; choose from "
             f"{', '.join(BENCHMARKS)}")
  failed = []
  for command in commands(list(FLAGS.only), FLAGS.quick, FLAGS.data_dir,
                          FLAGS.dataset, FLAGS.seed, FLAGS.output):
    print("$ python " + " ".join(command[1:]), flush=True)
    if FLAGS.dry_run:
      continue
    start = time.perf_counter()
    code = subprocess.run(command, cwd=harness.ROOT, env=harness.child_env(),
                          check=False).returncode
    print(f"({command[2]}: exit {code}, {time.perf_counter() - start:.0f} s)",
          flush=True)
    if code:
      failed.append(command[2])
  if failed:
    print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  harness.run_main(main, define_flags)
