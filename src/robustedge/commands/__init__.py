"""CLI command modules. Each module defines ``COMMANDS``: a list of click commands/groups.

Modules import heavy libraries (torch, tensorflow) inside the command functions, so that
`robustedge --help` stays fast. Register a new module by adding its name to ``MODULES``.
"""

from typing import Any, Dict, Sequence

from robustedge.errors import RobustEdgeError

MODULES: list = ["manifold", "compress", "export", "device", "run", "report"]


def parse_kv(pairs: Sequence[str], flag: str) -> Dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}`` for a repeatable ``flag``; values are
    parsed as YAML scalars (numbers, bools), else kept as strings."""
    import yaml

    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RobustEdgeError(f"{flag} expects key=value, got '{pair}'")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out
