"""Transitional: the old import path of :mod:`robustedge.device.board.bundle_format`, kept only
for ``export/ledger.py`` and ``compress/budget.py`` (other branches of issue 21); delete once
they import the new path."""

from robustedge.device.board.bundle_format import DEFAULT_CODEC, compress_bytes

__all__ = ["DEFAULT_CODEC", "compress_bytes"]
