"""Augmentation on the device, inside the compiled step, on uint8 batches.

Plain TensorFlow ops with stateless randomness: they compile under XLA (Keras
preprocessing layers do not all do so) and the same seed gives the same
augmentation on any strategy and after a resume.
"""

from __future__ import annotations

import tensorflow as tf


def flip_and_translate(images: tf.Tensor, seed: tf.Tensor,
                       max_shift: int = 2) -> tf.Tensor:
  """Random horizontal flip and random translation by up to `max_shift` px.

  Translation pads by reflection and crops, so no black borders appear.

  Args:
    images: `(B, H, W, C)` of any dtype (uint8 in fastcifar).
    seed: int `[2]`, e.g. (run seed, step number).
    max_shift: the largest shift in pixels, each axis.

  Returns:
    The augmented batch, same shape and dtype.
  """
  batch = tf.shape(images)[0]
  height, width = images.shape[1], images.shape[2]
  seeds = tf.random.experimental.stateless_split(seed, 3)
  flip = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
  images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]),
                    images)
  if max_shift == 0:
    return images
  padded = tf.pad(images, [[0, 0], [max_shift] * 2, [max_shift] * 2, [0, 0]],
                  mode="REFLECT")
  dy = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * max_shift + 1,
                                   dtype=tf.int32)
  dx = tf.random.stateless_uniform([batch], seeds[2], 0, 2 * max_shift + 1,
                                   dtype=tf.int32)
  rows = dy[:, None] + tf.range(height)[None, :]
  cols = dx[:, None] + tf.range(width)[None, :]
  images = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(images, cols, axis=2, batch_dims=1)


def test_time_views(images: tf.Tensor) -> list[tuple[tf.Tensor, float]]:
  """airbench's test-time augmentation views and the weight of each.

  The image and its mirror (1/4 each); and, from the image padded by one
  pixel by reflection, the crops shifted one pixel up-left and one pixel
  down-right, each with its mirror (1/8 each). Averaging a model's outputs
  over them with these weights is airbench94's `tta_level=2`.

  Args:
    images: `(B, H, W, C)`, a tensor or array.

  Returns:
    Six `(view, weight)` pairs; the weights sum to 1.
  """
  images = tf.convert_to_tensor(images)
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
  shifted = [padded[:, :height, :width], padded[:, 2:height + 2, 2:width + 2]]
  views = []
  for view, weight in [(images, 0.25)] + [(s, 0.125) for s in shifted]:
    views += [(view, weight), (tf.reverse(view, axis=[2]), weight)]
  return views
