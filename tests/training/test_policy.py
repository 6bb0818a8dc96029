"""Tests for fastcifar.training.policy: every device and capability, and
the scope."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import pytest

from fastcifar.training import policy


@pytest.mark.parametrize("device,cpu_bfloat16,capability,expected", [
    ("CPU", True, None, "mixed_bfloat16"),
    ("CPU", False, None, "float32"),
    ("GPU", None, (6, 1), "float32"),  # Pascal: no tensor cores
    ("GPU", None, (7, 0), "mixed_float16"),  # Volta: tensor cores from here
    ("GPU", None, (7, 5), "mixed_float16"),
    ("GPU", None, (8, 0), "mixed_float16"),
    ("GPU", None, (9, 0), "mixed_float16"),
    ("GPU", None, (0, 0), "float32"),  # capability unknown
    ("TPU", None, None, "mixed_bfloat16"),
    ("TPU", False, (0, 0), "mixed_bfloat16"),
])
def test_auto_precision(device, cpu_bfloat16, capability, expected):
  assert policy.resolve_precision("auto", device=device,
                                  cpu_bfloat16=cpu_bfloat16,
                                  gpu_capability=capability) == expected


@pytest.mark.parametrize("device", ["CPU", "GPU", "TPU"])
@pytest.mark.parametrize("cpu_bfloat16", [False, True])
@pytest.mark.parametrize("precision",
                         ["float32", "mixed_float16", "mixed_bfloat16"])
def test_explicit_precision_is_kept_everywhere(device, cpu_bfloat16,
                                               precision):
  assert policy.resolve_precision(precision, device=device,
                                  cpu_bfloat16=cpu_bfloat16,
                                  gpu_capability=(8, 0)) == precision


def test_auto_on_a_cpu_does_not_look_at_gpus(monkeypatch):
  def fail():
    raise AssertionError("GPU capability queried for a CPU")
  monkeypatch.setattr(policy, "_gpu_compute_capability", fail)
  assert policy.resolve_precision("auto", device="CPU",
                                  cpu_bfloat16=False) == "float32"


def test_auto_detects_what_is_not_given(monkeypatch):
  monkeypatch.setattr(policy, "detect_device", lambda: "GPU")
  monkeypatch.setattr(policy, "_gpu_compute_capability", lambda: (8, 6))
  assert policy.resolve_precision("auto") == "mixed_float16"
  monkeypatch.setattr(policy, "detect_device", lambda: "CPU")
  monkeypatch.setattr(policy, "cpu_has_bfloat16", lambda: True)
  assert policy.resolve_precision("auto") == "mixed_bfloat16"


def test_unknown_precision():
  with pytest.raises(ValueError, match="unknown precision 'float64'"):
    policy.resolve_precision("float64", device="CPU")


@pytest.mark.parametrize("choice,device,expected", [
    ("auto", "CPU", False),  # measured 7-16x slower on CPUs
    ("auto", "GPU", True),
    ("auto", "TPU", True),
    ("true", "CPU", True),
    ("true", "GPU", True),
    ("true", "TPU", True),
    ("false", "CPU", False),
    ("false", "GPU", False),
    ("false", "TPU", False),
])
def test_jit_compile(choice, device, expected):
  assert policy.resolve_jit_compile(choice, device=device) is expected


def test_unknown_jit_compile():
  with pytest.raises(ValueError, match="unknown jit_compile 'yes'"):
    policy.resolve_jit_compile("yes", device="CPU")


def test_detect_device_on_this_machine():
  assert policy.detect_device() in ("CPU", "GPU", "TPU")


def _cpuinfo(tmp_path, flags: str) -> str:
  path = tmp_path / "cpuinfo"
  path.write_text(
      "processor\t: 0\nvendor_id\t: GenuineIntel\n"
      f"flags\t\t: fpu vme de pse {flags}\nbugs\t\t: spectre_v1\n\n"
      "processor\t: 1\nflags\t\t: fpu\n")
  return str(path)


@pytest.mark.parametrize("flags,expected", [
    ("avx2 avx512f amx_bf16 amx_tile", True),
    ("avx2 avx512f avx512_bf16", True),
    ("avx2 avx512f avx512_vnni", False),
    ("avx2 amx_bf16x", False),  # a whole flag, not a prefix
    ("", False),
])
def test_cpu_has_bfloat16(tmp_path, flags, expected):
  assert policy.cpu_has_bfloat16(_cpuinfo(tmp_path, flags)) is expected


def test_onednn_in_use_says_what_tensorflow_chose():
  # conftest turns oneDNN on for the tests' processes (fastcifar.cli.cpu);
  # a process told "0" runs Eigen's kernels on any CPU.
  assert policy.onednn_in_use() is (os.environ["TF_ENABLE_ONEDNN_OPTS"]
                                    == "1")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  off = subprocess.run(
      [sys.executable, "-c", "from fastcifar.training import policy; "
       "print(policy.onednn_in_use())"], capture_output=True, text=True,
      timeout=120, check=True, cwd=repo,
      env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", PYTHONPATH=repo))
  assert off.stdout.split()[-1] == "False"


def test_cpu_has_bfloat16_without_cpuinfo(tmp_path):
  assert policy.cpu_has_bfloat16(str(tmp_path / "missing")) is False
  no_flags = tmp_path / "cpuinfo"
  no_flags.write_text("processor\t: 0\nmodel name\t: Something\n")
  assert policy.cpu_has_bfloat16(str(no_flags)) is False


def test_precision_scope_sets_and_restores():
  keras.mixed_precision.set_global_policy("mixed_float16")
  with policy.precision_scope("mixed_bfloat16"):
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    layer = keras.layers.Dense(2)
  assert keras.mixed_precision.global_policy().name == "mixed_float16"
  assert layer.compute_dtype == "bfloat16"  # kept after the block


def test_precision_scope_restores_on_exception():
  before = keras.mixed_precision.global_policy().name
  with pytest.raises(RuntimeError, match="boom"):
    with policy.precision_scope("mixed_float16"):
      assert keras.mixed_precision.global_policy().name == "mixed_float16"
      raise RuntimeError("boom")
  assert keras.mixed_precision.global_policy().name == before


def test_precision_scope_with_a_bad_policy_changes_nothing():
  before = keras.mixed_precision.global_policy().name
  with pytest.raises(ValueError):
    with policy.precision_scope("float128"):
      pass
  assert keras.mixed_precision.global_policy().name == before
