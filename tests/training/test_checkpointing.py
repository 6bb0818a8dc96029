"""Resume after a kill, SIGTERM/Ctrl-C, finished runs, reproducibility."""

from __future__ import annotations

import json
import os
import random
import signal
import time

from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest

from fastcifar import train
from fastcifar.data import sources
from fastcifar.training import checkpointing, trainer
from fastcifar.errors import UsageError
from tests.conftest import halved, op_determinism_restored
from tests.training import save_forever

SMALL_RUN = ["--epochs=3", "--train_examples=1024", "--batch_size=64",
             "--deterministic"]


def train_in_process(*args: str) -> None:
  """`python -m fastcifar.train ARGS`, but in this process.

  For the uninterrupted runs others are compared with, and for the reruns
  after a kill or a stop: the process is not their point (what a rerun
  finds and does is train.main's), and a TensorFlow start-up is seconds of
  the suite's time.
  """
  with flagsaver.flagsaver(), op_determinism_restored():
    flags.FLAGS(["fastcifar.train", *args])
    assert train.main(["fastcifar.train"]) == 0


def comparable(results: dict) -> dict:
  """Results without what legitimately differs between runs: times, and
  the loop length and checkpoint interval (which change no number)."""
  config = {k: v for k, v in results["config"].items()
            if k not in ("steps_per_loop", "checkpoint_every")}
  return {**{k: v for k, v in results.items()
             if "second" not in k and k not in (
                 "resumed_after_epoch", "resumed_at_step", "steps_per_loop",
                 "checkpoints_saved")},
          "config": config}


@pytest.fixture(scope="module")
def small_run(small_npz_16) -> list[str]:
  """SMALL_RUN on small synthetic 16x16 data: these tests are not about the
  data, and each of their processes trains up to 3 epochs."""
  return [*SMALL_RUN, f"--data_dir={small_npz_16}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_run) -> dict:
  output_dir = tmp_path_factory.mktemp("uninterrupted")
  train_in_process(*small_run, f"--output_dir={output_dir}")
  return json.loads((output_dir / "results.json").read_text())


def test_finished_run_is_not_overwritten(tmp_path, small_npz, capsys):
  results = tmp_path / "results.json"
  results.write_text(json.dumps({"test_accuracy": 0.5}))
  before = results.stat().st_mtime_ns
  # In this process: what is decided is train.main's, not the process's.
  with flagsaver.flagsaver(data_dir=small_npz, epochs="3", batch_size=64,
                           train_examples=1024, output_dir=str(tmp_path)):
    assert train.main(["train"]) == 0
  out = capsys.readouterr().out
  assert "already holds this run, finished" in out and "--restart" in out
  assert results.stat().st_mtime_ns == before


class StopAfterFirstEpoch(trainer.keras.callbacks.Callback):

  def on_epoch_end(self, epoch, logs=None):
    raise KeyboardInterrupt


def stopped_after_first_epoch(output_dir):
  """A 2-epoch run in `output_dir`, stopped after epoch 1; (data, config).

  At 16x16: the settings compared on resume are the point, not the pixels.
  """
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  config = trainer.Config(epochs=2, batch_size=64, precision="float32",
                           eval_batch_size=64)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, data, str(output_dir), verbose=0,
                                callbacks=[StopAfterFirstEpoch()])
  return data, config


def test_resume_with_other_settings_is_refused(tmp_path):
  # One stopped run for every refusal (each leaves it as it was), then the
  # fix they name. (test_checkpoint_of_another_model_or_class_count_is_refused
  # stopped a run of its own for two of them.)
  data, config = stopped_after_first_epoch(tmp_path)
  assert checkpointing.latest_epoch(str(tmp_path)) == 1
  other = trainer.Config(epochs=2, batch_size=32, precision="float32",
                          eval_batch_size=64)
  with pytest.raises(UsageError, match="batch_size=64, not 32"):
    trainer.train_and_evaluate(other, data, str(tmp_path), verbose=0)
  # The settings are read before any weight: the one-line refusal, not a
  # shape mismatch from restoring (512, 10) into (512, 100).
  hundred = halved(sources.load_synthetic(num_train=256, num_test=64,
                                          num_classes=100, seed=0))
  with pytest.raises(UsageError, match="num_classes=10, not 100"):
    trainer.train_and_evaluate(config, hundred, str(tmp_path), verbose=0)
  fast = trainer.Config(model="fast", epochs=2, batch_size=64,
                         precision="float32", eval_batch_size=64)
  with pytest.raises(UsageError, match="model=seed, not fast"):
    trainer.train_and_evaluate(fast, data, str(tmp_path), verbose=0)
  assert checkpointing.latest_epoch(str(tmp_path)) == 1  # kept
  # --restart trains anew instead.
  results = trainer.train_and_evaluate(other, data, str(tmp_path), verbose=0,
                                        restart=True)
  assert results["epochs"] == 2 and results["resumed_after_epoch"] == 0


def write_older_checkpoint(output_dir, config) -> None:
  """A checkpoint as fastcifar wrote them before 1097177: epoch, history,
  settings and control states, but no data position (step, sums, state)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  model.compile(optimizer="adam", loss="mse")
  model.optimizer.build(model.trainable_variables)
  settings = {**trainer._compared_settings(config), "dataset": "small",
              "num_classes": 10, "num_train_examples": config.train_examples}
  checkpoint = tf.train.Checkpoint(
      model=list(model.variables), optimizer=list(model.optimizer.variables),
      epoch=tf.Variable(1, dtype=tf.int64), history=tf.Variable("{}"),
      settings=tf.Variable(json.dumps(settings, sort_keys=True)),
      control_states=tf.Variable("[]"))
  tf.train.CheckpointManager(checkpoint, os.path.join(
      str(output_dir), checkpointing.CHECKPOINT_DIR), max_to_keep=3).save()


def test_a_checkpoint_from_an_older_fastcifar_is_refused_in_one_line(
    tmp_path, small_npz):
  run = dict(data_dir=small_npz, epochs="1", batch_size=64,
             train_examples=128, preflight=False, tensorboard=False,
             output_dir=str(tmp_path))
  with flagsaver.flagsaver(**run):
    write_older_checkpoint(tmp_path, train.config_from_flags())
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints"
                                                ).iterdir()}
    problem = (f"--output_dir {tmp_path} holds a checkpoint from an older "
               "fastcifar, which cannot resume here")
    with pytest.raises(UsageError) as e:
      train.main(["train"])
    assert str(e.value).startswith(problem)
    assert str(e.value).endswith("; pass --restart to train anew there, or "
                                 "choose another --output_dir")
    # The hint a stop would print reads the same folder: no traceback.
    assert problem in train._interrupted_line()
  assert sorted(os.listdir(tmp_path)) == ["checkpoints"]
  assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints"
                                           ).iterdir()} == before  # kept
  with flagsaver.flagsaver(**run, restart=True):  # the fix it names
    assert train.main(["train"]) == 0
  assert (tmp_path / "results.json").exists()


def test_a_run_stopped_after_its_last_checkpoint_finishes_on_rerun(tmp_path):
  # As killed during the final (TTA) evaluation or the saving of outputs:
  # every epoch is in the checkpoint, nothing is left to train. (16x16: the
  # positions are the point, not the pixels.)
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  config = trainer.Config(epochs=2, batch_size=64, precision="float32",
                           eval_batch_size=64, tta=True)

  class StopBeforeTheFinalEvaluation(trainer.keras.callbacks.Callback):
    def on_train_end(self, logs=None):
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, data, str(tmp_path), verbose=0,
                                callbacks=[StopBeforeTheFinalEvaluation()])
  assert checkpointing.latest_epoch(str(tmp_path)) == 2
  assert not (tmp_path / "results.json").exists()
  results = trainer.train_and_evaluate(config, data, str(tmp_path),
                                        verbose=0)
  assert results["epochs"] == 2 and results["resumed_after_epoch"] == 2
  assert results["images_per_second"] > 0  # from the recorded epochs
  history = json.loads((tmp_path / "history.json").read_text())
  assert len(history["accuracy"]) == len(history["epoch_seconds"]) == 2
  assert history["val_epochs"] == [1, 2]
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["test_accuracy"] == results["test_accuracy"]
  assert not (tmp_path / "checkpoints").exists()


def test_a_kill_mid_save_never_damages_the_last_checkpoint(tmp_path,
                                                         command_server):
  # tests/training/save_forever.py, forked from the command server
  # (tests/forked.py): a process of its own to kill inside a save, without
  # a TensorFlow import.
  rng = random.Random(3)
  for _ in range(2):
    process = command_server.start("tests.training.save_forever",
                                   [str(tmp_path)])
    assert process.printed(bool) == ["saving\n"], process.stderr[-3000:]
    time.sleep(rng.uniform(0.5, 2))  # each save takes tens of ms
    process.kill()
    process.wait(60)
    model = save_forever.model()
    state = checkpointing.RunCheckpoint(model, str(tmp_path),
                                        save_forever.SETTINGS).restore()
    epoch = state.epoch
    assert epoch >= 1 and state.history == {"epoch": [epoch]}
    assert state.step == epoch % 7
    # Never more than the last few, however many were saved (one more when
    # the kill fell between a save and the pruning of the oldest, which the
    # next save prunes).
    assert len(tf_checkpoints(tmp_path)) <= checkpointing.MAX_TO_KEEP + 1
    for v in model.trainable_variables:
      assert np.all(v.numpy() == epoch)


def tf_checkpoints(output_dir) -> list[str]:
  """The checkpoints the index names (the latest and those kept)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  state = tf.train.get_checkpoint_state(
      os.path.join(str(output_dir), checkpointing.CHECKPOINT_DIR))
  return list(state.all_model_checkpoint_paths) if state else []


# --- Inside an epoch ---------------------------------------------------------


class InterruptAtStep(keras.callbacks.Callback):
  """Stops the run as a kill would, once `step` steps of it are done."""

  def __init__(self, step: int, steps_per_epoch: int):
    super().__init__()
    self.step, self.steps_per_epoch, self.epoch = step, steps_per_epoch, 0

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    # Before the loop's checkpoint, if one is due: as a kill just before it.
    if self.epoch * self.steps_per_epoch + batch + 1 >= self.step:
      raise KeyboardInterrupt


def train_stopped_at(config, data, output_dir, stops, strategy=None,
                     num_train=None):
  """Trains, stopped at each global step of `stops` and resumed each time.

  Returns:
    `(results, weights, stdout of the last run)`.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from fastcifar import models  # pylint: disable=g-import-not-at-top
  steps_per_epoch = (num_train or len(data.train_images)) // config.batch_size
  for stop in stops:
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(
          config, data, str(output_dir), strategy=strategy, verbose=0,
          callbacks=[InterruptAtStep(stop, steps_per_epoch)])
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    results = trainer.train_and_evaluate(config, data, str(output_dir),
                                          strategy=strategy, verbose=2)
  weights = models.load_saved(
      os.path.join(str(output_dir), "model.keras")).get_weights()
  return results, weights, out.getvalue()


def assert_same_run(expected, got) -> None:
  """Bit for bit: every weight, every per-epoch number, the test's."""
  (results, weights, _), (again, again_weights, _) = expected, got
  assert comparable(again) == comparable(results)
  for a, b in zip(weights, again_weights, strict=True):
    np.testing.assert_array_equal(a, b)


MID_EPOCH = dict(epochs=3, batch_size=32, precision="float32",
                 eval_batch_size=64, deterministic=True,
                 checkpoint_every="3", steps_per_loop=2)


@pytest.mark.slow
def test_killed_inside_epochs_and_resumed_ends_bit_for_bit(tmp_path):
  """Stopped inside epochs, resumed with the same or other loops and
  checkpoint intervals: the uninterrupted run, bit for bit.

  One test, one uninterrupted run for both (they were two tests, each
  needing that run: twice on two xdist workers). That run checkpoints by
  a duration (what test_a_duration_interval_checkpoints_inside_epochs
  trained a run of its own for): a checkpoint interval changes no number.
  """
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  whole = train_stopped_at(
      trainer.Config(**{**MID_EPOCH, "checkpoint_every": "0.001s"}), data,
      tmp_path / "whole", [])
  # A duration checkpoints at every loop's end inside an epoch (3 an
  # epoch), and at epoch ends.
  assert whole[0]["checkpoints_saved"] == 3 * (3 + 1)
  assert whole[0]["checkpoint_seconds"] > 0
  config = trainer.Config(**MID_EPOCH)
  # 8 steps an epoch, checkpoints at steps 3 and 6 and the epoch's end.
  # Stopped at step 5 (kept: epoch 1 at step 3), then at 13 (kept: epoch 2
  # at step 3), which the last run resumes.
  stopped = train_stopped_at(config, data, tmp_path / "stopped", [5, 13])
  assert "resuming at epoch 2, step 3 (3 of its 8 steps done)" in stopped[2]
  assert_same_run(whole, stopped)
  assert stopped[0]["resumed_at_step"] == 3
  # Other loops and intervals at each stop and at the end.
  output_dir = tmp_path / "other_loops"
  for stop, loop, every in [(7, 3, "2"), (12, 1, "5")]:
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(
          trainer.Config(**{**MID_EPOCH, "steps_per_loop": loop,
                             "checkpoint_every": every}),
          data, str(output_dir), verbose=0,
          callbacks=[InterruptAtStep(stop, 8)])
  # Stopped at step 7 (kept: epoch 1 at step 6), then at 12 (kept: the end
  # of epoch 1; the next was due at epoch 2's step 5, step 13).
  assert checkpointing.latest_position(str(output_dir)) == (1, 0)
  stopped = train_stopped_at(
      trainer.Config(**{**MID_EPOCH, "steps_per_loop": 8,
                         "checkpoint_every": "epoch"}),
      data, output_dir, [])
  assert_same_run(whole, stopped)


@pytest.mark.slow
def test_streamed_killed_inside_epochs_and_resumed_ends_bit_for_bit(tmp_path):
  # Blocks of 100 examples, steps of 32: both cut each other. Stopped once,
  # at step 13 (kept: epoch 2 at step 3): what a streamed resume adds (the
  # blocks before the step counted from their sizes, the rest of the epoch
  # from the shards) one stop proves; a resumed run stopped again is in
  # memory's, test_killed_inside_epochs_and_resumed_ends_bit_for_bit.
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  path = sources.shards_path(str(tmp_path), "small")
  sources.write_shards(path, "small", data.class_names,
                       sources.array_chunks(data), sources.array_counts(data))
  data = sources.load_path(path, cache="disk", shuffle_buffer=100)
  config = trainer.Config(**MID_EPOCH)
  whole = train_stopped_at(config, data, tmp_path / "whole", [])
  stopped = train_stopped_at(config, data, tmp_path / "stopped", [13])
  assert "resuming at epoch 2, step 3 (3 of its 8 steps done)" in stopped[2]
  assert_same_run(whole, stopped)
  assert stopped[0]["resumed_at_step"] == 3


class StopTrainingAt(keras.callbacks.Callback):
  """Asks the run to stop, as the doctor's watch or EarlyStopping do."""

  def __init__(self, epoch: int, batch: int | None = None):
    super().__init__()
    self.epoch, self.batch, self.now = epoch, batch, 0

  def on_epoch_begin(self, epoch, logs=None):
    self.now = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self.now == self.epoch and batch + 1 == self.batch:
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch and self.batch is None:
      self.model.stop_training = True


class InterruptBeforeOutputs(keras.callbacks.Callback):
  def on_train_end(self, logs=None):
    raise KeyboardInterrupt


def test_a_callbacks_stop_is_kept_by_the_checkpoint(tmp_path):
  # Stopped by a callback in epoch 2 (at its end, or at its step 3 so that
  # it ends with that epoch), killed before the outputs: the rerun trains
  # no more (at the end) or only the rest of epoch 2, as the uninterrupted
  # run did, and writes. Both stops end the run after epoch 2, where the
  # uninterrupted one asked at its end did: one uninterrupted run for both
  # (a test for each trained it twice).
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  config = trainer.Config(**{**MID_EPOCH, "epochs": 4})
  whole = trainer.train_and_evaluate(
      config, data, str(tmp_path / "whole"), verbose=0,
      callbacks=[StopTrainingAt(1)])
  assert whole["epochs"] == 2
  for batch in (None, 3):
    output_dir = str(tmp_path / f"stopped_{batch}")
    stop = ([InterruptBeforeOutputs()] if batch is None
            else [InterruptAtStep(8 + 5, 8)])  # kept: epoch 2 at step 3
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(config, data, output_dir, verbose=0,
                                 callbacks=[StopTrainingAt(1, batch), *stop])
    assert checkpointing.latest_position(output_dir) == (
        (2, 0) if batch is None else (1, 3))
    results = trainer.train_and_evaluate(config, data, output_dir,
                                          verbose=0)
    assert results["epochs"] == 2
    assert comparable(results) == comparable(whole), batch


@pytest.mark.slow
def test_the_doctors_watch_carries_on_where_a_resumed_run_stopped(tmp_path):
  # A net that cannot learn (a rate too small to move it): the watch judges
  # it after 12 steps, at epoch 2's step 5, and stops the run after epoch 2.
  from fastcifar import doctor  # pylint: disable=g-import-not-at-top
  # 16x16, as the other MID_EPOCH runs: a quarter of the steps' cost.
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  config = trainer.Config(**{**MID_EPOCH, "epochs": 4,
                              "learning_rate": 1e-9})

  def run(output_dir, before=(), after=()):
    """A run with a new watch (as a new process has), between callbacks."""
    watch = doctor.Watch(stop=True, after_steps=12, print_fn=lambda _: None)
    results = trainer.train_and_evaluate(
        config, data, str(output_dir), verbose=0,
        callbacks=[*before, watch, *after])
    return results, watch

  whole, whole_watch = run(tmp_path / "whole")
  assert whole["epochs"] == 2 and "not-learning" in whole_watch.codes
  output_dir = tmp_path / "stopped"
  # Stopped after epoch 1's checkpoint, before the watch saw that epoch's
  # end; then just after the judgement, before the checkpoint after it
  # (kept: epoch 2 at step 3). A watch started afresh judged again 12
  # steps after the resume and stopped a run of 3 epochs.
  with pytest.raises(KeyboardInterrupt):
    run(output_dir, before=[StopAfterFirstEpoch()])
  with pytest.raises(KeyboardInterrupt):
    run(output_dir, after=[InterruptAtStep(13, 8)])
  results, watch = run(output_dir)
  assert results["resumed_at_step"] == 3
  assert comparable(results) == comparable(whole)
  assert watch.state() == whole_watch.state()


def test_restart_removes_everything_the_old_run_wrote(tmp_path):
  # 16x16: which files go is the point, not the pixels.
  data = halved(sources.load_synthetic(num_train=128, num_test=64, seed=0))
  config = trainer.Config(epochs=1, batch_size=64, precision="float32",
                          eval_batch_size=64)
  trainer.train_and_evaluate(config, data, str(tmp_path), verbose=0)
  # What train --export, evaluate, plot_history and TensorBoard add.
  for folder in ("export", "tensorboard"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "old").write_text("old")
  for name in ("confusion_matrix.png", "history.png"):
    (tmp_path / name).write_text("old")
  (tmp_path / "notes.txt").write_text("the user's")

  class Look(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      self.found = sorted(os.listdir(tmp_path))

  look = Look()
  trainer.train_and_evaluate(config, data, str(tmp_path), verbose=0,
                             restart=True, callbacks=[look])
  # Gone before the new run wrote anything; the user's own file stays.
  assert look.found == ["checkpoints", "notes.txt"] or look.found == [
      "notes.txt"]
  assert sorted(os.listdir(tmp_path)) == ["history.json", "model.keras",
                                          "notes.txt", "results.json",
                                          "run.json"]


def test_a_finished_run_asked_again(tmp_path, small_npz_16, capsys):
  run = dict(data_dir=small_npz_16, epochs="1", batch_size=64,
             train_examples=256, preflight=False, tensorboard=False,
             output_dir=str(tmp_path))
  with flagsaver.flagsaver(**run):
    assert train.main(["train"]) == 0
  first = json.loads((tmp_path / "results.json").read_text())
  capsys.readouterr()
  # The same settings (another loop length changes no number): its results.
  with flagsaver.flagsaver(**run, steps_per_loop="3"):
    assert train.main(["train"]) == 0
  out = capsys.readouterr().out
  assert (f"already holds this run, finished: test accuracy "
          f"{first['test_accuracy']:.4f}, test loss "
          f"{first['test_loss']:.4f} after 1 epoch") in out
  # Other settings: refused, naming each.
  with flagsaver.flagsaver(**{**run, "epochs": "2", "seed": 3}):
    with pytest.raises(UsageError, match=r"other settings: epochs=1 \(asked "
                       r"2\), seed=0 \(asked 3\); pass --restart"):
      train.main(["train"])
  assert json.loads((tmp_path / "results.json").read_text()) == first


def test_ctrl_c_in_the_export_says_the_outputs_are_complete(
    tmp_path, small_npz_16, capsys, monkeypatch):
  from fastcifar import serving  # pylint: disable=g-import-not-at-top

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
    yield  # pylint: disable=unreachable

  monkeypatch.setattr(serving, "export_all", interrupted)
  with flagsaver.flagsaver(data_dir=small_npz_16, epochs="1", batch_size=64,
                           train_examples=256, preflight=False,
                           tensorboard=False, export=True,
                           output_dir=str(tmp_path)):
    assert train.main(["train"]) == 130
    err = capsys.readouterr().err
    assert (f"training had finished and its outputs are complete in "
            f"{tmp_path}; run the same command again to export it") in err
    assert "nothing to resume" not in err
    # The watchdog's line, made without the disk, says the same.
    assert "outputs are complete" in train._watchdog_line()


def test_a_streamed_run_resumed_in_memory_is_refused(tmp_path):
  data = halved(sources.load_synthetic(num_train=256, num_test=64, seed=0))
  path = sources.shards_path(str(tmp_path), "small")
  sources.write_shards(path, "small", data.class_names,
                       sources.array_chunks(data), sources.array_counts(data))
  config = trainer.Config(**MID_EPOCH)
  output_dir = str(tmp_path / "run")
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(
        config, sources.load_path(path, cache="memory"), output_dir,
        verbose=0, callbacks=[InterruptAtStep(5, 8)])
  for cache, buffer, refused in [("disk", 10_000, "cache=memory, not disk")]:
    with pytest.raises(UsageError, match=refused):
      trainer.train_and_evaluate(
          config, sources.load_path(path, cache=cache,
                                    shuffle_buffer=buffer),
          output_dir, verbose=0)
  assert checkpointing.latest_position(output_dir) == (0, 3)  # kept


def _resume_line(position) -> str | None:
  """What a rerun from `position` says it does."""
  if not position:
    return None
  epoch, step = position
  return (f"resuming at epoch {epoch + 1}, step {step} " if step
          else f"resuming after epoch {epoch} ")


@pytest.mark.slow
def test_kill_9_at_random_moments_inside_epochs_ends_exactly(
    uninterrupted, tmp_path, small_run, capsys, command_server):
  """`kill -9` at any moment, the same command each time: the run ends as
  the uninterrupted one (in this process) did.

  Also what two tests proved apart (each a process more): a run killed
  and rerun, in other loops, resumes and matches; and the same seed gives
  the same run in other processes, each with a TensorFlow runtime of its
  own, as in this one (every epoch but the rerun's is trained by the
  processes killed). The commands killed are forked from the command
  server (tests/forked.py): processes of their own, killed inside their
  epochs, without a TensorFlow import each (seconds); no moment of their
  start-up is the point.
  """
  # 3 epochs of 16 steps, a checkpoint every 5 steps and at epoch ends,
  # loops of 2 steps: killed 3 times at random (`kill -9` at any moment,
  # even inside a save: a checkpoint is the latest only once complete).
  args = [*small_run, "--checkpoint_every=5", "--steps_per_loop=2",
          "--nopreflight", f"--output_dir={tmp_path}"]
  rng = random.Random(30)
  said = []
  for _ in range(3):
    position = checkpointing.latest_position(str(tmp_path))
    process = command_server.start("fastcifar.train", args)
    lines = process.printed(lambda lines: len(lines) >= (2 if position else 1))
    assert lines[0].startswith("fastcifar: seed model"), lines
    if position:
      said.append((_resume_line(position), lines[1]))
    # Once this run has saved (start-up takes its own time on a loaded
    # machine), at a random moment: in a loop, a save, an evaluation.
    deadline = time.monotonic() + 240
    while (checkpointing.latest_position(str(tmp_path)) == position
           and process.poll() is None and time.monotonic() < deadline):
      time.sleep(0.1)
    time.sleep(rng.uniform(0, 3))
    process.send_signal(signal.SIGKILL)
    process.wait(60)
    if (tmp_path / "results.json").exists():
      break
  finished = (tmp_path / "results.json").exists()  # before the last kill
  position = checkpointing.latest_position(str(tmp_path))
  capsys.readouterr()
  # The same command, the process not its point; in loops of 3 steps (the
  # killed runs': 2), which cut the checkpoint interval elsewhere.
  train_in_process(*args, "--steps_per_loop=3")
  if position:
    said.append((_resume_line(position), capsys.readouterr().out))
  for expected, line in said:
    assert expected in line, (expected, line)
  assert any(", step " in expected for expected, _ in said), said
  results = json.loads((tmp_path / "results.json").read_text())
  history = json.loads((tmp_path / "history.json").read_text())
  assert results["epochs"] == 3
  assert results["steps_per_loop"] == (2 if finished else 3)
  assert len(history["val_accuracy"]) == 3
  assert not (tmp_path / "checkpoints").exists()
  # Order, augmentation and dropout are functions of (seed, step), and the
  # checkpoint holds every variable, so the resumed run is the same run.
  assert comparable(results) == comparable(uninterrupted)


@pytest.mark.slow
def test_mirrored_killed_inside_epochs_and_resumed_ends_bit_for_bit(
    tmp_path, command_server):
  # Logical devices need a process of their own (see test_trainer):
  # tests/training/mirrored_resume.py, forked from the command server
  # (tests/forked.py), whose TensorFlow runtime has not started when it
  # forks (no import of its own: seconds). Stopped once, at step 13 (kept:
  # epoch 2 at step 3): what a mirrored resume adds (each replica's input
  # and sums from a position inside an epoch) one stop proves; a resumed
  # run stopped again is one device's, in
  # test_killed_inside_epochs_and_resumed_ends_bit_for_bit. Two epochs, not
  # MID_EPOCH's 3: the resumed epoch is the last; the epochs after a resumed
  # one are the pipeline's, over replicas too (test_pipeline's
  # test_a_mid_epoch_start_splits_the_same_global_batches_over_replicas),
  # and a mirrored step costs more than one device's.
  out = command_server.run("tests.training.mirrored_resume", [str(tmp_path)],
                           timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "same"


@pytest.mark.slow
def test_auto_epochs_and_plateaus_killed_inside_epochs_end_bit_for_bit(
    tmp_path):
  # Early stopping and a plateau schedule on a held-out split: their
  # counters, best loss and best weights come back with a mid-epoch resume.
  # The last resume is after the best epoch (5): the best loss decides that
  # epoch 6 stops the run, and the best weights, epoch 5's, which the
  # checkpoint holds beside epoch 6's, are the ones the run ends with. (A
  # CLI run `kill -9`ed after its best epoch and resumed proved this too, a
  # process more: a kill keeps what a stop keeps, the last save, and
  # test_kill_9_at_random_moments_inside_epochs_ends_exactly kills commands.)
  # 16x16, as the other MID_EPOCH runs (a quarter of a step's cost), at
  # batch 16, 16 steps an epoch: the validation loss falls to epoch 5 and
  # rises at epoch 6, which lowers the rate and stops the run (at 32x32
  # and batch 32 it did so too; at 16x16 and batch 32 it only fell).
  data = halved(sources.load_synthetic(num_train=320, num_test=64, seed=0))
  config = trainer.Config(**{
      **MID_EPOCH, "epochs": "auto", "max_epochs": 6, "patience": 1,
      "min_delta": 0.0, "validation_examples": 64, "lr_schedule": "plateau",
      "plateau_patience": 0, "optimizer": "rmsprop", "learning_rate": 2e-3,
      "batch_size": 16})
  whole = train_stopped_at(config, data, tmp_path / "whole", [],
                           num_train=256)
  assert (whole[0]["best_epoch"], whole[0]["stopped_epoch"]) == (5, 6)
  stopped = train_stopped_at(config, data, tmp_path / "stopped",
                             [16 + 5, 5 * 16 + 4], num_train=256)
  assert "resuming at epoch 6, step 3 " in stopped[2]
  assert_same_run(whole, stopped)
