"""The README's and docs' commands run as written on data a user can get.

A user has the CIFAR-10 a first run put in Keras's cache (here a tiny one of
the same layout), not the development machines' ../shared/data.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastcifar.data import sources
from tests.data.test_sources import CIFAR10_NAMES, write_cifar10_python

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(REPO, "README.md"),
        *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _blocks(path: str, language: str, containing: str) -> list[str]:
  """The fenced `language` code blocks of `path` that contain `containing`."""
  found = re.findall(rf"^```{language}\n(.*?)^```$", _read(path),
                     re.S | re.M)
  return [block for block in found if containing in block]


@pytest.fixture
def user(tmp_path) -> dict:
  """A user's environment: CIFAR-10 in Keras's cache, as load_data leaves it
  (a tiny one: 200 train, 100 test images), fastcifar importable."""
  cache = tmp_path / "keras" / "datasets"
  cache.mkdir(parents=True)
  _, arrays = write_cifar10_python(str(cache), seed=5, per_batch=40,
                                   num_test=100)
  # `python` in the docs is this environment's, as in an activated venv.
  path = os.pathsep.join([os.path.dirname(sys.executable),
                          os.environ.get("PATH", "")])
  env = dict(os.environ, PATH=path, PYTHONPATH=REPO,
             KERAS_HOME=str(tmp_path / "keras"),
             TFDS_DATA_DIR=str(tmp_path / "tfds"), TF_CPP_MIN_LOG_LEVEL="3")
  work = tmp_path / "work"
  work.mkdir()
  return {"env": env, "cwd": work, "arrays": arrays}


@pytest.fixture
def user_here(user, monkeypatch) -> dict:
  """`user`'s environment in this process: its folder the working one, its
  caches in the environment (read when data is loaded, not at import).

  For the docs' Python examples, which a user pastes into a script or a
  notebook: run here, they skip a process's seconds of imports.
  """
  monkeypatch.chdir(user["cwd"])
  for name in ("KERAS_HOME", "TFDS_DATA_DIR"):
    monkeypatch.setenv(name, user["env"][name])
  return user


def _exec(example: str, where: str) -> None:
  """Runs `example` as a user's script (`__main__`), in a namespace of its
  own."""
  # pylint: disable-next=exec-used
  exec(compile(example, where, "exec"), {"__name__": "__main__"})


def _run(command: list[str], user: dict) -> subprocess.CompletedProcess:
  result = subprocess.run(command, cwd=str(user["cwd"]), env=user["env"],
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_no_doc_names_the_development_machines_data():
  # The scripts' docstrings and flag help are docs too (`--help` shows them).
  scripts = [os.path.join(REPO, folder, name)
             for folder in ("benchmarks", "tools", "fastcifar")
             for name in os.listdir(os.path.join(REPO, folder))
             if name.endswith(".py")]
  for path in DOCS + scripts:
    assert "shared/data" not in _read(path), path


def test_the_jpeg_copy_is_made_as_data_md_says(user):
  [script] = _blocks(os.path.join(REPO, "docs", "data.md"), "bash",
                     "cifar10-jpg.tar.gz")
  _run(["bash", "-c", script], user)
  copy = sources.load("cifar10", str(user["cwd"] / "cifar10-jpg.tar.gz"))
  train_images, train_labels, test_images, test_labels = user["arrays"]
  assert copy.class_names == tuple(CIFAR10_NAMES)
  assert (len(copy.train_images), len(copy.test_images)) == (
      len(train_images), len(test_images))
  # The folder orders images by class: compare the counts per class and,
  # through quality-75 JPEG, the mean pixel.
  np.testing.assert_array_equal(np.bincount(copy.test_labels, minlength=10),
                                np.bincount(test_labels, minlength=10))
  assert abs(copy.train_images.mean() - train_images.mean()) < 2


def test_the_serving_example_classifies_an_image_it_writes(user_here, capsys):
  # pylint: disable-next=g-import-not-at-top
  from fastcifar import models, serving
  model = models.build_model("seed", 10, [0.5] * 3, [0.25] * 3)
  serving.export_saved_model(
      model, str(user_here["cwd"] / "runs" / "seed" / "export" / "saved_model"))
  # The README's and docs/serving.md's examples, each in a namespace of its
  # own, in this process (a process of their own would add seconds of
  # imports, and prove nothing more: a user's script imports the same).
  for path in (os.path.join(REPO, "README.md"),
               os.path.join(REPO, "docs", "serving.md")):
    capsys.readouterr()
    _exec(_blocks(path, "python", "serving_default")[0], path)
    assert "shape=(1, 10)" in capsys.readouterr().out, path


# docs/library.md's examples train a ResNet for 20 epochs on 45,000 images;
# here they run as written but for these settings (a narrower ResNet, and
# float32 where bfloat16 would be emulated on a CPU without it), on the
# user's tiny CIFAR-10.
LIBRARY_SMALL = (("epochs=20", "epochs=1"),
                 ("validation_examples=5000", "validation_examples=40"),
                 ("batch_size=128", "batch_size=32"),
                 (".batch(128, ", ".batch(32, "),
                 ("widths=(32, 64, 128)", "widths=(8, 16, 32)"),
                 ('set_global_policy("mixed_bfloat16")',
                  'set_global_policy("float32")'),
                 # Keras's loader expects 10,000 images per batch file: the
                 # same arrays, as it returns them, from the tiny copy.
                 ("keras.datasets.cifar10.load_data()", "_keras_arrays()"))
KERAS_ARRAYS = '''
import numpy as _np
def _keras_arrays():
  f = _np.load("keras_arrays.npz")
  return ((f["x_train"], f["y_train"][:, None]),
          (f["x_test"], f["y_test"][:, None]))
'''


@pytest.mark.slow
def test_the_library_examples_run(user_here):
  blocks = _blocks(os.path.join(REPO, "docs", "library.md"), "python", "")
  assert len(blocks) == 4, "model.fit, fastcifar.fit, a recipe, plain Keras"
  script = "\n".join(blocks)
  for written, small in LIBRARY_SMALL:
    assert written in script, written
    script = script.replace(written, small)
  train_images, train_labels, test_images, test_labels = user_here["arrays"]
  np.savez("keras_arrays.npz", x_train=train_images, y_train=train_labels,
           x_test=test_images, y_test=test_labels)
  # In this process, as a user's script (see `user_here`).
  _exec(KERAS_ARRAYS + script, "docs/library.md")
  results = json.loads(
      (user_here["cwd"] / "runs" / "resnet" / "results.json").read_text())
  assert results["epochs"] == 1, results
  assert results["num_validation_examples"] == 40, results


def test_usage_md_layout_names_every_module():
  """docs/usage.md's tree of the package names each of its modules."""
  tree = _blocks(os.path.join(REPO, "docs", "usage.md"), "", "fastcifar/")[0]
  package = os.path.join(REPO, "fastcifar")
  folders = [package] + [os.path.join(package, name)
                         for name in ("data", "training", "models")]
  parts = [os.path.join(folder, name) for folder in folders
           for name in os.listdir(folder) if not name.startswith(("_", "."))]
  missing = sorted(os.path.relpath(part, package) for part in parts
                   if part.endswith(".py") or os.path.isdir(part)
                   if os.path.basename(part) not in tree)
  assert not missing, f"docs/usage.md's layout misses {missing}"
