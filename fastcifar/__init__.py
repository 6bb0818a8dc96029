"""fastcifar: CIFAR-10/100 trained fast and right by construction.

Importing the package changes no global state: no mixed-precision policy, no
environment variable. The one exception is a command starting: while Python
locates `python -m fastcifar.X` (sys.argv[0] is "-m" then, as documented for
-m), TensorFlow's start-up logging is silenced before X imports it (see
`fastcifar.quiet`; `--verbose` keeps it). The modules, one per concern:

- `fastcifar.sources`: every data source, ending in uint8 arrays.
- `fastcifar.input_pipeline`: arrays in, `tf.data.Dataset` out.
- `fastcifar.models`: the Keras Sequential models ("seed", "fast").
- `fastcifar.layers`, `fastcifar.optimizers`: the fast model's layers and
  its airbench-style Nesterov SGD with lookahead.
- `fastcifar.policy`: precision and XLA choices for the present device.
- `fastcifar.training`: one training path for every `tf.distribute` strategy.
- `fastcifar.train`, `.evaluate`, `.doctor`, `.export`: the commands.
"""

import sys as _sys

__version__ = "0.1.0"

# `python -m fastcifar.X` is starting: silence TensorFlow before X loads it.
if getattr(_sys, "argv", [])[:1] == ["-m"]:
  # pylint: disable-next=g-import-not-at-top
  from fastcifar import quiet as _quiet
  _quiet.start()
