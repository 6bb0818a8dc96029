"""Time to accuracy: wall time until the test accuracy first reaches a target.

What it measures: for fastcifar at its defaults and for the textbook recipe
verbatim, the wall time from the start of training (preparation, model
building and compilation included; loading the data excluded, it is the same
for both) to the end of the first epoch whose test accuracy is at least the
target. The target is `--target` when given, else the recipe's own final
accuracy after `--recipe_epochs` (20, the recipe's), measured first in the
same run; the recipe's time is then that of the first epoch that reached its
final accuracy.

Conditions: both evaluate on the whole test split after every epoch (the
recipe through `fit`'s validation, fastcifar through `train_and_evaluate`),
and that evaluation time counts, as it does for a user watching the number.
fastcifar runs `train_and_evaluate` with its default config (its cosine
schedule planned for `--epochs`, 20) and stops at the first epoch that
reaches the target; the recipe runs `benchmarks.recipe.run_recipe`. On the
real data when `--data_dir` is given; otherwise on synthetic data, where the
accuracies mean nothing for CIFAR and only the mechanics are exercised.

    python -m benchmarks.time_to_accuracy --quick
    python -m benchmarks.time_to_accuracy \\
        --data_dir=PATH/cifar-10-python.tar.gz --output=runs/bench.jsonl
"""

from __future__ import annotations

import time
from typing import Sequence

from absl import flags
import keras

from benchmarks import harness, recipe
from fastcifar.training import trainer
from fastcifar.data.sources import ImageDataset

FLAGS = harness.FLAGS


class TargetClock(keras.callbacks.Callback):
  """Records each epoch's end time and test accuracy; stops at the target.

  Args:
    start: `time.perf_counter()` at the start of the run.
    target: the accuracy to stop at; None runs every epoch.
  """

  def __init__(self, start: float, target: float | None):
    super().__init__()
    self.start = start
    self.target = target
    self.seconds: list[float] = []
    self.accuracies: list[float] = []

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self.start)
    self.accuracies.append(float(logs["val_accuracy"]))
    if self.target is not None and self.accuracies[-1] >= self.target:
      self.model.stop_training = True


def first_reaching(accuracies: Sequence[float], seconds: Sequence[float],
                   target: float) -> tuple[int | None, float | None]:
  """The first epoch (1-based) whose accuracy reaches `target`, and its time.

  Returns:
    `(epoch, seconds)`, or `(None, None)` when no epoch reached it.
  """
  for epoch, (accuracy, at) in enumerate(zip(accuracies, seconds), start=1):
    if accuracy >= target:
      return epoch, at
  return None, None


def run_recipe_to(dataset: ImageDataset, target: float | None,
                  epochs: int) -> dict:
  """The recipe, stopped at `target` (or run `epochs` epochs when None).

  Returns:
    `accuracies` and `seconds` per epoch, and `prepare_seconds`.
  """
  clock = TargetClock(time.perf_counter(), target)
  result = recipe.run_recipe(dataset, epochs=epochs, verbose=0,
                             callbacks=[clock])
  return {"accuracies": result["history"]["val_accuracy"],
          "seconds": result["epoch_end_seconds"],
          "prepare_seconds": result["prepare_seconds"],
          "precision": "float32", "jit_compile": result["jit_compile"],
          "batch_size": 64}


def run_fastcifar_to(dataset: ImageDataset, target: float,
                     config: trainer.Config) -> dict:
  """fastcifar's `train_and_evaluate`, stopped at `target`.

  Returns:
    `accuracies` and `seconds` per epoch.
  """
  clock = TargetClock(time.perf_counter(), target)
  results = trainer.train_and_evaluate(config, dataset, callbacks=[clock],
                                        verbose=0)
  return {"accuracies": clock.accuracies, "seconds": clock.seconds,
          "precision": results["precision"],
          "jit_compile": results["jit_compile"],
          "batch_size": config.batch_size}


def define_flags() -> None:
  flags.DEFINE_float("target", None, "Test accuracy to reach. Default: the "
                     "recipe's final accuracy after --recipe_epochs.",
                     flag_values=FLAGS)
  flags.DEFINE_integer("epochs", 20, "fastcifar's epochs (its schedule's "
                       "length and its limit). --quick: 4.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_integer("recipe_epochs", 20, "The recipe's epochs (its limit, "
                       "and what sets the default target). --quick: 2.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("train_examples", 0, "Training images; 0: all. "
                       "--quick: 2000.", lower_bound=0, flag_values=FLAGS)
  flags.DEFINE_integer("test_examples", 0, "Test images; 0: all. --quick: "
                       "1000.", lower_bound=0, flag_values=FLAGS)


def main(argv):
  del argv
  epochs = harness.setting("epochs", 4)
  recipe_epochs = harness.setting("recipe_epochs", 2)
  dataset, load_seconds = harness.load_data(
      FLAGS.dataset, FLAGS.data_dir, harness.setting("train_examples", 2000),
      harness.setting("test_examples", 1000), FLAGS.seed)
  report = harness.Report("time_to_accuracy", FLAGS.output)

  keras.utils.set_random_seed(FLAGS.seed)  # the recipe itself seeds nothing
  recipe_run = run_recipe_to(dataset, FLAGS.target, recipe_epochs)
  target = FLAGS.target
  target_source = "flag"
  if target is None:
    target = recipe_run["accuracies"][-1]
    target_source = f"recipe accuracy after {recipe_epochs} epochs"
  keras.backend.clear_session()
  fastcifar_run = run_fastcifar_to(
      dataset, target, trainer.Config(epochs=epochs, seed=FLAGS.seed))

  common = {"measurement": "time_to_accuracy", "target_accuracy": target,
            "target_source": target_source, "dataset": dataset.name,
            "num_train_examples": len(dataset.train_images),
            "num_test_examples": len(dataset.test_images),
            "load_seconds": load_seconds}
  recipe_seconds = None
  for system, run, limit in (("recipe", recipe_run, recipe_epochs),
                             ("fastcifar", fastcifar_run, epochs)):
    epoch, seconds = first_reaching(run["accuracies"], run["seconds"], target)
    if system == "recipe":
      recipe_seconds = seconds
    report.add(
        **common, system=system, reached=epoch is not None,
        epochs_to_target=epoch, seconds_to_target=seconds,
        speedup_over_recipe=(recipe_seconds / seconds
                             if seconds and recipe_seconds else None),
        epochs_run=len(run["accuracies"]), epoch_limit=limit,
        best_test_accuracy=max(run["accuracies"]),
        test_accuracy_per_epoch=run["accuracies"],
        seconds_per_epoch_end=run["seconds"],
        precision=run["precision"], jit_compile=run["jit_compile"],
        batch_size=run["batch_size"])
  report.print_table(
      "Time to accuracy (wall seconds to the first epoch at the target)",
      ["system", "target_accuracy", "reached", "epochs_to_target",
       "seconds_to_target", "speedup_over_recipe", "best_test_accuracy",
       "precision", "batch_size"])


if __name__ == "__main__":
  harness.run_main(main, define_flags)
