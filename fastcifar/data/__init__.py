"""Data in: every source ending in uint8 images, and the tf.data pipeline.

- `sources`: archives, image folders, `.npz`, shards, TFDS, synthetic data,
  the first-run download; each ends in one `ImageDataset` of uint8 arrays.
- `pipeline`: arrays (or shards) in, seeded static-shape `tf.data.Dataset`s out.
- `augment`: the on-device flip and translation, compiled by XLA.
- `service`: the tf.data service client (a dispatcher's workers, deadlines).
"""
