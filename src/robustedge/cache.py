"""Where robustedge keeps what it can rebuild (emulated userlands, converted models).

One folder per kind: ``$ROBUSTEDGE_CACHE_<KIND>`` when set (``off`` turns that cache off),
else ``$ROBUSTEDGE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/robustedge/<kind>`` (``~/.cache`` by
default). Pointing ``ROBUSTEDGE_CACHE`` at a CI cache folder moves every kind at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

CACHE_ENV = "ROBUSTEDGE_CACHE"
OFF = "off"


def kind_env(kind: str) -> str:
    """The variable that moves (or turns off) one kind's cache: ``ROBUSTEDGE_CACHE_TFLITE``."""
    return f"{CACHE_ENV}_{kind.upper().replace('-', '_')}"


def cache_dir(kind: str) -> Optional[Path]:
    """The folder of ``kind``'s cache, or None when ``ROBUSTEDGE_CACHE_<KIND>=off``."""
    own = os.environ.get(kind_env(kind))
    if own:
        return None if own.strip().lower() == OFF else Path(own)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / kind
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robustedge" / kind
