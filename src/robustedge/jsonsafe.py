"""JSON from untrusted files (standard library only: it also runs on the board).

``json.loads`` recurses once per nesting level in C; with a raised recursion limit (some
libraries raise it) a hostile ``[[[[...`` of a few hundred thousand levels overflows the C
stack and kills the process instead of raising. :func:`loads` counts the nesting first, in
linear time and constant stack, and refuses anything deeper than ``max_depth``.
"""

from __future__ import annotations

import json
from typing import Any, Union

MAX_DEPTH = 64  # no robustedge file nests deeper than a handful of levels


class TooDeep(ValueError):
    """A JSON text nested deeper than allowed."""


def nesting_depth(text: str) -> int:
    """The deepest ``[`` / ``{`` nesting of ``text``, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(text: Union[str, bytes, bytearray], max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` after refusing more than ``max_depth`` levels of nesting
    (:class:`TooDeep`, a ValueError, like ``json.JSONDecodeError``). Bytes are decoded as
    ``json.loads`` would (UTF-8/16/32)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise TooDeep(f"nested {depth} levels deep (at most {max_depth} allowed)")
    return json.loads(text)
