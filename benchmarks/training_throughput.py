"""Training throughput: images/s of steady-state training steps.

What it measures: for every model x precision x jit_compile setting that
applies on the present device (CPU: float32, and mixed_bfloat16 where the CPU
has bfloat16 units, no XLA; GPU: float32, mixed_float16, mixed_bfloat16 from
compute capability 8.0, each with XLA off and on), the images per second of
fastcifar's training steps, and in the same run those of the textbook recipe
verbatim (host float32 arrays, `to_categorical`, `model.fit(batch_size=64)`),
with each setting's ratio to the recipe. Each record also gives the
achieved training FLOP/s (images/s x the model's training FLOPs per image,
counted from its layers) and its fraction of the device's peak for the
run's precision (AMX, AVX512-BF16 or FMA units from /proc/cpuinfo, or a
GPU's datasheet figure): see `benchmarks.flops`.

Conditions: fastcifar runs through
`fastcifar.training.trainer.train_and_evaluate`,
the path users run (uint8 pipeline, on-device augmentation, one-hot and
normalization, its own step loop), at its default batch of 128 and with
augmentation on; the recipe through `benchmarks.recipe.run_recipe`. A Keras
callback stamps the end of every step; the first `--warmup_steps` steps
(tracing, compilation, oneDNN's first-call set-up) are left out and the rate
is taken over the next `--steps`. Each run is one epoch on a seeded subset
just large enough for those steps, followed by the one validation pass both
paths do (on `--test_examples` images, untimed). Settings are measured
round-robin `--repeats` times and the median is reported, so a slow spell on
a shared machine does not fall on one setting only. Synthetic data unless
`--data_dir`: throughput does not depend on the pixels.

    python -m benchmarks.training_throughput --quick
    python -m benchmarks.training_throughput --output=runs/bench.jsonl
"""

from __future__ import annotations

import dataclasses

from absl import app, flags
import keras

from benchmarks import flops, harness, recipe
from fastcifar import models
from fastcifar.data import pipeline
from fastcifar.training import trainer
from fastcifar.data.sources import ImageDataset
from fastcifar.errors import UsageError

FLAGS = harness.FLAGS
RECIPE_BATCH_SIZE = 64


def _with_train_subset(dataset: ImageDataset, num_examples: int,
                       seed: int) -> ImageDataset:
  images, labels = pipeline.subset(
      dataset.train_images, dataset.train_labels, num_examples, seed)
  return dataclasses.replace(dataset, train_images=images, train_labels=labels)


def measure_fastcifar(dataset: ImageDataset, config: trainer.Config,
                      warmup_steps: int, steps: int) -> dict:
  """Images/s of fastcifar's training steps, through `train_and_evaluate`.

  Args:
    dataset: the data; one epoch of `warmup_steps + steps` batches is taken
      from a seeded subset of its training split.
    config: the run's settings; `epochs` and `train_examples` are replaced.
    warmup_steps: steps left out of the timing (at least 1).
    steps: steps timed. Both are rounded up to whole loops of the config's
      `steps_per_loop` (Python hears of steps only at a loop's end).

  Returns:
    `images_per_second`, `steps_timed`, and the resolved `steps_per_loop`,
    `precision` and `jit_compile`.
  """
  warmup_steps, steps = harness.whole_loops(config, warmup_steps, steps)
  available = len(dataset.train_images) // config.batch_size
  if warmup_steps + steps > available:
    # Too few images for two loops of the default length: two shorter
    # loops (the record's steps_per_loop says how long).
    config = dataclasses.replace(config, steps_per_loop=max(1, available // 2))
    warmup_steps, steps = harness.whole_loops(config, 1, 1)
  config = dataclasses.replace(
      config, epochs=1,
      train_examples=config.batch_size * (warmup_steps + steps))
  clock = harness.BatchClock()
  results = trainer.train_and_evaluate(config, dataset, callbacks=[clock],
                                        verbose=0)
  return {
      "images_per_second": clock.images_per_second(config.batch_size,
                                                   warmup_steps),
      "steps_timed": clock.steps_timed(warmup_steps),
      "steps_per_loop": results["steps_per_loop"],
      "precision": results["precision"],
      "jit_compile": results["jit_compile"],
  }


def measure_recipe(dataset: ImageDataset, warmup_steps: int, steps: int,
                   seed: int = 0, batch_size: int = RECIPE_BATCH_SIZE) -> dict:
  """Images/s of the recipe's `model.fit` steps, through `run_recipe`.

  Args:
    dataset: the data; one epoch of `warmup_steps + steps` batches is taken
      from a seeded subset of its training split.
    warmup_steps: steps left out of the timing (at least 1).
    steps: steps timed.
    seed: picks the subset.
    batch_size: the recipe's 64.

  Returns:
    `images_per_second`, `steps_timed`, `precision` (float32) and
    `jit_compile` (what Keras chose).
  """
  dataset = _with_train_subset(
      dataset, batch_size * (max(1, warmup_steps) + steps), seed)
  clock = harness.BatchClock()
  result = recipe.run_recipe(dataset, epochs=1, batch_size=batch_size,
                             verbose=0, callbacks=[clock])
  return {
      "images_per_second": clock.images_per_second(batch_size, warmup_steps),
      "steps_timed": clock.steps_timed(warmup_steps),
      "precision": "float32",
      "jit_compile": result["jit_compile"],
  }


def run(dataset: ImageDataset, settings: list[harness.Setting],
        model_names: list[str], batch_size: int | None, warmup_steps: int,
        steps: int, repeats: int, seed: int, report: harness.Report) -> None:
  """Measures the recipe and every model x setting, emitting one record each.

  Args:
    dataset: the data (synthetic is fine: speed does not depend on pixels).
    settings: precision x XLA settings from `harness.sweep`.
    model_names: models from `fastcifar.models.MODELS`.
    batch_size: fastcifar's batch size; None: each model's recipe's.
    warmup_steps, steps: steps left out, then timed, in each run.
    repeats: round-robin passes over all configurations; medians reported.
    seed: seeds the runs and subsets.
    report: receives the records.
  """
  configs = [("recipe", None, None)] + [
      ("fastcifar", name, s) for name in model_names for s in settings]
  rates = {i: [] for i in range(len(configs))}
  facts = {}
  for _ in range(repeats):
    for i, (system, model_name, s) in enumerate(configs):
      keras.backend.clear_session()  # one model's graphs at a time
      if system == "recipe":
        measured = measure_recipe(dataset, warmup_steps, steps, seed)
      else:
        config = trainer.recipe(
            model_name, batch_size=batch_size, seed=seed,
            precision=s.precision, jit_compile=str(s.jit_compile).lower())
        measured = measure_fastcifar(dataset, config, warmup_steps, steps)
      rates[i].append(measured.pop("images_per_second"))
      facts[i] = measured
  recipe_rate = harness.median(rates[0])
  # Training FLOPs per image of each model at this data's shape (the
  # recipe's model is the seed CNN), and the device's peak per precision.
  train_flops = {
      name: flops.model_training_flops(name, dataset.image_shape,
                                       dataset.num_classes)[1]
      for name in {"seed", *model_names}}
  peaks = {}
  for i, (system, model_name, s) in enumerate(configs):
    rate = harness.median(rates[i])
    precision = facts[i]["precision"]
    if precision not in peaks:
      peaks[precision] = flops.peak(precision)
    report.add(
        measurement="training_throughput", system=system,
        model=model_name or "seed",
        batch_size=(RECIPE_BATCH_SIZE if system == "recipe" else
                    trainer.recipe(model_name, batch_size=batch_size
                                    ).batch_size),
        augment=system == "fastcifar",
        fastcifar_default=bool(s and s.default),
        images_per_second=rate, images_per_second_runs=rates[i],
        ratio_to_recipe=rate / recipe_rate, warmup_steps=warmup_steps,
        num_train_examples_available=len(dataset.train_images),
        dataset=dataset.name, **facts[i],
        **flops.fraction_fields(rate, train_flops[model_name or "seed"],
                                peaks[precision]))


def check_enough_data(num_examples: int,
                      configs: list[trainer.Config]) -> None:
  """Refuses data too small for a warm-up step and a timed one per model.

  Args:
    num_examples: the training images available.
    configs: fastcifar's runs; each needs two batches.

  Raises:
    UsageError: one of them would get fewer than two batches.
  """
  for config in configs:
    batches = num_examples // config.batch_size
    if batches < 2:
      raise UsageError(
          f"{num_examples:,} training images give the {config.model} model "
          f"{batches} batch{'' if batches == 1 else 'es'} of "
          f"{config.batch_size}; a throughput needs two (a warm-up step and "
          f"a timed one): pass --batch_size={num_examples // 2} or less, "
          "more data, or --models without it")


def define_flags() -> None:
  flags.DEFINE_list("models", list(models.MODELS), "Models to measure.",
                    flag_values=FLAGS)
  harness.define_sweep_flags()
  flags.DEFINE_integer("batch_size", None, "fastcifar's batch size (the "
                       "recipe always uses its 64). Default: each model's "
                       "own (seed 128, fast 1024).", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_integer("warmup_steps", 20, "Steps left out before timing. "
                       "--quick: 3.", lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("steps", 100, "Steps timed per run. --quick: 8.",
                       lower_bound=1, flag_values=FLAGS)
  flags.DEFINE_integer("repeats", 3, "Round-robin passes; the median is "
                       "reported. --quick: 1.", lower_bound=1,
                       flag_values=FLAGS)
  flags.DEFINE_integer("test_examples", 500, "Test images for the one "
                       "untimed validation pass at the end of each run.",
                       lower_bound=1, flag_values=FLAGS)


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.models) - set(models.MODELS))
  if unknown:
    raise app.UsageError(f"unknown models {unknown}; choose from "
                         f"{', '.join(models.MODELS)}")
  warmup_steps = harness.setting("warmup_steps", 3)
  steps = harness.setting("steps", 8)
  repeats = harness.setting("repeats", 1)
  # Synthetic data is generated only as large as the largest run needs:
  # fastcifar's in whole loops.
  configs = [trainer.recipe(m, batch_size=FLAGS.batch_size)
             for m in FLAGS.models]
  needed = max(RECIPE_BATCH_SIZE * (warmup_steps + steps),
               *(c.batch_size * sum(harness.whole_loops(c, warmup_steps,
                                                         steps))
                 for c in configs))
  dataset, _ = harness.load_data(
      FLAGS.dataset, FLAGS.data_dir,
      train_examples=0 if FLAGS.data_dir else needed,
      test_examples=FLAGS.test_examples, seed=FLAGS.seed)
  check_enough_data(len(dataset.train_images), configs)
  settings = harness.sweep(FLAGS.precisions, FLAGS.jit_compile)
  report = harness.Report("training_throughput", FLAGS.output)
  run(dataset, settings, FLAGS.models, FLAGS.batch_size, warmup_steps, steps,
      repeats, FLAGS.seed, report)
  report.print_table(
      "Training throughput (steady state, images/s)",
      ["system", "model", "precision", "jit_compile", "batch_size",
       "fastcifar_default", "images_per_second", "ratio_to_recipe",
       "tflops_per_second", "fraction_of_peak", "peak_unit"])


if __name__ == "__main__":
  harness.run_main(main, define_flags)
