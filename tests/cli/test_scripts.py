"""The installed console scripts (pyproject.toml) behave like `python -m`.

They are found beside the running interpreter, as in the .venv `.ci/run`
installs; where fastcifar is not installed, the modules are run instead.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPTS = {
    "fastcifar-train": "fastcifar.train",
    "fastcifar-evaluate": "fastcifar.evaluate",
    "fastcifar-doctor": "fastcifar.doctor",
    "fastcifar-export": "fastcifar.export",
}
# Where a package's command lives.
SCRIPTS_MODULES = {"fastcifar.doctor": "fastcifar.doctor.__main__"}


def _help(*command: str) -> str:
  result = subprocess.run([*command, "--help"], capture_output=True,
                          text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  # absl's --help exits 1 after printing.
  assert result.returncode in (0, 1), result.stderr[-2000:]
  assert not result.stderr.strip(), result.stderr  # quiet: no TF lines
  return result.stdout


def _flags_listed(help_text: str) -> list[str]:
  return sorted(re.findall(r"^  --(?:\[no\])?(\w+):", help_text, re.M))


def _defined_in(module: str) -> tuple[str, list[str]]:
  """A module's docstring's first line and the flags it defines, read from
  its source (importing the commands together would define --model twice)."""
  path = importlib.util.find_spec(module).origin
  with open(path) as f:
    source = f.read()
  doc = ast.get_docstring(ast.parse(source)).splitlines()[0]
  return doc, re.findall(r'DEFINE_\w+\(\s*"(\w+)"', source)


@pytest.mark.parametrize("script,module", SCRIPTS.items())
def test_installed_script_help_is_the_modules(script, module):
  """Each script's --help is its module's docstring and lists the flags the
  module defines and the shared ones (`python -m MODULE` where fastcifar is
  not installed: tests/test_train.py runs that route)."""
  path = os.path.join(os.path.dirname(sys.executable), script)
  text = _help(*([path] if os.path.isfile(path)
                 else [sys.executable, "-m", module]))
  doc, defined = _defined_in(SCRIPTS_MODULES.get(module, module))
  assert text.startswith(doc)
  listed = _flags_listed(text)
  for name in defined + ["dataset", "data_dir", "download", "data_mirror",
                         "verbose"]:
    assert name in listed, name
