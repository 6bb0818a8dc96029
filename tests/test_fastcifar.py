"""Tests for the package's top level: the public API, imported on first use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastcifar

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = ["ImageDataset", "Recipe", "eval_dataset", "fit", "layers", "load_data",
       "train_dataset"]


def test_import_is_light_and_dir_lists_the_api():
  code = ("import sys, fastcifar\n"
          "print(','.join(n for n in dir(fastcifar) if not n[0] == '_'))\n"
          "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                          timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  names, loaded = result.stdout.splitlines()
  assert names.split(",") == API
  assert loaded == "False False"


@pytest.mark.parametrize("name", API)
def test_each_name_resolves(name):
  assert name in fastcifar.__all__
  assert getattr(fastcifar, name) is not None


def test_the_api_is_the_modules_own():
  from fastcifar import layers  # pylint: disable=g-import-not-at-top
  from fastcifar.data import datasets, sources  # pylint: disable=g-import-not-at-top
  assert fastcifar.layers is layers
  assert fastcifar.train_dataset is datasets.train_dataset
  assert fastcifar.ImageDataset is sources.ImageDataset
  from fastcifar import load_data  # pylint: disable=g-import-not-at-top
  assert load_data is datasets.load_data
  from fastcifar.training import fit  # pylint: disable=g-import-not-at-top
  assert fastcifar.fit is fit.fit


def test_an_unknown_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
    fastcifar.nonesuch  # pylint: disable=pointless-statement
  assert not hasattr(fastcifar, "nonesuch")
