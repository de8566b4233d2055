"""reparam: prefix-tuning as a mixture of experts, and numerical checks of its theory (README.md)."""
import time as _time
from importlib import metadata as _metadata

# the start of a run as reparam sees it (first import), for the wall time recorded in provenance.json
STARTED = _time.perf_counter()

try:
    __version__ = _metadata.version("reparam")
except _metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
