"""Tests for fastcifar.data.sources.download, against a loopback HTTP mirror.

The `mirror` fixture (conftest.py) serves a tiny CIFAR-10 python archive
built in the test; its sha256 stands in for the official one. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from fastcifar.data import sources
from fastcifar.errors import UsageError
from fastcifar.data.sources import download
from tests.conftest import cifar10_archive
from tests.data.test_sources import write_cifar10_python

NAME = download.ARCHIVES["cifar10"][0]


def _cache_files() -> list[str]:
  folder = download.cache_dir()
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_downloads_once_verifies_and_reads_safely(mirror, capsys):
  data = sources.load("cifar10", mirror=mirror.url)
  np.testing.assert_array_equal(data.train_images, mirror.arrays[0])
  np.testing.assert_array_equal(data.test_labels, mirror.arrays[3])
  assert mirror.requests == ["/" + NAME]
  assert _cache_files() == [NAME]
  assert "Downloading data from" in capsys.readouterr().out  # Keras's own
  # The second run finds the verified archive: no request.
  again = sources.load("cifar10", mirror=mirror.url)
  np.testing.assert_array_equal(again.train_images, data.train_images)
  assert mirror.requests == ["/" + NAME]


def test_mirror_from_the_environment(mirror, monkeypatch):
  monkeypatch.setenv(download.MIRROR_ENV, mirror.url + NAME)  # a file URL
  assert len(sources.load("cifar10").train_images) == 100
  assert mirror.requests == ["/" + NAME]


def test_wrong_checksum_leaves_nothing_and_a_retry_works(mirror, tmp_path):
  good = mirror.files[NAME]
  mirror.files[NAME] = cifar10_archive(tmp_path / "other", seed=4)[0]
  with pytest.raises(UsageError) as error:
    sources.load("cifar10", mirror=mirror.url)
  message = str(error.value)
  assert "sha256" in message and "--data_dir" in message
  assert "\n" not in message
  assert _cache_files() == []  # neither the archive nor a .part
  mirror.files[NAME] = good
  assert len(sources.load("cifar10", mirror=mirror.url).train_images) == 100
  assert _cache_files() == [NAME]


def test_truncated_transfer_leaves_nothing(mirror):
  mirror.short.add(NAME)
  with pytest.raises(UsageError, match="cannot download cifar10") as error:
    sources.load("cifar10", mirror=mirror.url)
  assert "run again to retry" in str(error.value)
  assert _cache_files() == []


def test_damaged_archive_or_leftover_part_in_the_cache_is_not_trusted(mirror):
  os.makedirs(download.cache_dir())
  target = download.where_to_put("cifar10")
  good = mirror.files[NAME]
  with open(target, "wb") as f:  # what a killed transfer might leave
    f.write(good[:len(good) // 2])
  with open(target + ".part", "wb") as f:
    f.write(b"left by a killed run")
  assert len(sources.load("cifar10", mirror=mirror.url).train_images) == 100
  assert mirror.requests == ["/" + NAME]
  assert _cache_files() == [NAME]


def test_what_keras_load_data_extracted_is_used(mirror):
  write_cifar10_python(os.path.join(download.cache_dir(),
                                    "cifar-10-batches-py-target"), seed=5)
  assert len(sources.load("cifar10", mirror=mirror.url).train_images) == 15
  assert not mirror.requests


def test_nodownload_names_every_way_out(mirror):
  with pytest.raises(UsageError) as error:
    sources.load("cifar10", download=False, mirror=mirror.url)
  message = str(error.value)
  for fragment in ("--nodownload", "--data_dir",
                   download.where_to_put("cifar10"), "--dataset=synthetic"):
    assert fragment in message
  assert not mirror.requests


def test_unreachable_server_fails_in_seconds(mirror):
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
  start = time.monotonic()
  with pytest.raises(UsageError) as error:
    sources.load("cifar10", mirror=dead)
  assert time.monotonic() - start < 5
  message = str(error.value)
  for fragment in (dead, "--data_dir", download.where_to_put("cifar10"),
                   "--dataset=synthetic"):
    assert fragment in message
  assert _cache_files() == []


def test_cache_dir_follows_keras_home(monkeypatch, tmp_path):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  assert download.cache_dir() == str(tmp_path / "datasets")
  monkeypatch.delenv("KERAS_HOME")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert download.cache_dir() == str(tmp_path / ".keras" / "datasets")


def test_urls():
  assert download.archive_url("cifar100", "https://m.example/c") == \
      "https://m.example/c/cifar-100-python.tar.gz"
  assert download.archive_url("cifar10", None).startswith(download.ORIGIN)


def test_offline_with_another_file_in_the_cache_says_so(mirror):
  # A user who copied their archive into the cache as the docs say, but a
  # different or damaged one, was told to "put the official archive at"
  # the very path their file was at.
  os.makedirs(download.cache_dir())
  target = download.where_to_put("cifar10")
  with open(target, "wb") as f:
    f.write(mirror.files[NAME][:1000])
  with pytest.raises(UsageError) as error:
    sources.load("cifar10", download=False, mirror=mirror.url)
  message = str(error.value)
  assert (f"{target} is not the official archive (its sha256 differs): "
          "replace it with the official one, or pass --data_dir="
          f"{target} to read it as it is") in message, message
  assert "put the official archive at" not in message
  assert os.path.getsize(target) == 1000  # left as it was
