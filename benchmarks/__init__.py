"""fastcifar's benchmarks, run from the repository root as modules.

    python -m benchmarks.NAME [--quick] [--data_dir=...]

`python -m` is the one way to run them: it puts the repository on the path,
so each script needs no start-up code of its own. While Python locates
`benchmarks.NAME` (sys.argv[0] is "-m" then), this package silences
TensorFlow's start-up logging before NAME loads it, as `python -m
fastcifar.X` does (see `fastcifar/__init__.py`; `--verbose` keeps it).
Imported any other way (tests, say) it changes no global state: importing
fastcifar alone silences nothing outside fastcifar's own commands.
`benchmarks/rss_probe.py`, which must load nothing of its own, runs by its
path.
"""

import fastcifar

# pylint: disable-next=protected-access
if fastcifar._command_starting(__name__):
  from fastcifar.cli import quiet  # pylint: disable=g-import-not-at-top
  quiet.start()
