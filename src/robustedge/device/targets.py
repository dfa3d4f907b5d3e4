"""Transitional: the old import path of :mod:`robustedge.device.host.targets`, kept only for
``recipe/latency_probe.py`` (moved on another branch of issue 21); delete once it imports the
new path."""

from robustedge.device.host.targets import make_target

__all__ = ["make_target"]
