"""Decoding images and bringing them to one size, once, at load time.

Every source ends in uint8 arrays of one shape `(N, H, W, 3)`. Images of
another size are resized here, once, so training never resizes: with
`resize="crop"` (the default) the largest centred region of the target's
aspect ratio is kept and scaled to the target (the shorter side fills it, the
longer is cropped: nothing is distorted and no border is added, at the cost
of the edges of oblong images); with "pad" the whole image is scaled to fit
and the rest is filled with black. Scaling is bilinear with antialiasing
(Keras's `ops.image.resize`). Grayscale images become RGB and an alpha
channel is dropped, so every model sees three channels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fastcifar.errors import UsageError
from fastcifar.data.sources.dataset import aligned_empty

RESIZE_METHODS = ("crop", "pad")
_BATCH = 1024  # images decoded per step: bounds the float scratch of resizing


def parse_image_size(text: str | int | Sequence[int] | None
                     ) -> tuple[int, int] | None:
  """`--image_size` as (height, width): "64" is 64x64, "96,128" is 96x128.

  Args:
    text: the flag's value, or (from Python) an int side or a pair of
      sides; None or "" for the data's own size.

  Returns:
    `(height, width)`, or None.

  Raises:
    UsageError: not one or two positive integers.
  """
  if text is None or text == "":
    return None
  parts = (text.split(",") if isinstance(text, str)
           else [text] if isinstance(text, int) else list(text))
  try:
    sides = [int(s) for s in parts]
  except (TypeError, ValueError):
    sides = []
  if len(sides) not in (1, 2) or min(sides) < 1:
    raise UsageError(f"--image_size={text}: write H or H,W in pixels, e.g. "
                     "64 or 96,128")
  return (sides[0], sides[-1])


def _fit(image, size: tuple[int, int] | None, resize: str):
  """One decoded image at `size` (the `resize` way), or unchanged if None."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if size is None:
    return image
  resized = keras.ops.image.resize(
      image, size, interpolation="bilinear", antialias=True,
      crop_to_aspect_ratio=resize == "crop",
      pad_to_aspect_ratio=resize == "pad", fill_value=0)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def check_resize(resize: str) -> None:
  """UsageError unless `resize` is one of `RESIZE_METHODS`."""
  if resize not in RESIZE_METHODS:
    raise UsageError(f"--resize={resize}: choose one of "
                     f"{', '.join(RESIZE_METHODS)}")


def resize_array(images: np.ndarray, size: tuple[int, int] | None,
                 resize: str = "crop") -> np.ndarray:
  """uint8 images `(N, H, W, C)` at `size`; the same array if already so.

  Args:
    images: uint8 `(N, H, W, 3)`.
    size: `(height, width)`; None keeps the images as they are.
    resize: one of `RESIZE_METHODS` (see the module docstring).

  Returns:
    uint8 `(N, height, width, 3)`.
  """
  check_resize(resize)
  if size is None or tuple(images.shape[1:3]) == tuple(size):
    return images
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.from_tensor_slices(images).map(
      lambda image: _fit(image, size, resize),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  out = aligned_empty((len(images), *size, images.shape[-1]), np.uint8)
  for start, batch in zip(range(0, len(images), _BATCH),
                          ds.batch(_BATCH).as_numpy_iterator()):
    out[start:start + len(batch)] = batch
  return out


def _size(shape) -> str:
  return "x".join(str(int(s)) for s in shape[:2])


def fit_images(examples, count: int, name_of: Callable[[int], str],
               origin: str, size: tuple[int, int] | None = None,
               resize: str = "crop",
               on_error: Callable[[int, int], None] | None = None,
               first: tuple[str, tuple[int, int]] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Collects images of any size into one array of one size, with labels.

  Args:
    examples: a `tf.data.Dataset` of `(image, label)`: uint8 `(height,
      width, 3)` images of any size, integer labels.
    count: how many it holds.
    name_of: the name of image i, for errors.
    origin: where they came from, for errors.
    size: `(height, width)` to resize every image to; None: every image must
      have the size of the first.
    resize: one of `RESIZE_METHODS`.
    on_error: called with `(start, stop)` when producing images start..stop-1
      failed (e.g. a corrupt file), to raise a clearer error.
    first: `(name, (height, width))` of the first image when these images
      continue a set decoded chunk by chunk (size None: all must have its
      size); None: the first image here.

  Returns:
    `(images, labels)`: uint8 `(count, height, width, 3)`, int64 `(count,)`.

  Raises:
    UsageError: (size None) an image's size differs from the first's.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_resize(resize)
  if not count:  # make_dataset reports the empty split
    return np.zeros((0, *(size or (1, 1)), 3), np.uint8), np.zeros(0, np.int64)
  if size is None and first is None:
    try:
      image, _ = next(iter(examples.take(1)))
    except tf.errors.InvalidArgumentError:
      if on_error:
        on_error(0, 1)
      raise
    first = (name_of(0), tuple(int(s) for s in image.shape[:2]))
  target = size or first[1]
  shape = (*target, 3)

  def fit(image, label):
    found = tf.shape(image)
    label = tf.cast(label, tf.int64)
    if size is not None:
      return _fit(image, size, resize), label, True, found
    ok = tf.reduce_all(tf.equal(found[:2], target))
    # A wrong-sized image becomes zeros plus a flag, so batching still works
    # and the flag says which image to name.
    image = tf.cond(ok, lambda: tf.reshape(image, shape),
                    lambda: tf.zeros(shape, tf.uint8))
    return image, label, ok, found

  ds = examples.map(fit, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
  # Aligned: the input pipeline then uses these images without a copy.
  out, start = aligned_empty((count, *shape), np.uint8), 0
  labels = np.empty(count, np.int64)
  iterator = iter(ds.batch(_BATCH))
  while True:
    try:
      batch, batch_labels, ok, found = next(iterator)
    except StopIteration:
      break
    except tf.errors.InvalidArgumentError:
      if on_error:
        on_error(start, min(start + _BATCH, count))
      raise
    bad = np.flatnonzero(~ok.numpy())
    if bad.size:
      i = int(bad[0])
      raise UsageError(
          f"{origin}: images differ in size ({first[0]} is {_size(shape)}, "
          f"{name_of(start + i)} is {_size(found[i].numpy())}); pass "
          "--image_size=H[,W] to resize them all (see --resize)")
    out[start:start + len(batch)] = batch.numpy()
    labels[start:start + len(batch)] = batch_labels.numpy()
    start += len(batch)
  return out, labels


def decode_images(blobs: Sequence[bytes], labels: np.ndarray,
                  names: Sequence[str], origin: str,
                  size: tuple[int, int] | None = None,
                  resize: str = "crop",
                  first: tuple[str, tuple[int, int]] | None = None
                  ) -> np.ndarray:
  """Decodes PNG/JPEG/GIF/BMP bytes in parallel (tf.data) into one array.

  Args:
    blobs: encoded images.
    labels: one per blob (they travel with the images).
    names: one per blob, to name a bad image in the error.
    origin: where they came from, for error messages.
    size, resize, first: as for `fit_images`.

  Returns:
    uint8 `(len(blobs), height, width, 3)`.

  Raises:
    UsageError: an image is unreadable, or (size None) its size differs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def name_undecodable(start: int, stop: int) -> None:
    for i in range(start, stop):
      _decode(blobs[i], names[i], origin)  # raises naming the bad one

  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(blobs), tf.string), np.asarray(labels, np.int64)))
  ds = ds.map(lambda blob, label: (tf.io.decode_image(
      blob, channels=3, expand_animations=False), label),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return fit_images(ds, len(blobs), names.__getitem__, origin, size, resize,
                    on_error=name_undecodable, first=first)[0]


def _decode(blob: bytes, name: str, origin: str):
  """One image, decoded eagerly; UsageError naming it if it is unreadable."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.decode_image(blob, channels=3, expand_animations=False)
  except tf.errors.InvalidArgumentError:
    raise UsageError(f"{origin}: {name} is not a readable PNG or JPEG; "
                     "delete or replace it") from None
