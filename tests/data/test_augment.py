"""Tests for fastcifar.data.augment: outputs are flips and shifts of the
inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import augment


def _distinct_pixel_images(n: int, size: int = 8, seed: int = 0):
  """uint8 images in which every value occurs once (8*8*3 = 192 < 256).

  With distinct values, an output that matches a candidate transform can
  only have come from that transform.
  """
  rng = np.random.default_rng(seed)
  return np.stack([rng.permutation(size * size * 3).reshape(size, size, 3)
                   for _ in range(n)]).astype(np.uint8)


def _candidates(image: np.ndarray, max_shift: int):
  """Every (flip, dy, dx) version of `image` the augmentation may produce."""
  height, width = image.shape[:2]
  found = {}
  for flip in (False, True):
    source = image[:, ::-1] if flip else image
    padded = np.pad(source, [(max_shift,) * 2, (max_shift,) * 2, (0, 0)],
                    mode="reflect")
    for dy in range(2 * max_shift + 1):
      for dx in range(2 * max_shift + 1):
        found[(flip, dy - max_shift, dx - max_shift)] = \
            padded[dy:dy + height, dx:dx + width]
  return found


def _transform_of(image: np.ndarray, output: np.ndarray, max_shift: int):
  matches = [key for key, candidate in _candidates(image, max_shift).items()
             if np.array_equal(candidate, output)]
  assert len(matches) == 1, "output is not a flip/shift of its input"
  return matches[0]


def test_keeps_shape_and_dtype():
  images = tf.constant(np.random.default_rng(0).integers(
      0, 256, (5, 32, 32, 3), dtype=np.uint8))
  out = augment.flip_and_translate(images, tf.constant([1, 2]))
  assert out.shape == (5, 32, 32, 3) and out.dtype == tf.uint8


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_every_output_is_a_flip_and_shift_of_its_input(max_shift):
  images = _distinct_pixel_images(64)
  out = augment.flip_and_translate(tf.constant(images), tf.constant([3, 4]),
                                   max_shift=max_shift).numpy()
  transforms = [_transform_of(image, o, max_shift)
                for image, o in zip(images, out)]
  # Random, not constant: both flips, and shifts on both axes, both ways.
  flips = {t[0] for t in transforms}
  dys = {t[1] for t in transforms}
  dxs = {t[2] for t in transforms}
  assert flips == {False, True}
  assert min(dys) == -max_shift and max(dys) == max_shift
  assert min(dxs) == -max_shift and max(dxs) == max_shift
  # Each image draws its own transform.
  assert len(set(transforms)) > len(transforms) // 4


def test_no_shift_only_flips():
  images = _distinct_pixel_images(32)
  out = augment.flip_and_translate(tf.constant(images), tf.constant([0, 0]),
                                   max_shift=0).numpy()
  for image, o in zip(images, out):
    assert np.array_equal(o, image) or np.array_equal(o, image[:, ::-1])
  assert any(not np.array_equal(o, image) for image, o in zip(images, out))


def test_works_on_32x32_cifar_batches():
  images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3),
                                             dtype=np.uint8)
  out = augment.flip_and_translate(tf.constant(images),
                                   tf.constant([5, 6])).numpy()
  for image, o in zip(images, out):
    _transform_of(image, o, 2)


def test_same_seed_same_output_different_seed_different():
  images = tf.constant(_distinct_pixel_images(32))
  a = augment.flip_and_translate(images, tf.constant([7, 1]), 2).numpy()
  b = augment.flip_and_translate(images, tf.constant([7, 1]), 2).numpy()
  c = augment.flip_and_translate(images, tf.constant([7, 2]), 2).numpy()
  d = augment.flip_and_translate(images, tf.constant([8, 1]), 2).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, d)


def test_compiles_with_xla_to_the_same_augmentation():
  # Every draw is an integer one: XLA and the eager kernels turn Philox bits
  # into floats differently, into integers alike.
  images = _distinct_pixel_images(32)

  @tf.function(jit_compile=True)
  def step(batch, seed):
    return augment.flip_and_translate(batch, seed, 2)

  out = step(tf.constant(images), tf.constant([3, 9])).numpy()
  assert out.shape == images.shape and out.dtype == np.uint8
  for image, o in zip(images, out):
    _transform_of(image, o, 2)
  np.testing.assert_array_equal(out, augment.flip_and_translate(
      tf.constant(images), tf.constant([3, 9]), 2).numpy())
  other = step(tf.constant(images), tf.constant([3, 10])).numpy()
  assert not np.array_equal(out, other)


def test_a_shift_as_large_as_the_image_is_refused():
  with pytest.raises(ValueError, match="below the image's side"):
    augment.flip_and_translate(tf.zeros([2, 4, 4, 3], tf.uint8),
                               tf.constant([0, 0]), max_shift=4)


def test_image_coins_are_fixed_per_image_fair_and_seeded():
  images = np.random.default_rng(2).integers(0, 256, (4000, 8, 8, 3),
                                             dtype=np.uint8)
  coins = augment.image_coins(tf.constant(images), 0).numpy()
  assert 0.45 < coins.mean() < 0.55
  # A coin belongs to its image, wherever the image sits in the batch.
  order = np.random.default_rng(3).permutation(len(images))
  np.testing.assert_array_equal(
      augment.image_coins(tf.constant(images[order]), 0).numpy(),
      coins[order])
  other = augment.image_coins(tf.constant(images), 1).numpy()
  assert 0.45 < np.mean(other == coins) < 0.55  # another seed, fresh coins


def test_alternating_flip_flips_each_image_in_every_other_epoch():
  images = _distinct_pixel_images(64)

  def flipped(epoch, step):
    out = augment.flip_and_translate(tf.constant(images),
                                     tf.constant([5, step]), max_shift=0,
                                     epoch=epoch).numpy()
    for image, o in zip(images, out):
      assert np.array_equal(o, image) or np.array_equal(o, image[:, ::-1])
    return np.array([not np.array_equal(o, image)
                     for image, o in zip(images, out)])

  first = flipped(0, step=1)
  assert 0 < first.sum() < len(images)  # a coin per image, not per batch
  np.testing.assert_array_equal(flipped(1, step=2), ~first)
  np.testing.assert_array_equal(flipped(2, step=3), first)  # not the step's
  np.testing.assert_array_equal(flipped(7, step=1), ~first)


def test_alternating_flip_compiles_with_xla_and_translates():
  images = _distinct_pixel_images(32)

  @tf.function(jit_compile=True)
  def step(batch, seed, epoch):
    return augment.flip_and_translate(batch, seed, 2, epoch=epoch)

  even = step(tf.constant(images), tf.constant([3, 9]),
              tf.constant(4, tf.int64)).numpy()
  odd = step(tf.constant(images), tf.constant([3, 9]),
             tf.constant(5, tf.int64)).numpy()
  flips = [(_transform_of(image, e, 2)[0], _transform_of(image, o, 2)[0])
           for image, e, o in zip(images, even, odd)]
  assert all(a != b for a, b in flips)
  assert {_transform_of(image, e, 2)[1:] for image, e in zip(images, even)
          } != {(0, 0)}  # and still shifted


def test_test_time_views_are_mirrors_and_one_pixel_shifts():
  images = _distinct_pixel_images(3)
  views = augment.test_time_views(tf.constant(images), shift=1)
  assert [w for _, w in views] == [0.25, 0.25] + [0.125] * 4
  arrays = [v.numpy() for v, _ in views]
  np.testing.assert_array_equal(arrays[0], images)
  for plain, mirrored in zip(arrays[::2], arrays[1::2]):
    np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])
  up_left, down_right = arrays[2], arrays[4]
  # Shifted by one pixel each way; the new edge row/column is reflected.
  np.testing.assert_array_equal(up_left[:, 1:, 1:], images[:, :-1, :-1])
  np.testing.assert_array_equal(up_left[:, 0, 1:], images[:, 1, :-1])
  np.testing.assert_array_equal(down_right[:, :-1, :-1], images[:, 1:, 1:])
  np.testing.assert_array_equal(down_right[:, -1, :-1], images[:, -2, 1:])


def test_translation_and_tta_shifts_scale_with_the_image_size():
  images = np.random.default_rng(4).integers(0, 256, (48, 64, 64, 3),
                                             dtype=np.uint8)
  out = augment.flip_and_translate(tf.constant(images),
                                   tf.constant([2, 3])).numpy()
  shifts = [_transform_of(image, o, 4)[1:] for image, o in zip(images, out)]
  assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == 4  # 2 px at 32
  views = [v.numpy() for v, _ in augment.test_time_views(images)]
  padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
  np.testing.assert_array_equal(views[2], padded[:, :64, :64])  # 1 px at 32
  np.testing.assert_array_equal(views[4], padded[:, 4:, 4:])
  assert augment.scaled_shift(2, 32) == 2 and augment.scaled_shift(1, 96) == 3
  assert augment.scaled_shift(1, 8) == 1  # never no shift at all
