"""A generated, learnable stand-in for CIFAR: offline smoke runs, benchmarks."""

from __future__ import annotations

import numpy as np

from fastcifar.data.sources.dataset import (CIFAR_SHAPE, ImageDataset,
                                            make_dataset)


def load_synthetic(num_train: int = 50_000, num_test: int = 10_000,
                   num_classes: int = 10, seed: int = 0) -> ImageDataset:
  """Generates CIFAR-shaped images whose class is visible but not trivial.

  Each class has a smooth random colour pattern; an image is its class's
  pattern, shifted by up to 4 pixels, at a random contrast, plus heavy noise.
  A linear model does poorly on it and a small CNN learns it well above chance.

  Args:
    num_train, num_test: number of examples in each split.
    num_classes: number of classes.
    seed: everything generated is a function of the seed.

  Returns:
    The `ImageDataset`, same sizes as CIFAR by default.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.normal(0.0, 1.0, size=(num_classes, 8, 8, 3))
  patterns = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
  patterns = (patterns / patterns.std()).astype(np.float32)

  # Every class pattern at every shift, so a split is one gather, not a loop.
  offsets = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
  shifted = np.stack([np.roll(patterns, o, axis=(1, 2)) for o in offsets], 1)

  def split(n: int):
    labels = rng.integers(0, num_classes, size=n)
    images = np.empty((n,) + CIFAR_SHAPE, np.uint8)
    for start in range(0, n, 10_000):  # chunks bound the float32 scratch
      stop = min(n, start + 10_000)
      shift = rng.integers(0, len(offsets), size=stop - start)
      contrast = rng.uniform(40.0, 80.0, size=(stop - start, 1, 1, 1))
      noise = rng.standard_normal((stop - start,) + CIFAR_SHAPE,
                                  dtype=np.float32)
      chunk = 128.0 + contrast * shifted[labels[start:stop], shift] + 45 * noise
      images[start:stop] = np.clip(chunk, 0, 255).astype(np.uint8)
    return images, labels

  class_names = [f"class_{i}" for i in range(num_classes)]
  return make_dataset("synthetic", *split(num_train), *split(num_test),
                      class_names, origin="synthetic")
