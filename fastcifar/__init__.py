"""fastcifar: CIFAR-10/100 trained fast and right by construction.

Importing the package changes no global state: no mixed-precision policy, no
environment variable. The one exception is a command starting: while Python
locates `python -m fastcifar.X` (not another program that imports fastcifar),
TensorFlow's start-up logging is silenced before X imports it (see
`fastcifar.cli.quiet`; `--verbose` keeps it), and on x86 its oneDNN kernels
are turned on unless you set TF_ENABLE_ONEDNN_OPTS (`fastcifar.cli.cpu`).
The folders, one per concern:

- `fastcifar.data`: every data source ending in uint8 arrays (`sources`),
  the tf.data pipeline (`pipeline`), the on-device augmentation.
- `fastcifar.models`: the built-in Keras models ("seed", "fast") and their
  recipes; `fastcifar.layers`, `fastcifar.optimizers`: building blocks.
- `fastcifar.training`: one training path for every `tf.distribute`
  strategy (`trainer`), with its precision and XLA choices (`policy`).
- `fastcifar.serving`: SavedModel and TFLite export.
- `fastcifar.train`, `.evaluate`, `.doctor`, `.export`: the commands
  (their shared pieces in `fastcifar.cli`).
"""

import importlib as _importlib
import sys as _sys

__version__ = "0.1.0"

# The public API (docs/library.md), each name imported on first use, so that
# `import fastcifar` stays light (no TensorFlow) while `fastcifar.fit` works.
_API = {
    "load_data": "fastcifar.data.datasets",
    "train_dataset": "fastcifar.data.datasets",
    "eval_dataset": "fastcifar.data.datasets",
    "ImageDataset": "fastcifar.data.sources",
    "fit": "fastcifar.training.fit",
    "Recipe": "fastcifar.models.recipes",
    "layers": None,  # the module fastcifar.layers itself
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
  """Imports a public name when it is first looked up (PEP 562)."""
  if name not in _API:
    raise AttributeError(f"module 'fastcifar' has no attribute {name!r}")
  module = _API[name] or f"{__name__}.{name}"
  try:
    found = _importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name is None or not module.startswith(e.name):
      raise  # a module it needs is missing: say which
    # This version has no such module: a missing attribute, for hasattr.
    raise AttributeError(f"module 'fastcifar' has no attribute {name!r} "
                         f"({e})") from e
  if _API[name] is None:
    return found
  value = getattr(found, name)
  globals()[name] = value  # looked up once
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))


def _command_starting(package: str = __name__) -> bool:
  """Whether Python is locating `python -m PACKAGE.X` for X to run.

  sys.argv[0] is "-m" while it does (as documented for -m), but also while
  it imports another program's packages, which may import fastcifar:
  sys.orig_argv says which module runs. The repository's `benchmarks`
  package asks the same for its own scripts.
  """
  argv = getattr(_sys, "orig_argv", [])
  if getattr(_sys, "argv", [])[:1] != ["-m"] or "-m" not in argv[:-1]:
    return False
  return argv[argv.index("-m") + 1].startswith(package + ".")


# `python -m fastcifar.X` is starting: silence TensorFlow before X loads it.
if _command_starting():
  # pylint: disable-next=g-import-not-at-top
  from fastcifar.cli import cpu as _cpu, quiet as _quiet
  _cpu.enable_onednn()
  _quiet.start()
