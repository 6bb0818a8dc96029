"""Tests for fastcifar.cli.cpu: oneDNN's kernels on for commands on x86."""

from __future__ import annotations

import os

import pytest

from fastcifar.cli import cpu


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_commands_turn_onednn_on_on_x86(machine):
  environ = {}
  assert cpu.enable_onednn(environ, machine)
  assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}


@pytest.mark.parametrize("value", ["0", "1", "false"])
def test_a_users_setting_stands(value):
  environ = {"TF_ENABLE_ONEDNN_OPTS": value}
  assert not cpu.enable_onednn(environ, "x86_64")
  assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


@pytest.mark.parametrize("machine", ["aarch64", "arm64"])
def test_arm_keeps_tensorflows_choice(machine):
  # ARM builds pick their kernels (Arm Compute Library) themselves.
  environ = {}
  assert not cpu.enable_onednn(environ, machine)
  assert not environ


def test_the_process_environment_by_default(monkeypatch):
  monkeypatch.delenv(cpu.VARIABLE, raising=False)
  cpu.enable_onednn(machine="x86_64")
  assert os.environ[cpu.VARIABLE] == "1"
