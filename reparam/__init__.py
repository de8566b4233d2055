"""reparam: prefix-tuning as a mixture of experts, and numerical checks of its theory (README.md)."""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("reparam")
except _metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
