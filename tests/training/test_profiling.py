"""Tests for fastcifar.training.profiling: which steps a profile holds."""

from __future__ import annotations

import pytest

from fastcifar.training import profiling


@pytest.mark.parametrize("first,last,expected", [
    (8, 10, (1, 15)),    # inside the first loop of 15
    (15, 16, (1, 20)),   # two loops; the epoch's last is 5 steps long
    (16, 16, (16, 20)),
    (21, 22, (21, 35)),  # epoch 2 starts its loops afresh
    (35, 99, (21, 40)),  # past the run's end: up to it
    (41, 50, None),      # nothing of it in the run
])
def test_profiled_span_is_the_whole_loops_holding_the_steps(first, last,
                                                           expected):
  assert profiling.profiled_span(first, last, steps_per_epoch=20,
                                 steps_per_loop=15,
                                 total_steps=40) == expected


def test_one_step_loops_profile_exactly_the_steps_asked():
  assert profiling.profiled_span(8, 10, 20, 1, 40) == (8, 10)


def _callback(first, last, said, **params):
  callback = profiling.ProfileSteps("unused", first, last, said.append)
  callback.set_params(params)
  callback.on_train_begin()
  return callback


def test_the_run_says_what_it_profiles_in_one_line_or_nothing():
  said = []
  _callback(8, 10, said, steps=20, epochs=2, steps_per_loop=15)
  _callback(16, 20, said, steps=20, epochs=2, steps_per_loop=15)  # exact
  _callback(50, 60, said, steps=20, epochs=2, steps_per_loop=15)
  assert said == [
      "fastcifar: --profile_steps=8,10: training runs 15 steps per loop "
      "(--steps_per_loop) in 40 steps, so steps 1-15 are profiled (the loops "
      "holding those asked)",
      "fastcifar: --profile_steps=50,60: the run has 40 steps, so nothing is "
      "profiled; ask for steps up to 40"]
