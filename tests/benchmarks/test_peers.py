"""Tests of the PyTorch peer, benchmarks/peers/pytorch_seed_cnn.py.

The script runs in an interpreter that has PyTorch: $FASTCIFAR_TORCH_PYTHON,
else this one if it can import torch; the tests that need one skip without
it (fastcifar itself never depends on PyTorch). Each runs the script in a
process of its own, as a user does, on a few hundred synthetic images.
Nothing here asserts a speed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "peers", "pytorch_seed_cnn.py")
SEED_CNN_PARAMETERS = 1_250_858  # fastcifar.models.seed_cnn_layers


@pytest.fixture(scope="module")
def torch_python() -> str:
  """An interpreter with torch and numpy; skips when there is none."""
  python = os.environ.get("FASTCIFAR_TORCH_PYTHON")
  if python:
    return python
  if importlib.util.find_spec("torch") is None:
    pytest.skip("no PyTorch: set FASTCIFAR_TORCH_PYTHON to a python that "
                "has torch and numpy")
  return sys.executable


def run(python: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([python, *args], capture_output=True, text=True,
                        timeout=300, cwd=REPO_ROOT)


def test_imports_only_torch_numpy_and_the_standard_library():
  # The script runs in a venv holding torch and numpy alone.
  with open(SCRIPT) as f:
    tree = ast.parse(f.read())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      imported.add(node.module.split(".")[0])
  outside = imported - set(sys.stdlib_module_names) - {"torch", "numpy"}
  assert not outside, outside


def test_trains_and_reports_one_json_record(torch_python, tmp_path):
  output = tmp_path / "peer.jsonl"
  result = run(torch_python, SCRIPT, "--synthetic=512", "--epochs=1",
               "--threads=1", "--augment", f"--output={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith("epoch 1: "), lines
  record = json.loads(lines[-1])
  assert json.loads(output.read_text()) == record
  assert record["parameters"] == SEED_CNN_PARAMETERS
  assert (record["train_images"], record["test_images"]) == (512, 102)
  assert record["image_shape"] == [32, 32, 3]
  assert record["threads"] == 1
  assert record["mode"] == "eager"
  assert record["flags"]["augment"] is True
  (epoch,) = record["epochs"]
  assert epoch["epoch"] == 1
  assert epoch["images"] == 512  # 4 full batches of 128
  assert epoch["seconds"] > 0
  assert epoch["images_per_second"] == pytest.approx(512 / epoch["seconds"])
  assert np.isfinite(epoch["loss"])
  assert record["steady_images_per_second"] is None  # one epoch: no steady
  assert 0 <= record["test_accuracy"] <= 1
  assert set(record["cpu_flags"]) == {"amx_bf16", "avx512_bf16"}
  for field in ("cpu_model", "cpu_count", "python_version", "torch_version",
                "numpy_version", "utc", "peak_rss_mb", "eval_seconds"):
    assert record[field], field


@pytest.fixture(scope="module")
def helper_outputs(torch_python, tmp_path_factory) -> dict[str, np.ndarray]:
  """The script's augmentation and channel statistics on seeded images.

  One process for both: each spends seconds importing torch.
  """
  folder = tmp_path_factory.mktemp("peer")
  images = np.random.default_rng(0).integers(0, 256, (64, 8, 9, 3), np.uint8)
  images[:, :, :, 2] //= 4  # channels with different statistics
  np.save(folder / "images.npy", images)
  code = textwrap.dedent(f"""
      import sys
      import numpy as np
      import torch
      sys.path.insert(0, {os.path.dirname(SCRIPT)!r})
      import pytorch_seed_cnn as peer
      torch.manual_seed(0)
      images = np.load({str(folder / 'images.npy')!r})
      mean, std = peer.channel_stats(images, chunk=5)
      np.savez({str(folder / 'out.npz')!r},
               augmented=peer.flip_and_translate(
                   torch.from_numpy(images)).numpy(),
               mean=mean.numpy(), std=std.numpy())
  """)
  result = run(torch_python, "-c", code)
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(folder / "out.npz") as out:
    return {"images": images, **out}


def test_augmentation_is_a_flip_and_a_reflected_shift(helper_outputs):
  # Every augmented image must be one of the 2 x 5 x 5 flips and shifts of
  # its own image (reflection padded), and more than one must occur.
  images, augmented = helper_outputs["images"], helper_outputs["augmented"]
  assert augmented.shape == images.shape and augmented.dtype == np.uint8
  seen = set()
  for image, out in zip(images, augmented):
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)], mode="reflect")
    matches = [(flip, dy, dx) for flip in (False, True)
               for dy in range(5) for dx in range(5)
               if np.array_equal(out, (padded[:, ::-1] if flip else padded)[
                   dy:dy + 8, dx:dx + 9])]
    assert matches, "not a flip and shift of its image"
    seen.add(matches[0])
  assert len(seen) > 10


def test_channel_stats_in_chunks_equal_numpy_over_all(helper_outputs):
  pixels = helper_outputs["images"].reshape(-1, 3).astype(np.float64)
  assert helper_outputs["mean"].shape == (1, 3, 1, 1)
  np.testing.assert_allclose(helper_outputs["mean"].ravel(), pixels.mean(0),
                             rtol=1e-6)
  np.testing.assert_allclose(helper_outputs["std"].ravel(), pixels.std(0),
                             rtol=1e-5)


# Two cases only: each process spends seconds importing torch.
@pytest.mark.parametrize("args, message", [
    ([], "give --data=FILE.npz"),
    (["--data=BAD"], "no 'test_images' array"),
])
def test_bad_input_is_one_line_and_exit_2(torch_python, tmp_path, args,
                                          message):
  bad = tmp_path / "bad.npz"
  np.savez(bad, train_images=np.zeros((4, 32, 32, 3), np.uint8),
           train_labels=np.zeros(4))
  args = [a.replace("BAD", str(bad)) for a in args]
  result = run(torch_python, SCRIPT, *args)
  assert result.returncode == 2
  assert result.stdout == ""
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("pytorch_seed_cnn: error: ")
  assert message in lines[0], lines
