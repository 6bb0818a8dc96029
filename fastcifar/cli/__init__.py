"""What the commands share: flags, start-up, quiet TensorFlow logging.

- `common`: the data flags every command takes, and `run` (one-line errors).
- `quiet`: TensorFlow's start-up logging silenced before it is imported.
- `scripts`: the installed console scripts (`fastcifar-train`, ...).
"""
