"""dustpatrol: drone environmental inspection, from flight plan to closed rectification notice."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dustpatrol")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
