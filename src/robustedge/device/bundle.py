"""Transitional: the old import path of :mod:`robustedge.device.host.bundle`, kept only for
``recipe/latency_probe.py`` (moved on another branch of issue 21); delete once it imports the
new path."""

from robustedge.device.host.bundle import build_bundle

__all__ = ["build_bundle"]
