"""What the commands share: flags, start-up, quiet TensorFlow logging.

- `common`: the data flags every command takes, and `run` (one-line errors).
- `cpu`: TensorFlow's oneDNN kernels on for commands on every x86 CPU.
- `quiet`: TensorFlow's start-up logging silenced before it is imported.
- `scripts`: the installed console scripts (`fastcifar-train`, ...).
"""
