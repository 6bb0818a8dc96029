"""Shared test fixtures: the real CIFAR-10 copy when present, global-state resets."""

from __future__ import annotations

import os

from absl import flags
import keras
import pytest

# Entry points' flags keep their defaults unless a test sets them with
# flagsaver; pytest's own argv is not absl's to parse.
flags.FLAGS.mark_as_parsed()

REAL_CIFAR10 = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                            "data", "cifar10-jpg.tar.gz")


@pytest.fixture
def real_cifar10_path() -> str:
  """Path of the real CIFAR-10 JPEG copy in ../shared; skips when absent."""
  if not os.path.isfile(REAL_CIFAR10):
    pytest.skip("real CIFAR-10 copy not found at ../shared/data")
  return REAL_CIFAR10


@pytest.fixture(autouse=True)
def _restore_keras_policy():
  """Every test leaves Keras's global dtype policy as it found it."""
  before = keras.mixed_precision.global_policy().name
  yield
  keras.mixed_precision.set_global_policy(before)
