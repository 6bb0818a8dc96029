"""Tests for fastcifar.data.sources.images: sizes parsed, images resized
once."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.data.sources import image_folder, images
from fastcifar.data.sources.dataset import is_aligned


def write_sized_folder(root, sizes, classes=("a", "b"), per_class=(4, 2),
                       seed: int = 0) -> None:
  """ROOT/{train,test}/<class>/NNN.png|jpg, image i of size sizes[i % len].

  Every third image is a JPEG, so both decoders are exercised.
  """
  rng = np.random.default_rng(seed)
  n = 0
  for split, count in zip(("train", "test"), per_class):
    for name in classes:
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        image = rng.integers(0, 256, (*sizes[n % len(sizes)], 3), np.uint8)
        jpeg = n % 3 == 2
        blob = (tf.io.encode_jpeg(image) if jpeg else
                tf.io.encode_png(image)).numpy()
        path = os.path.join(root, split, name,
                            f"{i:03d}.{'jpg' if jpeg else 'png'}")
        with open(path, "wb") as f:
          f.write(blob)
        n += 1


@pytest.mark.parametrize("text,expected", [
    (None, None), ("", None), ("64", (64, 64)), ("96,128", (96, 128))])
def test_parse_image_size(text, expected):
  assert sources.parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["0", "a", "64,", "1,2,3", "-4", "64x64"])
def test_parse_image_size_refuses_with_the_form(text):
  with pytest.raises(UsageError, match="write H or H,W"):
    sources.parse_image_size(text)


def test_crop_keeps_the_centre_and_pad_keeps_everything():
  # 20 rows x 40 columns: the left, middle and right quarters differ.
  image = np.zeros((1, 20, 40, 3), np.uint8)
  image[:, :, :10] = 50
  image[:, :, 10:30] = 200
  image[:, :, 30:] = 100
  crop = images.resize_array(image, (20, 20), "crop")
  np.testing.assert_array_equal(crop, image[:, :, 10:30])  # scale 1: exact
  pad = images.resize_array(image, (20, 20), "pad")[0]
  # Scaled to 10x20 and centred between black bands of 5 rows (antialiasing
  # blurs the row at each edge); all three quarters are still there.
  assert pad.shape == (20, 20, 3)
  assert not pad[:4].any() and not pad[16:].any()
  np.testing.assert_array_equal(pad[6:14, 6:14], 200)
  np.testing.assert_array_equal(pad[6:14, :4], 50)
  np.testing.assert_array_equal(pad[6:14, 17:], 100)
  with pytest.raises(UsageError, match="--resize=stretch"):
    images.resize_array(image, (20, 20), "stretch")


def test_resize_array_leaves_images_of_the_size_alone():
  image = np.zeros((2, 8, 8, 3), np.uint8)
  assert images.resize_array(image, (8, 8)) is image
  assert images.resize_array(image, None) is image


def test_a_folder_of_64x64_images_loads_at_its_own_size(tmp_path):
  write_sized_folder(str(tmp_path), [(64, 64)])
  data = sources.load_path(str(tmp_path))
  assert data.image_shape == (64, 64, 3)
  assert data.train_images.shape == (8, 64, 64, 3)
  assert data.test_images.shape == (4, 64, 64, 3)
  np.testing.assert_array_equal(data.train_labels, [0] * 4 + [1] * 4)


@pytest.mark.parametrize("resize", sources.RESIZE_METHODS)
def test_a_folder_of_mixed_sizes_needs_and_takes_an_image_size(tmp_path,
                                                               resize):
  write_sized_folder(str(tmp_path), [(64, 64), (40, 90), (120, 50), (48, 48)])
  with pytest.raises(UsageError, match="--image_size=H"):
    sources.load_path(str(tmp_path))
  data = sources.load_path(str(tmp_path), image_size=(48, 40), resize=resize)
  assert data.train_images.shape == (8, 48, 40, 3)
  assert data.test_images.shape == (4, 48, 40, 3)
  np.testing.assert_array_equal(data.test_labels, [0, 0, 1, 1])


def test_a_tar_decoded_in_chunks_is_resized_like_a_folder_at_once(
    tmp_path, monkeypatch):
  # The tar streams in archive order, 3 files a chunk; the folder, read at
  # once, is the reference: same rows, same resizing, aligned arrays.
  root = tmp_path / "mixed"
  write_sized_folder(str(root), [(64, 64), (40, 90), (120, 50), (48, 48)])
  whole = sources.load_path(str(root), image_size=(48, 40))
  archive = str(tmp_path / "mixed.tar.gz")
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(str(root), arcname="mixed")
  monkeypatch.setattr(image_folder, "_CHUNK", 3)
  with pytest.raises(UsageError, match="images differ in size"):
    sources.load_path(archive)
  chunked = sources.load_path(archive, image_size=(48, 40))
  for array in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(chunked, array),
                                  getattr(whole, array))
  assert is_aligned(chunked.train_images) and is_aligned(chunked.test_images)


def test_a_later_chunk_of_another_size_names_the_first_image(tmp_path,
                                                             monkeypatch):
  write_sized_folder(str(tmp_path), [(24, 24)])
  odd = tf.io.encode_png(np.zeros((16, 24, 3), np.uint8)).numpy()
  (tmp_path / "test" / "b" / "001.png").write_bytes(odd)
  monkeypatch.setattr(image_folder, "_CHUNK", 2)
  with pytest.raises(UsageError) as error:
    sources.load_path(str(tmp_path))
  message = str(error.value)
  assert "train/a/000.png is 24x24" in message
  assert "test/b/001.png is 16x24" in message


def test_array_sources_are_resized_at_load(tmp_path):
  data = sources.resize_dataset(
      sources.load_synthetic(num_train=6, num_test=3), (64, 64))
  assert data.image_shape == (64, 64, 3)
  assert data.test_images.shape == (3, 64, 64, 3)
  prepared = tmp_path / "fastcifar-small.npz"
  sources.save_prepared(data, str(prepared))
  back = sources.load_path(str(prepared), image_size=(32, 16), resize="pad")
  assert back.train_images.shape == (6, 32, 16, 3)
  assert sources.load_path(str(prepared)).image_shape == (64, 64, 3)


def test_train_and_test_must_share_a_size():
  with pytest.raises(UsageError, match="pass --image_size"):
    sources.make_dataset("x", np.zeros((2, 8, 8, 3), np.uint8), [0, 0],
                         np.zeros((2, 8, 6, 3), np.uint8), [0, 0], ["c"], "x")


def test_a_trained_models_size_is_the_default_for_its_data(tmp_path):
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from fastcifar.cli import common as cli  # pylint: disable=g-import-not-at-top
  write_sized_folder(str(tmp_path), [(64, 64), (40, 90)])
  data_flags = cli.data_flags()
  with flagsaver.flagsaver(data_dir=str(tmp_path)):
    data = cli.load_data(data_flags, 0, model_input=(None, 48, 48, 3))
    assert data.image_shape == (48, 48, 3)
    with flagsaver.flagsaver(image_size="32"):  # the flag wins
      assert cli.load_data(data_flags, 0, (None, 48, 48, 3)).image_shape == (
          32, 32, 3)
