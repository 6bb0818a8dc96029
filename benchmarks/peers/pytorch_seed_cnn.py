#!/usr/bin/env python3
"""fastcifar's seed CNN in PyTorch, written as a CPU user would: the peer.

  python benchmarks/peers/pytorch_seed_cnn.py --data=DIR/fastcifar-cifar10.npz
  python benchmarks/peers/pytorch_seed_cnn.py --synthetic=512 --epochs=1

The same network as `fastcifar.models.seed_cnn_layers` (1,250,858 parameters
at 10 classes), trained the way a PyTorch user would on a CPU: eager mode
(`--compile` for torch.compile), bfloat16 autocast, channels-last tensors,
batch 128, Adam at 2e-3, cross entropy. The uint8 images stay in memory as
one tensor; each step gathers a shuffled batch of them and converts and
normalizes it (per-channel mean and std of the training images), as
fastcifar does inside its compiled step. `--augment` adds fastcifar's
default augmentation (random horizontal flip, random translation by up to
2 px with reflection); it is off by default here and on by default in
fastcifar, so pass it to compare like for like.

It reads the `.npz` that `tools/prepare_data.py` writes (train_images
(N, H, W, 3) uint8, train_labels, test_images, test_labels, class_names) or,
with `--synthetic=N`, random pixels. It prints one line per epoch and then
one JSON record (also appended to `--output`): each epoch's training
seconds and images/s (the first includes the warm-up; from the second on is
the steady rate), the test accuracy, versions, CPU and threads.

It needs only torch and numpy: it imports neither TensorFlow nor fastcifar,
so it runs in a virtual environment of its own.

Bad input ends with one line `pytorch_seed_cnn: error: ...` on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
import zipfile

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PROGRAM = "pytorch_seed_cnn"
# fastcifar.models.seed_cnn_layers at 10 classes and 32x32 images.
SEED_CNN_PARAMETERS = 1_250_858
NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# CPU flags that decide how fast bfloat16 runs: AMX tiles, AVX-512 BF16 dots.
CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class UsageError(Exception):
  """Bad input: reported as one line and exit status 2."""


class Parser(argparse.ArgumentParser):
  """argparse whose errors are one line (no usage block) and exit 2."""

  def error(self, message):
    raise UsageError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
  """The command line, checked."""
  parser = Parser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--data", help="a .npz written by tools/prepare_data.py")
  source.add_argument("--synthetic", type=int, metavar="N",
                      help="N random training images (N // 5 test) instead "
                      "of --data")
  parser.add_argument("--epochs", type=int, default=2,
                      help="epochs to train; the first includes warm-up")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--eval_batch_size", type=int, default=500)
  parser.add_argument("--learning_rate", type=float, default=2e-3,
                      help="Adam's rate (fastcifar's seed default)")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="torch.set_num_threads (default: every core)")
  parser.add_argument("--compile", action="store_true",
                      help="torch.compile the model (default: eager)")
  parser.add_argument("--augment", action="store_true",
                      help="random flip and 2 px translation (fastcifar's "
                      "default; off here unless given)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", help="append the JSON record to this file")
  args = parser.parse_args(argv)
  if args.data is None and args.synthetic is None:
    raise UsageError("give --data=FILE.npz (python tools/prepare_data.py "
                     "--source=... --data_dir=DIR writes one) or "
                     "--synthetic=N")
  for name in ("synthetic", "epochs", "batch_size", "eval_batch_size",
               "threads"):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise UsageError(f"--{name}={value} must be at least 1")
  if args.learning_rate <= 0:
    raise UsageError(f"--learning_rate={args.learning_rate} must be positive")
  return args


def load_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of a prepared .npz, checked; never unpickles anything.

  Args:
    path: a file written by tools/prepare_data.py.

  Returns:
    train_images, train_labels, test_images, test_labels and class_names.

  Raises:
    UsageError: the file is missing, unreadable or not images and labels.
  """
  fix = "prepare it with tools/prepare_data.py"
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in NPZ_KEYS if k not in npz.files]
      if missing:
        raise UsageError(f"{path}: no '{missing[0]}' array; {fix}")
      arrays = {k: npz[k] for k in NPZ_KEYS}
      # Files from tools/prepare_data.py have class names; others get one
      # class per label up to the largest.
      arrays["class_names"] = (
          npz["class_names"] if "class_names" in npz.files else
          np.arange(max(arrays["train_labels"].max(initial=0),
                        arrays["test_labels"].max(initial=0)) + 1))
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise UsageError(f"{path}: unreadable ({e}); {fix}") from e
  for split in ("train", "test"):
    images = arrays[f"{split}_images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
      raise UsageError(f"{path}: {split}_images are {images.dtype} "
                       f"{images.shape}, expected uint8 (N, H, W, 3); {fix}")
    labels = arrays[f"{split}_labels"]
    if not len(images) or len(images) != labels.size:
      raise UsageError(f"{path}: {len(images)} {split} images and "
                       f"{labels.size} labels; {fix}")
    if not np.issubdtype(labels.dtype, np.integer):
      raise UsageError(f"{path}: {split}_labels are {labels.dtype}, "
                       f"expected integers; {fix}")
  labels = np.concatenate([arrays["train_labels"].ravel(),
                           arrays["test_labels"].ravel()])
  if (labels.min() < 0 or labels.max() >= len(arrays["class_names"])
      or arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]):
    raise UsageError(f"{path}: labels out of range or train and test images "
                     f"of different sizes; {fix}")
  return arrays


def synthetic_arrays(num_train: int, seed: int) -> dict[str, np.ndarray]:
  """Random uint8 pixels and labels at 32x32, 10 classes: speed only."""
  rng = np.random.default_rng(seed)
  num_test = max(1, num_train // 5)
  return {
      "train_images": rng.integers(0, 256, (num_train, 32, 32, 3), np.uint8),
      "train_labels": rng.integers(0, 10, num_train),
      "test_images": rng.integers(0, 256, (num_test, 32, 32, 3), np.uint8),
      "test_labels": rng.integers(0, 10, num_test),
      "class_names": np.arange(10),
  }


def seed_cnn(num_classes: int, height: int = 32, width: int = 32
             ) -> nn.Sequential:
  """fastcifar's seed CNN (the textbook Keras CIFAR-10 CNN) in PyTorch.

  Keras flattens (H, W, C) and PyTorch (C, H, W): the dense layer sees the
  same features in another order, so parameters and FLOPs are the same.
  Initialization is PyTorch's default, not Keras's Glorot. The softmax is
  left to the loss (`F.cross_entropy` takes logits).

  Args:
    num_classes: outputs of the last layer.
    height, width: image size; the dense layer's input depends on it.

  Returns:
    The model: float32 weights, NCHW inputs.
  """
  # Two "valid" 3x3 convs and two 2x2 pools: 32 -> 30 -> 15 -> 13 -> 6.
  side_h, side_w = (((s - 2) // 2 - 2) // 2 for s in (height, width))
  return nn.Sequential(
      nn.Conv2d(3, 32, 3, padding="same"), nn.ReLU(),
      nn.Conv2d(32, 32, 3), nn.ReLU(),
      nn.MaxPool2d(2), nn.Dropout(0.25),
      nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(),
      nn.Conv2d(64, 64, 3), nn.ReLU(),
      nn.MaxPool2d(2), nn.Dropout(0.25),
      nn.Flatten(),
      nn.Linear(64 * side_h * side_w, 512), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(512, num_classes),
  )


def count_parameters(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def flip_and_translate(images: torch.Tensor, max_shift: int = 2
                       ) -> torch.Tensor:
  """Random horizontal flip and translation by up to `max_shift` px.

  One gather on the uint8 batch does both: each image reads its rows and
  columns from shifted (and, when flipped, reversed) indices, reflected at
  the borders, which is padding by reflection and cropping without the
  padded copy.

  Args:
    images: uint8 `(B, H, W, C)`.
    max_shift: the largest shift in pixels, each axis.

  Returns:
    The augmented batch, same shape and dtype.
  """
  batch, height, width, _ = images.shape

  def reflect(index, size):
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)

  dy = torch.randint(-max_shift, max_shift + 1, (batch, 1))
  dx = torch.randint(-max_shift, max_shift + 1, (batch, 1))
  rows = reflect(dy + torch.arange(height), height)
  cols = reflect(dx + torch.arange(width), width)
  flip = torch.rand(batch, 1) < 0.5
  cols = torch.where(flip, width - 1 - cols, cols)
  return images[torch.arange(batch)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def channel_stats(images: np.ndarray, chunk: int = 1000
                  ) -> tuple[torch.Tensor, torch.Tensor]:
  """Per-channel mean and std of uint8 images, in 0-255 units.

  Sums a chunk of images at a time: `images.std()` would hold a float64
  copy of every pixel (1.2 GB for CIFAR-10's training set).

  Args:
    images: uint8 `(N, H, W, C)`.
    chunk: images converted to float64 at once.

  Returns:
    `(mean, std)`, float32 `(1, C, 1, 1)`: they broadcast over NCHW batches.
  """
  sums = np.zeros((2, images.shape[-1]))
  for start in range(0, len(images), chunk):
    pixels = images[start:start + chunk].reshape(-1, images.shape[-1])
    pixels = pixels.astype(np.float64)
    sums += (pixels.sum(0), np.square(pixels).sum(0))
  count = images.size // images.shape[-1]
  mean = sums[0] / count
  # A floor, as fastcifar's: a constant channel divides 0 by it, not by 0.
  std = np.sqrt(np.maximum(sums[1] / count - np.square(mean), 1e-12))
  return tuple(torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1)
               for s in (mean, std))


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
             ) -> torch.Tensor:
  """uint8 NHWC to normalized float32 NCHW, channels-last in memory.

  Permuting NHWC to NCHW moves no bytes: the result is a channels-last
  tensor already, and the float conversion keeps that layout.
  """
  return (images.permute(0, 3, 1, 2).float() - mean) / std


def train_epoch(model, step_model, optimizer, images, labels, mean, std,
                batch_size: int, augment: bool) -> dict:
  """One shuffled pass over the images in full batches; its time and loss."""
  model.train()
  steps = len(images) // batch_size  # as fastcifar: the remainder dropped
  order = torch.randperm(len(images))
  total_loss = 0.0
  start = time.perf_counter()
  for step in range(steps):
    index = order[step * batch_size:(step + 1) * batch_size]
    batch = images[index]
    if augment:
      batch = flip_and_translate(batch)
    x = to_input(batch, mean, std)
    with torch.autocast("cpu", dtype=torch.bfloat16):
      loss = F.cross_entropy(step_model(x), labels[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    total_loss += loss.item()
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "images": steps * batch_size,
          "images_per_second": steps * batch_size / seconds,
          "loss": total_loss / steps}


def evaluate(model, step_model, images, labels, mean, std,
             batch_size: int) -> float:
  """Test accuracy: eval mode, the same autocast, every image once."""
  model.eval()
  correct = 0
  with torch.inference_mode():
    for start in range(0, len(images), batch_size):
      x = to_input(images[start:start + batch_size], mean, std)
      with torch.autocast("cpu", dtype=torch.bfloat16):
        predicted = step_model(x).argmax(1)
      correct += (predicted == labels[start:start + batch_size]).sum().item()
  return correct / len(images)


def cpu_description() -> dict:
  """The CPU's model name and its bfloat16 flags, from /proc/cpuinfo."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    pass
  return {"cpu_model": model, "cpu_count": os.cpu_count(),
          "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS}}


def train_and_evaluate(args: argparse.Namespace, arrays: dict) -> dict:
  """Builds, trains and tests the model; returns the JSON record."""
  torch.manual_seed(args.seed)
  torch.set_num_threads(args.threads)
  train_images = torch.from_numpy(arrays["train_images"])
  test_images = torch.from_numpy(arrays["test_images"])
  train_labels = torch.from_numpy(
      arrays["train_labels"].ravel().astype(np.int64))
  test_labels = torch.from_numpy(
      arrays["test_labels"].ravel().astype(np.int64))
  if len(train_images) < args.batch_size:
    raise UsageError(f"{len(train_images)} training images are fewer than "
                     f"--batch_size={args.batch_size}; lower --batch_size")
  mean, std = channel_stats(arrays["train_images"])
  num_classes = len(arrays["class_names"])
  height, width = train_images.shape[1:3]
  if min(height, width) < 10:
    raise UsageError(f"images of {height}x{width} are too small for the seed "
                     "CNN; it needs at least 10x10")

  model = seed_cnn(num_classes, height, width).to(
      memory_format=torch.channels_last)
  parameters = count_parameters(model)
  if num_classes == 10 and (height, width) == (32, 32):
    assert parameters == SEED_CNN_PARAMETERS, parameters
  step_model = torch.compile(model) if args.compile else model
  optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)

  epochs = []
  for epoch in range(1, args.epochs + 1):
    result = train_epoch(model, step_model, optimizer, train_images,
                         train_labels, mean, std, args.batch_size,
                         args.augment)
    epochs.append({"epoch": epoch, **result})
    print(f"epoch {epoch}: {result['seconds']:.1f} s, "
          f"{result['images_per_second']:,.0f} images/s, "
          f"loss {result['loss']:.4f}", flush=True)
  start = time.perf_counter()
  accuracy = evaluate(model, step_model, test_images, test_labels, mean, std,
                      args.eval_batch_size)
  eval_seconds = time.perf_counter() - start
  print(f"test accuracy {accuracy:.4f} ({len(test_images):,} images, "
        f"{eval_seconds:.1f} s)", flush=True)

  steady = epochs[1:]
  return {
      "benchmark": PROGRAM,
      "framework": "pytorch",
      "model": "seed",
      "parameters": parameters,
      "data": args.data or f"synthetic:{args.synthetic}",
      "train_images": len(train_images),
      "test_images": len(test_images),
      "image_shape": list(arrays["train_images"].shape[1:]),
      "num_classes": num_classes,
      "precision": "bfloat16 autocast",
      "memory_format": "channels_last",
      "mode": "torch.compile" if args.compile else "eager",
      "epochs": epochs,
      # Epochs after the first: no warm-up (None with one epoch).
      "steady_images_per_second": (
          sum(e["images"] for e in steady) / sum(e["seconds"] for e in steady)
          if steady else None),
      "test_accuracy": accuracy,
      "eval_seconds": eval_seconds,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "threads": torch.get_num_threads(),
      **cpu_description(),
      "python_version": sys.version.split()[0],
      "torch_version": torch.__version__,
      "numpy_version": np.__version__,
      "flags": vars(args),
      "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
  }


def main(argv: list[str]) -> int:
  try:
    args = parse_args(argv)
    if args.output:  # fail now, not after the training
      try:
        open(args.output, "a").close()
      except OSError as e:
        raise UsageError(f"cannot append to --output={args.output} "
                         f"({e.strerror}); give a writable file") from e
    arrays = (load_npz(args.data) if args.data
              else synthetic_arrays(args.synthetic, args.seed))
    record = train_and_evaluate(args, arrays)
  except UsageError as e:
    print(f"{PROGRAM}: error: {e}", file=sys.stderr)
    return 2
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if args.output:
    with open(args.output, "a") as f:
      f.write(line + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
