"""Trains a CIFAR model: `python -m fastcifar.train --epochs=20`.

Flags -> `Config` -> `trainer.train_and_evaluate`. Bad input ends with one
line naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
from typing import NoReturn

from absl import flags
import tensorflow as tf

from fastcifar import models, optimizers
from fastcifar.cli import common as cli
from fastcifar.data import service as data_service, sources
from fastcifar.training import distribute, policy, stopping
from fastcifar.errors import UsageError


_DATA = cli.data_flags()
_MODEL = flags.DEFINE_string(
    "model", "seed",
    "seed: the textbook Keras CNN (defaults: 20 epochs, batch 128, Adam "
    "2e-3 with cosine decay). fast: airbench94's network and recipe "
    "(defaults: 10 epochs, batch 1024, Nesterov SGD with lookahead, label "
    "smoothing 0.2, alternating flips, test-time augmentation). "
    "package.module:function: your own model, function(num_classes=..., "
    "image_shape=...) returning a keras.Model that takes uint8 images; the "
    "module is imported from the current directory or PYTHONPATH, and the "
    "function's `recipe` attribute (a fastcifar.models.recipes.Recipe) "
    "gives its defaults (without one: seed's).")
_FROM_LOGITS = flags.DEFINE_boolean(
    "from_logits", None, "The model outputs logits, not probabilities. "
    "Default: the model's recipe's (off).")
_EPOCHS = flags.DEFINE_string(
    "epochs", None, "Training epochs, or auto: train until the validation "
    "loss stops improving (see --patience, --min_delta, --max_epochs) and "
    "keep the best epoch's weights. Default: the model's.")
_MAX_EPOCHS = flags.DEFINE_integer(
    "max_epochs", 100, "With --epochs=auto: the most epochs to train; "
    "schedules that need a run length (cosine, onecycle, step) span this "
    "many epochs.")
_PATIENCE = flags.DEFINE_integer(
    "patience", 5, "With --epochs=auto: epochs without improvement before "
    "stopping (Keras EarlyStopping's patience).")
_MIN_DELTA = flags.DEFINE_float(
    "min_delta", 0.0, "With --epochs=auto: the least fall of the validation "
    "loss that counts as an improvement.")
_VALIDATION_EXAMPLES = flags.DEFINE_integer(
    "validation_examples", None, "Hold out N training examples (seeded, "
    "stratified by class) for the per-epoch val_* metrics; the test set is "
    "then evaluated once, after training. 0: none, and val_* is the test "
    "set. Default: 5000 with --epochs=auto, else 0.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Global batch size. Default: the model's.")
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None,
    "Peak learning rate. Default: the model's for the optimizer (seed: adam "
    "and adamw 2e-3, rmsprop 1e-3, sgd and nesterov 0.05; fast: airbench "
    "11.5 per 1,024 examples, as airbench states it).")
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer", None, optimizers.OPTIMIZERS,
    "Keras's Adam, AdamW, SGD with momentum, SGD with Nesterov momentum, "
    "RMSprop, or airbench94's PyTorch-style Nesterov SGD with lookahead. "
    "Default: the model's (seed adam, or rmsprop under --epochs=auto; fast "
    "airbench).")
_LR_SCHEDULE = flags.DEFINE_enum(
    "lr_schedule", None, optimizers.SCHEDULES,
    "cosine: decay to 0 along a cosine (Keras CosineDecay). constant. step: "
    "a tenth of the rate from half the run, a hundredth from 3/4. plateau: "
    "constant, times --plateau_factor whenever the validation loss has not "
    "improved for --plateau_patience epochs (Keras ReduceLROnPlateau; needs "
    "--validation_examples). onecycle: linear rise over --warmup_epochs "
    "(default 23% of the run) from 0.2 of the peak, then linear fall to 0.07 "
    "of it (airbench94's). Under --epochs=auto, the run's length is "
    "--max_epochs. Default: the model's (seed cosine, or plateau under "
    "--epochs=auto; fast onecycle).")
_WARMUP_EPOCHS = flags.DEFINE_float(
    "warmup_epochs", None, "Epochs of linear learning-rate warm-up (cosine, "
    "constant, onecycle; 0: start at the peak). Default: none; onecycle: "
    "23% of the run.")
_MOMENTUM = flags.DEFINE_float(
    "momentum", None, "Momentum for sgd, nesterov, rmsprop, airbench. "
    "Default: 0.9, 0.9, 0, 0.85.")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", None, "Weight decay: Keras's decoupled decay per step "
    "(adamw default 0.004, others none); airbench: per 1,024 examples, "
    "default 0.0153.")
_PLATEAU_FACTOR = flags.DEFINE_float(
    "plateau_factor", 0.2, "--lr_schedule=plateau: the factor the rate is "
    "multiplied by on a plateau.")
_PLATEAU_PATIENCE = flags.DEFINE_integer(
    "plateau_patience", 2, "--lr_schedule=plateau: epochs without "
    "improvement of the validation loss before the rate is lowered.")
_MIN_LR = flags.DEFINE_float(
    "min_lr", 0.0, "--lr_schedule=plateau: the rate is never lowered below "
    "this.")
_LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing", None, "Label smoothing. Default: the model's "
    "(seed 0, fast 0.2).")
_AUGMENT = flags.DEFINE_boolean(
    "augment", True, "Random flip and 2-pixel translation (at 32x32, scaled "
    "with the image size), on the device.")
_ALTERNATING_FLIP = flags.DEFINE_boolean(
    "alternating_flip", None, "With --augment: flip each image in every "
    "other epoch (from a fixed coin per image) instead of at random, as "
    "airbench does. Default: on for fast, off for seed.")
_TTA = flags.DEFINE_boolean(
    "tta", None, "Test-time augmentation for the final evaluation: outputs "
    "averaged over the image, its mirror and one-pixel shifts. Default: on "
    "for fast, off for seed.")
_VALIDATION_FREQ = flags.DEFINE_integer(
    "validation_freq", None, "Compute val_* (on the validation split, or on "
    "the test set without one) after every N-th epoch, and after the last. "
    "Default: the model's (seed 1, fast 10: only after the last).")
_LOOKAHEAD = flags.DEFINE_boolean(
    "lookahead", True, "fast: every 5 steps, average the weights into a "
    "running average and continue from it.")
_PRECISION = flags.DEFINE_enum(
    "precision", "auto", policy.PRECISIONS,
    "auto: mixed_float16 on GPUs (compute capability 7+), mixed_bfloat16 on "
    "TPUs and bfloat16-capable CPUs, float32 elsewhere.")
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile", "auto", policy.JIT_CHOICES,
    "XLA over the whole step. auto: on for GPUs and TPUs, off on CPUs "
    "(measured slower there). The augmentation and the input "
    "standardization are compiled with XLA either way.")
_STEPS_PER_LOOP = flags.DEFINE_string(
    "steps_per_loop", "auto",
    "Training steps per call into TensorFlow: they run in a loop on the "
    "device, and the loss check, progress bar and callbacks run once per "
    "loop (as Keras's steps_per_execution). Same batches and numbers for "
    "every N. auto: about 4,096 examples per loop on CPUs, a whole epoch (at "
    "most 500 steps) on GPUs and TPUs.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds data order, init, dropout, "
                             "augmentation and the synthetic data.")
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples", 0, "0: all; N: a seeded random subset of N examples.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None,
    "Where to write model.keras, history.json and results.json.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", distribute.STRATEGIES,
    "tf.distribute strategy. auto: mirrored when more than one GPU is "
    "visible, else one device. multi_worker reads TF_CONFIG.")
_DATA_SERVICE = flags.DEFINE_string(
    "data_service", None,
    "grpc://HOST:PORT of a tf.data service dispatcher (see "
    "tools/data_service.py) to produce the training batches.")
_RESTART = flags.DEFINE_boolean(
    "restart", False, "Train anew even if --output_dir holds a finished or "
    "unfinished run: everything the old run wrote there (checkpoints, "
    "model.keras, history.json, results.json, tensorboard/, export/, "
    "confusion_matrix.png, history.png) is removed as the run starts (by "
    "default an unfinished run resumes, and a finished one asked again "
    "prints its results). A stopped --restart run resumes without "
    "--restart.")
_CHECKPOINT_EVERY = flags.DEFINE_string(
    "checkpoint_every", "10m",
    "With --output_dir, a checkpoint ends every epoch; this adds ones inside "
    "epochs, so a kill loses at most this much training: N steps (e.g. "
    "500), or training time since the last checkpoint (e.g. 90s, 10m, 1h; "
    "under --strategy=multi_worker, on any worker's clock: all save at the "
    "same step). epoch: at epoch ends only. A rerun resumes at the "
    "checkpoint's epoch and step, exactly as the run would have gone on "
    "(see docs/reliability.md).")
_DETERMINISTIC = flags.DEFINE_boolean(
    "deterministic", False, "TensorFlow op determinism: same seed, same "
    "numbers, somewhat slower.")


_PREFLIGHT = flags.DEFINE_boolean(
    "preflight", True,
    "fastcifar.doctor: before the first step, check the model, loss, "
    "optimizer and a batch of the data for the mistakes that keep accuracy "
    "at chance, and refuse to train on one; during training, stop a run "
    "that is not learning.")
_TENSORBOARD = flags.DEFINE_boolean(
    "tensorboard", True,
    "Write TensorBoard logs to OUTPUT_DIR/tensorboard (with --output_dir).")
_EXPORT = flags.DEFINE_boolean(
    "export", False, "After training, export OUTPUT_DIR/model.keras for "
    "serving into OUTPUT_DIR/export: a SavedModel taking uint8 images and, "
    "where TensorFlow ships TFLite, model.tflite (see fastcifar.export).")
_PROFILE_STEPS = flags.DEFINE_string(
    "profile_steps", "",
    "Profile training steps FIRST,LAST of the run (e.g. 10,15; counted from "
    "1) into OUTPUT_DIR/tensorboard. Steps run in loops (--steps_per_loop) "
    "and a profile holds whole loops: those holding the steps asked, said "
    "in one line when they are more. Empty: no profile.")


def profile_steps(steps: str) -> tuple[int, int] | None:
  """--profile_steps as `(FIRST, LAST)`; None when empty."""
  if not steps:
    return None
  try:
    first, last = (int(s) for s in steps.split(","))
  except ValueError:
    raise UsageError(f"--profile_steps={steps}: write FIRST,LAST, e.g. "
                     "10,15") from None
  if not 1 <= first <= last:
    raise UsageError(f"--profile_steps={steps}: need 1 <= FIRST <= LAST")
  return first, last


def make_callbacks(dataset: sources.ImageDataset, output_dir: str | None,
                   seed: int, chief: bool) -> list:
  """The doctor's Watch and (on the chief) TensorBoard and the profile."""
  from fastcifar.training import fit  # pylint: disable=g-import-not-at-top
  return fit.make_callbacks(
      dataset, output_dir, seed, chief, preflight=_PREFLIGHT.value,
      tensorboard=_TENSORBOARD.value,
      early_stopping=parse_epochs(_EPOCHS.value) == "auto",
      profile_steps=profile_steps(_PROFILE_STEPS.value))


def parse_count_or_auto(name: str, value: str | None, example: int
                        ) -> int | str | None:
  """A flag that is a count or "auto", as `Config` takes it (None: default).

  Args:
    name: the flag, for the error.
    value: what was given.
    example: a count to show in the error.
  """
  if value is None or value == "auto":
    return value
  try:
    return int(value)
  except ValueError:
    raise UsageError(f"--{name}={value} is neither a number nor auto; write "
                     f"e.g. --{name}={example} or --{name}=auto") from None


def parse_epochs(epochs: str | None) -> int | str | None:
  """--epochs as `Config` takes it: a number, "auto" or None (the model's)."""
  return parse_count_or_auto("epochs", epochs, 20)


def config_from_flags(model_recipe=None):
  """The `Config` the flags describe (`model_recipe`: a user's model's)."""
  from fastcifar.training import trainer  # pylint: disable=g-import-not-at-top
  return trainer.recipe(
      _MODEL.value, model_recipe, epochs=parse_epochs(_EPOCHS.value),
      from_logits=_FROM_LOGITS.value,
      batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value,
      label_smoothing=_LABEL_SMOOTHING.value, augment=_AUGMENT.value,
      alternating_flip=_ALTERNATING_FLIP.value, tta=_TTA.value,
      validation_freq=_VALIDATION_FREQ.value,
      lookahead=_LOOKAHEAD.value, precision=_PRECISION.value,
      jit_compile=_JIT_COMPILE.value, seed=_SEED.value,
      train_examples=_TRAIN_EXAMPLES.value,
      deterministic=_DETERMINISTIC.value,
      steps_per_loop=parse_count_or_auto("steps_per_loop",
                                         _STEPS_PER_LOOP.value, 64),
      checkpoint_every=_CHECKPOINT_EVERY.value,
      validation_examples=_VALIDATION_EXAMPLES.value,
      max_epochs=_MAX_EPOCHS.value, patience=_PATIENCE.value,
      min_delta=_MIN_DELTA.value, optimizer=_OPTIMIZER.value,
      lr_schedule=_LR_SCHEDULE.value, warmup_epochs=_WARMUP_EPOCHS.value,
      momentum=_MOMENTUM.value, weight_decay=_WEIGHT_DECAY.value,
      plateau_factor=_PLATEAU_FACTOR.value,
      plateau_patience=_PLATEAU_PATIENCE.value, min_lr=_MIN_LR.value)


def main(argv: list[str]) -> int:
  """Trains as the flags say; UsageError for bad input (see `cli.run`)."""
  del argv
  # pylint: disable-next=g-import-not-at-top
  from fastcifar.training import fit, trainer
  # A user's module is imported here, its recipe read: fail in seconds.
  builder, _, model_recipe = fit.resolve_model(_MODEL.value)
  _finished.clear()  # (main may run more than once in a process: tests)
  config = config_from_flags(model_recipe)
  # Check what can be checked before loading data: fail in seconds.
  config.validate()
  if _EXPORT.value and not _OUTPUT_DIR.value:
    raise UsageError("--export writes OUTPUT_DIR/export: pass --output_dir")
  if profile_steps(_PROFILE_STEPS.value) and not _OUTPUT_DIR.value:
    raise UsageError("--profile_steps writes into OUTPUT_DIR/tensorboard: "
                     "pass --output_dir")
  if _OUTPUT_DIR.value:
    trainer.prepare_output_dir(_OUTPUT_DIR.value)
  if _DATA_SERVICE.value and not _DATA_SERVICE.value.startswith("grpc://"):
    raise UsageError(f"--data_service={_DATA_SERVICE.value} must look like "
                     "grpc://HOST:PORT")
  try:
    if _DATA_SERVICE.value:
      data_service.check(_DATA_SERVICE.value)
    # Multi-worker and TPU runtimes must start before any other TF work.
    strategy = distribute.make_strategy(_STRATEGY.value)
    dataset = cli.load_data(_DATA, _SEED.value)
    with _watch_data_service():
      results = trainer.train_and_evaluate(
          config, dataset, _OUTPUT_DIR.value, model=builder,
          model_recipe=model_recipe, strategy=strategy,
          restart=_RESTART.value, data_service=_DATA_SERVICE.value,
          callbacks=make_callbacks(dataset, _OUTPUT_DIR.value, _SEED.value,
                                   distribute.is_chief(strategy)))
  except trainer.AlreadyFinished as e:
    print(f"fastcifar.train: {e}")  # its results; exported if asked
    results = None
  except KeyboardInterrupt:
    stopping.say(_interrupted_line())
    return stopping.EXIT_INTERRUPTED
  except (*distribute.LOST_PEER_ERRORS, tf.errors.OutOfRangeError) as e:
    _exit_for_lost_peer(e)
  _finished.append(True)
  if results:
    _print_results(results, distribute.is_chief(strategy))
  if _EXPORT.value and distribute.is_chief(strategy):
    try:
      _export(_OUTPUT_DIR.value)
    except KeyboardInterrupt:
      stopping.say(_interrupted_line())
      return stopping.EXIT_INTERRUPTED
  return 0


def _print_results(results: dict, chief: bool) -> None:
  """The run's closing line."""
  print(f"fastcifar: test accuracy {results['test_accuracy']:.4f} after "
        f"{results['epochs']} epoch{'s' * (results['epochs'] != 1)} in "
        f"{results['train_seconds']:.0f} s of "
        f"training ({results['images_per_second']:,.0f} images/s, "
        f"{results['precision']}, {results['device']})"
        + (f"; best epoch {results['best_epoch']} (validation loss "
           f"{results['validation_loss']:.4f}) kept"
           if "best_epoch" in results else "")
        + (f"; {results['checkpoints_saved']} checkpoint"
           f"{'s' * (results['checkpoints_saved'] != 1)} in "
           f"{results['checkpoint_seconds']:.1f} s"
           if results.get("checkpoints_saved") else "")
        + (f"; outputs in {_OUTPUT_DIR.value}"
           if _OUTPUT_DIR.value and chief else ""))


def _export(output_dir: str) -> None:
  """--export: the saved model, ready to serve, in OUTPUT_DIR/export."""
  # pylint: disable=g-import-not-at-top
  from fastcifar import serving
  from fastcifar.training import outputs
  model_path = os.path.join(output_dir, "model.keras")
  model = models.load_saved(model_path, compile=False)
  for path in serving.export_all(model, os.path.join(output_dir, "export"),
                                 record=outputs.read_run_record(model_path)):
    print(f"fastcifar.train: exported {path}")


# Holds True once the run's outputs are complete (the export may be left).
_finished: list[bool] = []


def _interrupted_line(from_memory: bool = False) -> str:
  """The line a stopped run ends with.

  Args:
    from_memory: touch neither the disk nor TensorFlow (the watchdog's
      line: the main thread may hang on the output folder).
  """
  # On a line of its own, after the progress bar's.
  return ("\nfastcifar.train: interrupted; "
          f"{_resume_hint(from_memory=from_memory)}")


def _watchdog_line() -> str:
  return _interrupted_line(from_memory=True)


def _watch_data_service():
  """Ends the run with one line when the tf.data service is lost."""
  if not _DATA_SERVICE.value:
    return contextlib.nullcontext()

  def on_lost(problem: str) -> None:
    stopping.exit_now(
        f"fastcifar.train: error: lost the tf.data service at "
        f"{_DATA_SERVICE.value}: {problem}; restart tools/data_service.py "
        f"(with --work_dir a restarted dispatcher resumes by itself), then "
        f"{_resume_hint(from_memory=True)}", 1)

  return data_service.Monitor(_DATA_SERVICE.value, on_lost)


def _exit_for_lost_peer(error: Exception) -> NoReturn:
  """A lost worker or tf.data service: one line, and out at once.

  Exits through `stopping.exit_now`: TensorFlow's shutdown waits for the lost
  peer and would block for good.
  """
  lost = distribute.lost_peer(error) or (
      "a worker" if _STRATEGY.value == "multi_worker" else None)
  if lost:
    what = f"lost {lost} ({distribute.first_line(error)})"
    how = "start every worker again with {command}"
  elif _DATA_SERVICE.value:
    what = (f"lost the tf.data service at {_DATA_SERVICE.value} "
            f"({distribute.first_line(error)})")
    if isinstance(error, tf.errors.OutOfRangeError):
      # distributed_epoch does not deliver again what a worker held when
      # it died, so the data ends short.
      what = (f"the tf.data service at {_DATA_SERVICE.value} ended the data "
              "early, as it does when one of its workers dies")
    how = "check tools/data_service.py, then run {command} again"
  else:
    raise error
  stopping.exit_now(f"fastcifar.train: error: {what}; {_resume_hint(how)}", 1)


def _resume_hint(how: str = "run {command} again",
                 from_memory: bool = False) -> str:
  """What a rerun will do, from the latest checkpoint's position.

  Args:
    how: the advice, `{command}` standing for the command to rerun.
    from_memory: only what this process knows (its last restore or save),
      not the disk.
  """
  output_dir = _OUTPUT_DIR.value
  if not output_dir:
    return "nothing is saved without --output_dir; the run starts over"
  # The same command with --restart would start over, not resume.
  command = ("the command without --restart" if _RESTART.value else
             "the same command")
  advice = how.format(command=command)
  if _finished:
    return (f"training had finished and its outputs are complete in "
            f"{output_dir}; {advice} to "
            + ("export it" if _EXPORT.value else "see its results"))
  # Imported by `run` before the watchdog can need it.
  # pylint: disable-next=g-import-not-at-top
  from fastcifar.training import checkpointing
  if from_memory:
    known, position = checkpointing.known_position(output_dir)
    if not known:
      return (f"{advice} to resume from the latest checkpoint in "
              f"{output_dir}, if one was saved")
  else:  # the disk is the truth: another worker may have saved since
    try:
      position = checkpointing.latest_position(output_dir)
    except checkpointing.OlderCheckpoint as e:  # a rerun is refused too
      return str(e)
  if position is None:
    return "no checkpoint was saved yet, nothing to resume: the run starts over"
  epoch, step = position
  at = (f"at epoch {epoch + 1}, step {step}" if step
        else f"after epoch {epoch}")
  return f"{advice} to resume {at} (checkpoint in {output_dir})"


def run() -> None:
  """Console-script entry point."""
  # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: cleanly at a step
  # boundary, or by the watchdog if TensorFlow does not return in time.
  # The watchdog's line is made from what this process knows: a disk that
  # hangs must not keep a stopped run alive.
  # pylint: disable-next=g-import-not-at-top,unused-import
  from fastcifar.training import checkpointing  # noqa: F401
  cli.limit_malloc_arenas()  # before TensorFlow's threads start
  with stopping.StopOnSignal(_watchdog_line):
    cli.run(main, "fastcifar.train")


if __name__ == "__main__":
  run()
