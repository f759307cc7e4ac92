"""ctxscope: long-context inference characterization with a device agent and a live collector."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctxscope")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
