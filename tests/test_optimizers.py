"""Tests for fastcifar.optimizers against the update rule written out."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fastcifar import optimizers


def test_schedule_warms_up_then_decays():
  schedule = optimizers.WarmupLinearDecay(2.0, total_steps=100)
  values = [float(schedule(s)) for s in (0, 23, 100)]
  np.testing.assert_allclose(values, [0.4, 2.0, 0.14], rtol=1e-6)
  assert float(schedule(10)) == pytest.approx(0.4 + 1.6 * 10 / 23)


def _pytorch_sgd(p, grads, lr, momentum, decay, base_lr):
  """torch.optim.SGD(nesterov=True, weight_decay=decay/base_lr), per step."""
  buffer = np.zeros_like(p)
  for g, rate in zip(grads, lr):
    g = g + decay / base_lr * p
    buffer = momentum * buffer + g
    p = p - rate * (g + momentum * buffer)
  return p


@pytest.mark.parametrize("name,multiplier", [("kernel", 1.0), ("beta", 4.0)])
def test_update_is_pytorch_nesterov_with_coupled_decay(name, multiplier):
  start = np.array([1.0, -2.0, 0.5], np.float32)
  variable = keras.Variable(start, name=name)
  optimizer = optimizers.LookaheadSGD(
      0.1, total_steps=1000, momentum=0.8, weight_decay=0.01,
      bias_lr_multiplier=4.0, lookahead_every=0)
  grads = [np.array([0.3, 0.1, -0.2], np.float32) * (i + 1) for i in range(4)]
  for g in grads:
    optimizer.apply_gradients([(g, variable)])
  expected = _pytorch_sgd(start, grads, [0.1 * multiplier] * 4, 0.8, 0.01,
                          0.1 * multiplier)
  np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("total_steps", [10, 12])
def test_lookahead_pulls_weights_to_the_average_every_few_steps(total_steps):
  variable = keras.Variable(np.zeros(2, np.float32))
  optimizer = optimizers.LookaheadSGD(
      1.0, total_steps=total_steps, momentum=0.0, lookahead_every=5,
      lookahead_decay=0.5)
  average = weights = 0.0
  for step in range(1, total_steps + 1):
    optimizer.apply_gradients([(-np.ones(2, np.float32), variable)])
    weights += 1.0  # plain SGD, lr 1, gradient -1
    if step % 5 == 0:
      mix = 0.5 * (step / total_steps)**3
      average = weights = mix * average + (1 - mix) * weights
    elif step == total_steps:  # ended between updates: back to the average
      weights = average
    np.testing.assert_allclose(variable.numpy(), weights, rtol=1e-6)


def test_a_frozen_variable_trains_for_its_steps_only():
  frozen = keras.Variable(np.zeros(2, np.float32), name="whitening_bias")
  other = keras.Variable(np.zeros(2, np.float32), name="kernel")
  optimizer = optimizers.LookaheadSGD(
      0.1, total_steps=100, momentum=0.5, weight_decay=0.01,
      lookahead_every=0, freeze_after={"whitening_bias": 3})
  seen = []
  for _ in range(6):
    optimizer.apply_gradients([(np.ones(2, np.float32), frozen),
                               (np.ones(2, np.float32), other)])
    seen.append((frozen.numpy()[0], other.numpy()[0]))
  frozen_path, other_path = zip(*seen)
  assert len(set(frozen_path[:3])) == 3  # it trained in steps 1-3
  assert set(frozen_path[3:]) == {frozen_path[2]}  # then no step, no decay
  assert len(set(other_path)) == 6


def test_airbench_rates_per_1024_examples():
  optimizer = optimizers.airbench_optimizer(11.5, 1024, total_steps=480)
  kilostep_scale = 1024 * (1 + 1 / 0.15)
  # airbench's per-sum rate, times the batch for a per-mean loss.
  assert optimizer.base_learning_rate == pytest.approx(
      11.5 / kilostep_scale * 1024)
  assert optimizer.coupled_weight_decay == pytest.approx(
      0.0153 * 1024 / kilostep_scale)
  assert optimizer.bias_lr_multiplier == 64.0
  assert optimizer.lookahead_every == 5
  off = optimizers.airbench_optimizer(11.5, 512, 480, lookahead=False)
  assert off.lookahead_every == 0
  assert off.base_learning_rate == pytest.approx(optimizer.base_learning_rate
                                                 / 2)


def test_config_round_trip():
  optimizer = optimizers.airbench_optimizer(11.5, 1024, total_steps=480)
  again = optimizers.LookaheadSGD.from_config(optimizer.get_config())
  assert again.get_config() == optimizer.get_config()


def test_batch_norm_offsets_of_the_fast_model_get_the_multiplier():
  from fastcifar import models  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3),
                                             dtype=np.uint8)
  model = models.build_model("fast", 10, [0.5] * 3, [0.25] * 3, images)
  optimizer = optimizers.airbench_optimizer(11.5, 1024, total_steps=480)
  optimizer.build(model.trainable_variables)
  assert sorted(optimizer.lr_multipliers).count(64.0) == 6  # 6 BatchNorms
  assert len(optimizer.lr_multipliers) == 6 + 8  # + 6 convs, dense, whiten


def test_the_fast_recipe_trains_the_whitening_bias_for_3_epochs():
  from fastcifar import models  # pylint: disable=g-import-not-at-top
  from fastcifar.training import trainer
  images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3),
                                             dtype=np.uint8)
  model = models.build_model("fast", 10, [0.5] * 3, [0.25] * 3, images)
  optimizer = trainer.make_optimizer(trainer.recipe("fast"), 48)
  optimizer.build(model.trainable_variables)
  frozen = [(v, steps) for v, steps in
            zip(model.trainable_variables, optimizer.freeze_steps) if steps]
  assert len(frozen) == 1
  assert frozen[0][0] is model.layers[1].bias  # after Standardize
  assert frozen[0][1] == 3 * 48


def test_a_step_the_loss_scaler_skips_still_counts():
  variable = keras.Variable(np.zeros(2, np.float32))
  total_steps = 10
  optimizer = keras.optimizers.LossScaleOptimizer(optimizers.LookaheadSGD(
      1.0, total_steps=total_steps, momentum=0.0, lookahead_every=5,
      lookahead_decay=0.5))
  for step in range(total_steps):
    gradient = np.full(2, np.inf if step == 6 else -1.0, np.float32)
    optimizers.apply_and_count(optimizer, [gradient], [variable])
  assert int(optimizer.iterations) == total_steps
  assert float(optimizer.dynamic_scale) == 2.0**14  # the step was skipped
  # The last step (off the 5-step beat) still returns to the average.
  average = optimizer.inner_optimizer.averages[0]
  np.testing.assert_allclose(variable.numpy(), average.numpy())
  assert np.all(np.isfinite(variable.numpy()))


@pytest.mark.parametrize("name,kind,settings", [
    ("adam", keras.optimizers.Adam, {}),
    ("adamw", keras.optimizers.AdamW, {"weight_decay": 0.004}),
    ("sgd", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": False}),
    ("nesterov", keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", keras.optimizers.RMSprop, {"momentum": 0.0})])
def test_optimizer_names_are_kerass_own_optimizers(name, kind, settings):
  optimizer = optimizers.make_optimizer(name, 0.01)
  assert type(optimizer) is kind  # pylint: disable=unidiomatic-typecheck
  config = optimizer.get_config()
  for key, value in settings.items():
    assert config[key] == pytest.approx(value), key
  chosen = optimizers.make_optimizer(name, 0.01, weight_decay=0.1,
                                     **({"momentum": 0.5} if "momentum"
                                        in settings else {}))
  assert chosen.get_config()["weight_decay"] == pytest.approx(0.1)
  if "momentum" in settings:
    assert chosen.get_config()["momentum"] == pytest.approx(0.5)


def _rates(schedule, steps):
  return [float(schedule(s)) if callable(schedule) else schedule
          for s in steps]


def test_schedules_by_name():
  peak, total = 0.1, 100
  cosine = optimizers.make_schedule("cosine", peak, total)
  assert cosine.get_config() == keras.optimizers.schedules.CosineDecay(
      peak, total).get_config()  # the seed recipe's, unchanged
  np.testing.assert_allclose(
      _rates(optimizers.make_schedule("cosine", peak, total, 10),
             [0, 5, 10, 55, 100]), [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
  np.testing.assert_allclose(
      _rates(optimizers.make_schedule("step", peak, total),
             [0, 50, 51, 75, 76, 100]),
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
  np.testing.assert_allclose(
      _rates(optimizers.make_schedule("constant", peak, total, 20),
             [0, 10, 20, 60, 100]), [0.0, 0.05, 0.1, 0.1, 0.1], rtol=1e-6)
  assert optimizers.make_schedule("constant", peak, total) == peak
  assert optimizers.make_schedule("plateau", peak, total) == peak
  onecycle = optimizers.make_schedule("onecycle", peak, total)
  assert onecycle.get_config() == optimizers.WarmupLinearDecay(
      peak, total).get_config()  # airbench94's shape
  np.testing.assert_allclose(
      _rates(optimizers.make_schedule("onecycle", peak, total, 10),
             [0, 10, 100]), [0.02, 0.1, 0.007], rtol=1e-5)


def test_recipes_keep_their_optimizers_and_auto_spans_max_epochs():
  from fastcifar.training import trainer  # pylint: disable=g-import-not-at-top
  seed = trainer.make_optimizer(trainer.recipe("seed"), 10)
  assert isinstance(seed, keras.optimizers.Adam)
  assert seed._learning_rate.get_config()["decay_steps"] == 200
  auto = trainer.make_optimizer(
      trainer.recipe("seed", epochs="auto", max_epochs=30,
                      lr_schedule="cosine"), 10)
  assert auto._learning_rate.get_config()["decay_steps"] == 300
  fast = trainer.make_optimizer(trainer.recipe("fast"), 48)
  assert isinstance(fast, optimizers.LookaheadSGD)
  from fastcifar import layers  # pylint: disable=g-import-not-at-top
  assert fast.get_config() == optimizers.airbench_optimizer(
      11.5, 1024, 480, freeze_after={layers.WHITENING_BIAS: 144}).get_config()
  sgd = trainer.make_optimizer(
      trainer.recipe("seed", optimizer="nesterov", lr_schedule="onecycle",
                      momentum=0.8), 10)
  assert sgd.get_config()["nesterov"] and sgd.momentum == 0.8


@pytest.mark.parametrize("name", ["constant", "onecycle"])
def test_linear_warmup_lasts_the_steps_asked(name):
  # 390 of 49 * 390 steps: as a fraction of the run, multiplied back and
  # rounded down, 389.
  peak, warmup, total = 1.0, 390, 49 * 390
  schedule = optimizers.make_schedule(name, peak, total, warmup)
  rates = _rates(schedule, [warmup - 1, warmup])
  assert rates[0] < peak
  assert rates[1] == pytest.approx(peak)


@pytest.mark.parametrize("name", ["constant", "onecycle"])
def test_no_warmup_starts_at_the_peak(name):
  schedule = optimizers.make_schedule(name, 0.5, 100, 0)
  assert _rates(schedule, [0])[0] == pytest.approx(0.5)


def test_recipe_warmup_epochs_zero_starts_onecycle_at_the_peak():
  from fastcifar.training import trainer  # pylint: disable=g-import-not-at-top
  optimizer = trainer.make_optimizer(
      trainer.recipe("seed", optimizer="sgd", lr_schedule="onecycle",
                      warmup_epochs=0.0, learning_rate=0.1), 10)
  assert float(optimizer.learning_rate) == pytest.approx(0.1)
