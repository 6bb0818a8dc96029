"""fastcifar: CIFAR-10/100 trained fast and right by construction.

Importing the package changes no global state: no mixed-precision policy, no
environment variable. The modules, one per concern:

- `fastcifar.sources`: every data source, ending in uint8 arrays.
- `fastcifar.input_pipeline`: arrays in, `tf.data.Dataset` out.
- `fastcifar.models`: the Keras Sequential models ("seed", "fast").
- `fastcifar.layers`, `fastcifar.optimizers`: the fast model's layers and
  its airbench-style Nesterov SGD with lookahead.
- `fastcifar.policy`: precision and XLA choices for the present device.
- `fastcifar.training`: one training path for every `tf.distribute` strategy.
- `fastcifar.train`: the command-line entry point.
"""

__version__ = "0.1.0"
