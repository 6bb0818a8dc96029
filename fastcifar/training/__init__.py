"""The training loop: one path for every model and `tf.distribute` strategy.

- `trainer`: `train_and_evaluate`, the epochs, the outputs of a run.
- `config`: `Config`, a run's settings.
- `step_loop`: several training steps per call into TensorFlow.
- `policy`: precision and XLA choices for the present device.
- `distribute`: strategies and per-replica input.
- `checkpointing`, `resumable`, `stopping`: resume after a kill, SIGTERM.
- `outputs`, `evaluation`: atomic files, confusion matrices and curves.
"""
