"""A training step's arithmetic, and the peak the present hardware offers it.

**FLOPs** are counted analytically from the model's layers, per image: a
convolution or dense layer does `prod(output shape) * prod(kernel shape[:-1])`
multiply-adds forward (2 FLOPs each); training adds the weight gradient (as
many again) for a trainable kernel and the input gradient (as many again)
for every layer after the first trainable weight, since no gradient flows
into the image. So training is 3x forward, less the first layer's input
gradient (and, in the fast model, the fixed whitening convolution's
gradients). Batch norm, activations, pooling and the optimizer are not
counted: they are memory-bound, a few percent of the arithmetic.

**Peak** is what the fastest unit for the run's precision can do: on a CPU,
FLOPs per cycle per core (below) x physical cores x the clock `/proc/cpuinfo`
reports as `cpu MHz` (the nominal figure: turbo and AVX-512 down-clocking
are not in it), cores counted once per SMT sibling set, since two hardware
threads of one core share its units. On a GPU, the vendor's datasheet figure
for dense (not sparse) tensor-core or FP32 arithmetic, matched by name;
untested here, as no GPU was available.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
from typing import Any, Iterable, Iterator, Sequence

# bfloat16 FLOPs per cycle per core of each unit, and where the figure is from.
AMX_BF16 = (1024, "Intel AMX-BF16: 1,024 bf16 FLOP/cycle/core (Intel 64 and "
            "IA-32 Architectures Optimization Reference Manual, AMX chapter)")
# VDPBF16PS: 16 float32 lanes, each adding two products per 512-bit op.
AVX512_BF16_TWO_UNITS = (128, "AVX512-BF16 on two 512-bit FMA units (Intel "
                         "Xeon Scalable; AMD Zen 5, whose AVX-512 datapath is "
                         "full width: numberworld.org, Zen 5 AVX-512 teardown, "
                         "2024): 2 x 64 bf16 FLOP/cycle/core")
AVX512_BF16_ZEN4 = (64, "AVX512-BF16 on AMD Zen 4, which runs a 512-bit "
                    "multiply as two 256-bit halves (numberworld.org, Zen 4 "
                    "AVX-512 teardown, 2022): 64 bf16 FLOP/cycle/core")
# float32: lanes x 2 (multiply and add) x FMA units.
AVX512_FMA = (64, "AVX-512 FMA, two 512-bit units: 64 fp32 FLOP/cycle/core")
AVX512_FMA_ZEN4 = (32, "AVX-512 FMA on AMD Zen 4 (512-bit as two 256-bit "
                   "halves): 32 fp32 FLOP/cycle/core")
AVX2_FMA = (32, "AVX2 FMA, two 256-bit units (Intel Haswell on, AMD Zen 2 "
            "on): 32 fp32 FLOP/cycle/core")
AVX2_FMA_ZEN1 = (16, "AVX2 FMA on AMD Zen/Zen+ (256-bit as two 128-bit "
                 "halves): 16 fp32 FLOP/cycle/core")

# Dense TFLOP/s from NVIDIA's datasheets: (name pattern, float32, 16-bit
# tensor cores, whether bfloat16 runs on them). First match wins.
GPU_DATASHEET = (
    (r"H100.*PCIe", 51.2, 756.0, True),
    (r"H100", 66.9, 989.4, True),
    (r"A100", 19.5, 312.0, True),
    (r"L40S", 91.6, 362.1, True),
    (r"\bL4\b", 30.3, 121.0, True),
    (r"V100.*PCIe", 14.0, 112.0, False),
    (r"V100", 15.7, 125.0, False),
    (r"\bT4\b", 8.1, 65.0, False),
)


@dataclasses.dataclass(frozen=True)
class Peak:
  """The peak FLOP/s of one device at one precision, and how it was got."""
  flops_per_second: float
  unit: str        # e.g. "AMX-BF16", "AVX2 FMA", "NVIDIA A100 tensor cores"
  basis: str       # the figures and assumptions behind it, one line
  smt_siblings: bool | None = None  # CPUs: do the logical CPUs share cores?


# --- FLOPs -------------------------------------------------------------------


def layer_multiply_adds(layer, output_shape: Sequence[int]) -> int:
  """Forward multiply-adds per image of a convolution or dense layer.

  Args:
    layer: a built Keras layer; one with a `kernel` of 2 (dense) or 4
      (convolution, `(kh, kw, c_in, c_out)`) axes counts, others are 0.
    output_shape: the layer's output shape for one image, batch axis first.

  Returns:
    `prod(output_shape[1:]) * prod(kernel.shape[:-1])`, or 0.
  """
  kernel = getattr(layer, "kernel", None)
  if kernel is None or len(kernel.shape) not in (2, 4):
    return 0
  return math.prod(int(d) for d in output_shape[1:]) * math.prod(
      int(d) for d in kernel.shape[:-1])


def training_flops_per_image(layers: Iterable, image_shape: Sequence[int]
                             ) -> tuple[int, int]:
  """FLOPs per image of the forward pass and of a training step.

  Args:
    layers: a built model's layers, in order (e.g. `model.layers`): a
      stack, or a functional model's graph (a ResNet's branches and adds;
      its layers come in the order they are called).
    image_shape: `(H, W, C)` of the model's input.

  Returns:
    `(forward_flops, training_flops)`: training is the forward pass, the
    weight gradient of every trainable kernel and the input gradient of
    every layer after the first trainable weight.
  """
  forward = training = 0
  gradient_flows = False  # does any layer before this one train weights?
  for layer, _, shape in layer_shapes(layers, image_shape):
    flops = 2 * layer_multiply_adds(layer, shape)
    kernel = getattr(layer, "kernel", None)
    trains_kernel = kernel is not None and kernel.trainable
    forward += flops
    training += flops * (1 + trains_kernel + gradient_flows)
    gradient_flows = gradient_flows or bool(layer.trainable_weights)
  return forward, training


def layer_shapes(layers: Iterable, image_shape: Sequence[int]
                 ) -> Iterator[tuple[Any, tuple, tuple]]:
  """Each layer with the input and output shapes of one image through it.

  A functional model's layer knows its own shapes: in a graph the previous
  layer's output need not be this one's input (a shortcut's is its block's
  input). A stack of layers not called on a graph propagates the shape.

  Args:
    layers: a built model's layers, in order (`model.layers`).
    image_shape: `(H, W, C)` of the model's input.

  Yields:
    `(layer, input_shape, output_shape)`, the shapes with a batch axis of 1.
  """
  shape = (1, *image_shape)
  for layer in layers:
    input_shape = _graph_shape(layer, "input") or shape
    shape = (_graph_shape(layer, "output")
             or tuple(layer.compute_output_shape(input_shape)))
    yield layer, input_shape, shape


def _graph_shape(layer, end: str) -> tuple | None:
  """`layer.input` or `.output`'s shape (batch 1); None off a graph."""
  try:
    tensor = getattr(layer, end)
  except (AttributeError, ValueError):  # not called on a graph
    return None
  shape = getattr(tensor, "shape", None)  # a list for several inputs
  return None if shape is None else (1, *shape[1:])


def build_model(name: str, image_shape: Sequence[int] = (32, 32, 3),
                num_classes: int = 10):
  """A model whose shapes are to be counted or timed.

  Args:
    name: "seed", "fast", or a builder `package.module:function` (as
      `python -m fastcifar.train --model` takes it).
    image_shape: `(H, W, C)` of the model's input images.
    num_classes: the output's width.

  Returns:
    The built `keras.Model`.

  Raises:
    UsageError: neither a built-in model nor an importable builder (as the
      command says it).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fastcifar import models  # pylint: disable=g-import-not-at-top
  if name not in models.MODELS:
    return models.build_user_model(models.load_builder(name), num_classes,
                                   image_shape)
  # A few random images fit the fast model's whitening: shapes are all
  # that is counted or timed.
  images = np.random.default_rng(0).integers(0, 256, (16, *image_shape),
                                              dtype=np.uint8)
  return models.build_model(name, num_classes, mean=[0.5] * 3,
                            std=[0.25] * 3, train_images=images,
                            image_shape=image_shape)


def model_training_flops(name: str, image_shape: Sequence[int] = (32, 32, 3),
                         num_classes: int = 10) -> tuple[int, int]:
  """`training_flops_per_image` of a model `build_model` builds."""
  model = build_model(name, image_shape, num_classes)
  return training_flops_per_image(model.layers, image_shape)


# --- CPU peak ----------------------------------------------------------------


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
  """`/proc/cpuinfo` as one `{field: value}` per logical CPU."""
  processors = []
  for block in re.split(r"\n\s*\n", text.strip()):
    fields = {}
    for line in block.splitlines():
      key, colon, value = line.partition(":")
      if colon:
        fields[key.strip()] = value.strip()
    if "processor" in fields:
      processors.append(fields)
  return processors


def read_sibling_lists() -> list[str]:
  """Each logical CPU's `topology/thread_siblings_list` from sysfs."""
  lists = []
  for path in sorted(glob.glob(
      "/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list")):
    try:
      with open(path) as f:
        lists.append(f.read().strip())
    except OSError:
      pass
  return lists


def physical_cores(processors: list[dict[str, str]],
                   sibling_lists: Sequence[str] = ()) -> tuple[int, bool]:
  """Physical cores behind the logical CPUs, and whether any share one.

  Args:
    processors: `parse_cpuinfo`'s records.
    sibling_lists: sysfs `thread_siblings_list` values ("0-1", "0,2", "3");
      they win over cpuinfo's `physical id`/`core id` when given.

  Returns:
    `(cores, smt_siblings)`: smt_siblings is True when two logical CPUs
    are hardware threads of one core (they share its FMA units).
  """
  if sibling_lists:
    cores = len(set(sibling_lists))
  else:
    ids = {(p.get("physical id"), p.get("core id", p["processor"]))
           for p in processors}
    cores = len(ids)
  cores = max(1, cores)
  return cores, cores < max(1, len(processors))


def cpu_unit(flags: set[str], vendor: str, family: int, model: int,
             bfloat16: bool) -> tuple[str, int, str]:
  """The CPU's fastest unit for the precision: `(name, FLOP/cycle/core,
  source)`. Which AMD core it is comes from the cpu family (0x17: Zen 1-2,
  Zen 1 below model 0x30; 0x19: Zen 3-4; 0x1A: Zen 5)."""
  amd = vendor == "AuthenticAMD"
  if bfloat16 and "amx_bf16" in flags:
    return ("AMX-BF16", *AMX_BF16)
  if bfloat16 and "avx512_bf16" in flags:
    zen4 = amd and family == 0x19
    return ("AVX512-BF16", *(AVX512_BF16_ZEN4 if zen4
                              else AVX512_BF16_TWO_UNITS))
  if "avx512f" in flags:
    zen4 = amd and family == 0x19
    return ("AVX-512 FMA", *(AVX512_FMA_ZEN4 if zen4 else AVX512_FMA))
  if "fma" in flags and "avx2" in flags:
    zen1 = amd and family == 0x17 and model < 0x30
    return ("AVX2 FMA", *(AVX2_FMA_ZEN1 if zen1 else AVX2_FMA))
  return ("SSE", 8, "SSE, no FMA: 8 fp32 FLOP/cycle/core (assumed)")


def cpu_peak(precision: str, cpuinfo_text: str | None = None,
             sibling_lists: Sequence[str] | None = None) -> Peak | None:
  """The CPU's peak FLOP/s at `precision`, from `/proc/cpuinfo`.

  Args:
    precision: "mixed_bfloat16" counts bfloat16 units (AMX, AVX512-BF16);
      anything else float32 FMA units.
    cpuinfo_text: `/proc/cpuinfo`'s text; None reads it.
    sibling_lists: sysfs thread sibling lists; None reads them.

  Returns:
    The `Peak`, or None where there is no `/proc/cpuinfo` or no clock in it.
  """
  if cpuinfo_text is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo_text = f.read()
    except OSError:
      return None
  processors = parse_cpuinfo(cpuinfo_text)
  if not processors or "cpu MHz" not in processors[0]:
    return None
  if sibling_lists is None:
    sibling_lists = read_sibling_lists()
  first = processors[0]
  unit, per_cycle, source = cpu_unit(
      set(first.get("flags", "").split()), first.get("vendor_id", ""),
      int(first.get("cpu family", 0)), int(first.get("model", 0)),
      precision == "mixed_bfloat16")
  cores, siblings = physical_cores(processors, sibling_lists)
  ghz = float(first["cpu MHz"]) / 1000
  smt = ("two hardware threads share each core, counted once" if siblings
         else "no two logical CPUs share a core")
  return Peak(per_cycle * cores * ghz * 1e9, unit,
              f"{source}; x {cores} physical core(s) of {len(processors)} "
              f"logical CPU(s) ({smt}, by sysfs thread_siblings_list or "
              f"cpuinfo core id) x {ghz:.3f} GHz nominal (cpu MHz)",
              siblings)


# --- GPU peak ----------------------------------------------------------------


def gpu_peak(device_name: str, precision: str) -> Peak | None:
  """A GPU's dense peak FLOP/s at `precision`, by the datasheet (untested).

  Args:
    device_name: as TensorFlow reports it, e.g. "NVIDIA A100-SXM4-40GB".
    precision: mixed_float16 (and mixed_bfloat16 where the tensor cores
      take it) counts the tensor cores; anything else float32.

  Returns:
    The `Peak`, or None for a GPU not in `GPU_DATASHEET`.
  """
  for pattern, fp32, tensor, bf16 in GPU_DATASHEET:
    if re.search(pattern, device_name):
      on_tensor = precision == "mixed_float16" or (
          precision == "mixed_bfloat16" and bf16)
      tflops = tensor if on_tensor else fp32
      unit = f"{device_name} {'tensor cores' if on_tensor else 'FP32'}"
      return Peak(tflops * 1e12, unit, f"NVIDIA datasheet, dense: {tflops} "
                  "TFLOP/s (by the book, not measured here)")
  return None


def peak(precision: str) -> Peak | None:
  """The present device's peak at `precision`: the first GPU's, else the
  CPU's (`cpu_peak`); None where it cannot be told."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    name = tf.config.experimental.get_device_details(gpus[0]).get(
        "device_name", gpus[0].name)
    return gpu_peak(name, precision)
  return cpu_peak(precision) if os.path.exists("/proc/cpuinfo") else None


def fraction_fields(images_per_second: float, training_flops: int,
                    device_peak: Peak | None) -> dict:
  """A throughput record's FLOP/s fields.

  Args:
    images_per_second: the measured training rate.
    training_flops: training FLOPs per image (`training_flops_per_image`).
    device_peak: `peak(...)` for the run's precision, or None.

  Returns:
    `training_flops_per_image`, `tflops_per_second` (achieved),
    `peak_tflops_per_second`, `fraction_of_peak`, `peak_unit`, `peak_basis`
    and `smt_siblings` (None where the peak is unknown).
  """
  achieved = images_per_second * training_flops
  known = device_peak is not None
  return {
      "training_flops_per_image": training_flops,
      "tflops_per_second": achieved / 1e12,
      "peak_tflops_per_second": (device_peak.flops_per_second / 1e12
                                 if known else None),
      "fraction_of_peak": (achieved / device_peak.flops_per_second
                           if known else None),
      "peak_unit": device_peak.unit if known else None,
      "peak_basis": device_peak.basis if known else None,
      "smt_siblings": device_peak.smt_siblings if known else None,
  }
