"""fastcifar.train whose output folder hangs once training has begun.

A command for `tests.forked.CommandServer` (test_stopping's): its first
checkpoint save blocks for good inside TensorFlow (as on a dead network
mount; a Python signal handler never runs there), and so does any later
look into the folder.
"""

from __future__ import annotations

import sys
import threading

import tensorflow as tf

from fastcifar import train
from fastcifar.training import checkpointing, stopping


def run() -> None:
  """`python -m fastcifar.train` with that folder (sys.argv: its flags)."""
  hung = threading.Event()
  real_latest = tf.train.latest_checkpoint

  def latest_checkpoint(*args, **kwargs):
    if hung.is_set():
      threading.Event().wait()
    return real_latest(*args, **kwargs)

  def save(self, *args, **kwargs):
    del self, args, kwargs
    hung.set()
    print("saving", flush=True)
    with stopping.deferred():  # as the real save: signals wait for its end
      tf.queue.FIFOQueue(1, tf.int32).dequeue()

  tf.train.latest_checkpoint = latest_checkpoint
  checkpointing.RunCheckpoint.save = save
  sys.argv[0] = train.__file__  # as `python -m fastcifar.train` has it
  train.run()
