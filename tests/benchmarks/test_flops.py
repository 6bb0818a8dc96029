"""Tests of benchmarks.flops: exact FLOP counts, peaks from canned cpuinfo."""

from __future__ import annotations

import keras
import pytest

from benchmarks import flops, library
from fastcifar import models

SAPPHIRE_RAPIDS = """\
processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2600.000
physical id\t: 0
siblings\t: 2
core id\t\t: {core}
cpu cores\t: {cores}
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile
"""

EPYC = """\
processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
cpu MHz\t\t: 1996.248
physical id\t: 0
siblings\t: 2
core id\t\t: {n}
cpu cores\t: 2
flags\t\t: fpu sse2 avx2 fma {extra}
"""


def _two_cpus(template: str, **fields) -> str:
  return "\n".join(template.format(n=n, **{
      k: (v[n] if isinstance(v, tuple) else v) for k, v in fields.items()})
                   for n in range(2))


def test_seed_cnn_training_flops_per_image():
  # docs/benchmarks.md: 20.7 M multiply-adds forward, 122.6 MFLOP per
  # training image (3x forward less the first layer's input gradient).
  forward_macs = (32 * 32 * 32 * 27 + 30 * 30 * 32 * 288 + 15 * 15 * 64 * 288
                  + 13 * 13 * 64 * 576 + 2304 * 512 + 512 * 10)
  assert forward_macs == 20_741_120
  forward, training = flops.model_training_flops("seed")
  assert forward == 2 * forward_macs
  assert training == 2 * (3 * forward_macs - 32 * 32 * 32 * 27) == 122_677_248


def test_tiny_seed_cnn_counted_layer_by_layer():
  model = keras.Sequential([keras.Input((16, 16, 3)),
                            *models.seed_cnn_layers(3)])
  first = 16 * 16 * 32 * 27  # no input gradient: its input is the image
  rest = (14 * 14 * 32 * 288 + 7 * 7 * 64 * 288 + 5 * 5 * 64 * 576
          + 256 * 512 + 512 * 3)
  assert flops.training_flops_per_image(model.layers, (16, 16, 3)) == (
      2 * (first + rest), 2 * (2 * first + 3 * rest))


def test_tiny_fast_model_counted_layer_by_layer():
  model = keras.Sequential([keras.Input((16, 16, 3)),
                            *models.fast_cnn_layers(3, widths=(4, 8, 8))])
  # The whitening conv (2x2, 3 -> 24 channels, 15x15 out) is fixed and sees
  # the image: forward only. Its bias trains, so every later layer passes an
  # input gradient back as well as computing its weight gradient.
  whitening = 15 * 15 * 24 * 12
  rest = (15 * 15 * 4 * 9 * 24 + 7 * 7 * 4 * 9 * 4 + 7 * 7 * 8 * 9 * 4
          + 3 * 3 * 8 * 9 * 8 + 3 * 3 * 8 * 9 * 8 + 1 * 1 * 8 * 9 * 8
          + 8 * 3)
  assert flops.training_flops_per_image(model.layers, (16, 16, 3)) == (
      2 * (whitening + rest), 2 * (whitening + 3 * rest))


def test_fast_model_at_cifar_size():
  forward, training = flops.model_training_flops("fast")
  # 256 -> 256 at 7x7 is 28.9 M multiply-adds an image (7.4 G at batch 256,
  # as issue 32 counts it).
  assert forward == 236_294_720 and training == 707_777_088


def test_amx_peak_and_smt_siblings():
  separate = _two_cpus(SAPPHIRE_RAPIDS, core=(0, 1), cores=2)
  peak = flops.cpu_peak("mixed_bfloat16", separate, sibling_lists=["0", "1"])
  assert peak.unit == "AMX-BF16" and not peak.smt_siblings
  assert peak.flops_per_second == pytest.approx(1024 * 2 * 2.6e9)
  assert "2 physical core(s) of 2" in peak.basis and "nominal" in peak.basis
  # Two hardware threads of one core share its AMX unit: one core's peak.
  shared = _two_cpus(SAPPHIRE_RAPIDS, core=(0, 0), cores=1)
  for text, lists in ((shared, []), (separate, ["0-1", "0-1"])):
    peak = flops.cpu_peak("mixed_bfloat16", text, sibling_lists=lists)
    assert peak.smt_siblings
    assert peak.flops_per_second == pytest.approx(1024 * 2.6e9)
  float32 = flops.cpu_peak("float32", separate, sibling_lists=["0", "1"])
  assert float32.unit == "AVX-512 FMA"
  assert float32.flops_per_second == pytest.approx(64 * 2 * 2.6e9)


@pytest.mark.parametrize("family,model,extra,precision,unit,per_cycle", [
    (23, 1, "", "float32", "AVX2 FMA", 16),  # Zen 1: 128-bit halves
    (23, 49, "", "float32", "AVX2 FMA", 32),  # Zen 2
    (23, 49, "", "mixed_bfloat16", "AVX2 FMA", 32),  # no bf16 units
    (25, 17, "avx512f avx512_bf16", "mixed_bfloat16", "AVX512-BF16", 64),
    (25, 17, "avx512f avx512_bf16", "float32", "AVX-512 FMA", 32),
    (26, 2, "avx512f avx512_bf16", "mixed_bfloat16", "AVX512-BF16", 128),
    (26, 2, "avx512f avx512_bf16", "float32", "AVX-512 FMA", 64),
])
def test_amd_peaks(family, model, extra, precision, unit, per_cycle):
  text = _two_cpus(EPYC, family=family, model=model, extra=extra)
  peak = flops.cpu_peak(precision, text, sibling_lists=["0", "1"])
  assert peak.unit == unit
  assert peak.flops_per_second == pytest.approx(per_cycle * 2 * 1.996248e9)


def test_no_clock_no_peak():
  assert flops.cpu_peak("float32", "processor\t: 0\nflags\t: fma avx2\n",
                        sibling_lists=[]) is None


def test_gpu_peaks_by_the_datasheet():
  a100 = flops.gpu_peak("NVIDIA A100-SXM4-40GB", "mixed_bfloat16")
  assert a100.flops_per_second == 312e12 and "tensor" in a100.unit
  assert flops.gpu_peak("NVIDIA A100-SXM4-40GB", "float32"
                        ).flops_per_second == 19.5e12
  # T4 tensor cores take float16, not bfloat16.
  assert flops.gpu_peak("Tesla T4", "mixed_bfloat16"
                        ).flops_per_second == 8.1e12
  assert flops.gpu_peak("Tesla T4", "mixed_float16"
                        ).flops_per_second == 65e12
  assert flops.gpu_peak("NVIDIA H100 PCIe", "mixed_float16"
                        ).flops_per_second == 756e12
  assert flops.gpu_peak("Some Future GPU", "float32") is None


def test_fraction_fields():
  peak = flops.Peak(1e12, "X", "basis", smt_siblings=False)
  fields = flops.fraction_fields(1000.0, 122_677_248, peak)
  assert fields["tflops_per_second"] == pytest.approx(0.122677248)
  assert fields["fraction_of_peak"] == pytest.approx(0.122677248)
  assert fields["peak_unit"] == "X" and fields["smt_siblings"] is False
  unknown = flops.fraction_fields(1000.0, 10, None)
  assert unknown["fraction_of_peak"] is None
  assert unknown["tflops_per_second"] == pytest.approx(1e-8)


def test_a_functional_resnet_counted_branch_by_branch():
  # benchmarks.library's ResNet: a shortcut conv reads its block's input,
  # not the previous layer's output, so shapes come from the graph.
  model = library.build(10, (32, 32, 3))
  stem = 32 * 32 * 27 * 32  # no input gradient: its input is the image
  rest = (2 * 32 * 32 * 288 * 32                        # block 1
          + 16 * 16 * (288 * 64 + 576 * 64 + 32 * 64)   # block 2, shortcut
          + 8 * 8 * (576 * 128 + 1152 * 128 + 64 * 128)  # block 3, shortcut
          + 128 * 10)
  assert stem + rest == 49_120_512
  assert flops.training_flops_per_image(model.layers, (32, 32, 3)) == (
      2 * (stem + rest), 2 * (2 * stem + 3 * rest))
