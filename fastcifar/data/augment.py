"""Augmentation on the device, inside the compiled step, on uint8 batches.

Plain TensorFlow ops with stateless randomness: they compile under XLA (Keras
preprocessing layers do not all do so) and the same seed gives the same
augmentation on any strategy and after a resume.
"""

from __future__ import annotations

import tensorflow as tf

# Odd multipliers for a murmur3-style mix of 31-bit integers (kept below
# 2**32 so that no int64 product overflows).
_MIX = (0x85EBCA6B, 0xC2B2AE35)
_MASK = 0x7FFFFFFF
# Philox by name, not the device's choice: the same integer draws with XLA
# (which the training step compiles this with) and without.
_ALG = "philox"
# CIFAR's 32 pixels: the shifts below (airbench's 2 px translation, 1 px
# test-time views) are for that side and scale with an image's own.
REFERENCE_SIDE = 32


def scaled_shift(pixels: int, side: int) -> int:
  """`pixels` at 32x32 scaled to an image side: round(pixels * side / 32).

  At least 1: below 16 pixels a shift would otherwise vanish altogether.
  """
  return max(1, int(round(pixels * side / REFERENCE_SIDE)))


def image_coins(images: tf.Tensor, seed) -> tf.Tensor:
  """A fixed random bit per image, from its pixels: the same image, same bit.

  Batches carry no example ids, so the bit hashes the image's pixels (a sum
  weighted by position, so that rearranged pixels count as another image)
  with the seed. Images with equal sums share a bit, which does no harm: over
  a dataset the bits are as good as fair coins.

  Args:
    images: uint8 `(B, H, W, C)`.
    seed: an int or int scalar tensor; another seed, other bits.

  Returns:
    bool `(B,)`.
  """
  weights = tf.reshape(tf.range(1, images.shape[1] * images.shape[2] *
                                 images.shape[3] + 1, dtype=tf.int64),
                        images.shape[1:])
  x = tf.reduce_sum(tf.cast(images, tf.int64) * weights, axis=[1, 2, 3])
  x = tf.bitwise.bitwise_and(x + tf.cast(seed, tf.int64) * 0x9E3779B1, _MASK)
  for multiplier in _MIX:
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = tf.bitwise.bitwise_and(x * multiplier, _MASK)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
  return tf.bitwise.bitwise_and(x, 1) == 1


def _reflect(index: tf.Tensor, size: int) -> tf.Tensor:
  """Folds indices in [-(size - 1), 2 * (size - 1)] into [0, size).

  As `tf.pad`'s REFLECT mode does (the edge pixel is not repeated): -1 -> 1,
  size -> size - 2.
  """
  return (size - 1) - tf.abs((size - 1) - tf.abs(index))


def flip_and_translate(images: tf.Tensor, seed: tf.Tensor,
                       max_shift: int | None = None, epoch=None) -> tf.Tensor:
  """Horizontal flip and random translation by up to `max_shift` px.

  Without `epoch`, each image is flipped at random. With it, airbench's
  alternating flip: each image is flipped in every other epoch, starting
  from its own fixed coin (`image_coins` with `seed[0]`), so over any two
  epochs a network sees every image both ways round; the airbench paper
  found this beats random flips wherever flipping helps at all.
  Translation reflects at the borders (as `tf.pad`'s REFLECT mode, then a
  crop), so no black borders appear.

  The flip, the shift and the reflection are index arithmetic on each
  image's rows and columns; the pixels move once, in one gather. (Flip, pad
  and two gathers give the same result and were 1.02-1.06x slower beside a
  tiny model's step on a 2-core Xeon, 2026-12-03.)

  Args:
    images: `(B, H, W, C)` uint8 (the coins need integer pixels).
    seed: int `[2]`, e.g. (run seed, step number).
    max_shift: the largest shift in pixels, each axis, below the image's
      side; None: 2 px at 32x32, scaled with each side (`scaled_shift`:
      4 px at 64x64).
    epoch: the epoch number (an int or int tensor), for alternating flips;
      None for random flips.

  Returns:
    The augmented batch, same shape and dtype.
  """
  batch = tf.shape(images)[0]
  height, width, channels = images.shape[1], images.shape[2], images.shape[3]
  shift_y, shift_x = ((scaled_shift(2, height), scaled_shift(2, width))
                      if max_shift is None else (max_shift, max_shift))
  if shift_y >= height or shift_x >= width:
    raise ValueError(f"max_shift {max_shift} must be below the image's side "
                     f"({height}x{width})")
  seeds = tf.random.experimental.stateless_split(seed, 3)
  if epoch is None:
    # An integer draw: XLA and TensorFlow turn Philox bits into floats
    # differently, into integers alike, so compiled or not, the same flips.
    flip = tf.random.stateless_uniform([batch], seeds[0], 0, 2,
                                       dtype=tf.int32, alg=_ALG) == 1
  else:
    odd = tf.math.floormod(tf.cast(epoch, tf.int64), 2) == 1
    flip = tf.not_equal(image_coins(images, seed[0]), odd)
  dy = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * shift_y + 1,
                                   dtype=tf.int32, alg=_ALG)
  dx = tf.random.stateless_uniform([batch], seeds[2], 0, 2 * shift_x + 1,
                                   dtype=tf.int32, alg=_ALG)
  sources = _source_pixels(flip, dy - shift_y, dx - shift_x, height, width)
  moved = tf.gather(tf.reshape(images, [batch, height * width, channels]),
                    sources, axis=1, batch_dims=1)
  return tf.reshape(moved, tf.shape(images))


# XLA fuses the augmentation's index arithmetic and gather into one pass over
# the batch: 0.1 ms per batch of 128 against 3 ms uncompiled (2-core AMD
# EPYC, 2026-12-02). Inside a step compiled whole (on accelerators), it is
# simply part of it.
compiled_flip_and_translate = tf.function(flip_and_translate,
                                          jit_compile=True)


def augment_step(images: tf.Tensor, seed: int, step, epoch=None,
                 max_shift: int | None = None) -> tf.Tensor:
  """One replica's batch of training step `step`, augmented as fastcifar does.

  The seed is `(seed, step * replicas + replica)`: every replica of a
  `tf.distribute` run, and every step, augments its batch its own way, and
  one device running the same steps augments alike.

  Args:
    images: `(B, H, W, C)` uint8, of a static shape.
    seed: the run's seed.
    step: the step number (an int64 scalar tensor), from 0.
    epoch: for alternating flips (see `flip_and_translate`); None: random.
    max_shift: see `flip_and_translate`.

  Returns:
    The augmented batch, of `images`' static shape.
  """
  context = tf.distribute.get_replica_context()
  replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
  step_seed = tf.stack([tf.constant(seed, tf.int64),
                        tf.cast(step, tf.int64)
                        * context.num_replicas_in_sync + replica])
  # The compiled call's output shape is unknown to Grappler; restated,
  # it can simplify the model's first ops again (drop a Rescaling's
  # `+ 0`: 0.04-0.09 ms of a tiny model's step on a 2-core Xeon).
  return tf.ensure_shape(compiled_flip_and_translate(
      images, step_seed, max_shift, epoch=epoch), images.shape)


def _source_pixels(flip: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor,
                   height: int, width: int) -> tf.Tensor:
  """Where each output pixel comes from: flip, then shift by (dy, dx).

  Args:
    flip: bool `(B,)`.
    dy, dx: int32 `(B,)` shifts, each within the image's side.
    height, width: the image's.

  Returns:
    int32 `(B, height * width)`: the flat (row * width + column) index in the
    source image of each output pixel, reflected at the borders.
  """
  rows = _reflect(dy[:, None] + tf.range(height)[None, :], height)
  cols = _reflect(dx[:, None] + tf.range(width)[None, :], width)
  cols = tf.where(flip[:, None], width - 1 - cols, cols)
  return tf.reshape(rows[:, :, None] * width + cols[:, None, :],
                    [-1, height * width])


def test_time_views(images: tf.Tensor, shift: int | None = None
                    ) -> list[tuple[tf.Tensor, float]]:
  """airbench's test-time augmentation views and the weight of each.

  The image and its mirror (1/4 each); and, from the image padded by one
  pixel by reflection, the crops shifted one pixel up-left and one pixel
  down-right, each with its mirror (1/8 each). Averaging a model's outputs
  over them with these weights is airbench94's `tta_level=2`. The shift is
  one pixel at 32x32 and scales with the image (`scaled_shift`: 2 at 64x64).

  Args:
    images: `(B, H, W, C)`, a tensor or array.
    shift: the shift in pixels, each axis; None: 1 px at 32x32, scaled.

  Returns:
    Six `(view, weight)` pairs; the weights sum to 1.
  """
  images = tf.convert_to_tensor(images)
  height, width = images.shape[1], images.shape[2]
  dy, dx = ((scaled_shift(1, height), scaled_shift(1, width))
            if shift is None else (shift, shift))
  padded = tf.pad(images, [[0, 0], [dy, dy], [dx, dx], [0, 0]],
                  mode="REFLECT")
  shifted = [padded[:, :height, :width],
             padded[:, 2 * dy:height + 2 * dy, 2 * dx:width + 2 * dx]]
  views = []
  for view, weight in [(images, 0.25)] + [(s, 0.125) for s in shifted]:
    views += [(view, weight), (tf.reverse(view, axis=[2]), weight)]
  return views
