"""fastcifar's benchmarks, run from the repository root as modules.

    python -m benchmarks.NAME [--quick] [--data_dir=...]

`python -m` is the one way to run them: it puts the repository on the path,
so each script needs no start-up code of its own. While Python locates
`benchmarks.NAME` (sys.argv[0] is "-m" then), importing fastcifar silences
TensorFlow's start-up logging before NAME loads it, as for `python -m
fastcifar.X` (see `fastcifar/__init__.py`; `--verbose` keeps it). Imported
any other way (tests, say) it only imports fastcifar, which changes no
global state. `benchmarks/rss_probe.py`, which must load nothing of its
own, runs by its path.
"""

import fastcifar  # pylint: disable=unused-import
