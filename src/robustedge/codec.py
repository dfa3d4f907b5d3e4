"""How a bundle stores model files: the codecs and the one compression helper.

Standard library only: the board side ships this file (it inflates what the host packed), and
the export ledger measures flash bytes with the same codec, so neither imports the other.
"""

from __future__ import annotations

CODECS = {"xz": ".xz", "gzip": ".gz"}  # codec -> file suffix
DEFAULT_CODEC = "xz"


def compress_bytes(raw: bytes, codec: str = DEFAULT_CODEC) -> bytes:
    """``raw`` compressed with ``codec`` (deterministic: no time stamp in the gzip header)."""
    if codec == "xz":
        import lzma

        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9)
    if codec == "gzip":
        import gzip

        return gzip.compress(raw, compresslevel=9, mtime=0)
    raise ValueError(f"unknown codec '{codec}' (known: {', '.join(CODECS)})")
