"""fastcifar: CIFAR-10/100 trained fast and right by construction.

Importing the package changes no global state: no mixed-precision policy, no
environment variable. The one exception is a command starting: while Python
locates `python -m fastcifar.X` (not another program that imports fastcifar),
TensorFlow's start-up logging is silenced before X imports it (see
`fastcifar.cli.quiet`; `--verbose` keeps it). The folders, one per concern:

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

import sys as _sys

__version__ = "0.1.0"


def _command_starting() -> bool:
  """Whether Python is locating `python -m fastcifar.X` for X to run.

  sys.argv[0] is "-m" while it does (as documented for -m), but also while
  it imports another program's packages, which may import fastcifar:
  sys.orig_argv says which module runs.
  """
  argv = getattr(_sys, "orig_argv", [])
  if getattr(_sys, "argv", [])[:1] != ["-m"] or "-m" not in argv[:-1]:
    return False
  return argv[argv.index("-m") + 1].startswith(__name__ + ".")


# `python -m fastcifar.X` is starting: silence TensorFlow before X loads it.
if _command_starting():
  # pylint: disable-next=g-import-not-at-top
  from fastcifar.cli import quiet as _quiet
  _quiet.start()
