"""Atomic file writes and small (de)serialisation helpers.

Every result is written to a temporary file in the target folder and then renamed, so an
interrupted run never leaves a half-written file where a good one stood.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator, Optional, Tuple, Union

from robustedge import jsonsafe

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: PathLike, obj: Any) -> None:
    import yaml  # lazily: the bundle builder imports this module without PyYAML

    write_text(path, yaml.safe_dump(obj, sort_keys=False))


MAX_YAML_NODES = 100_000  # a recipe or config.yaml is a few hundred values
# The YAML tags a plain-data document may carry: the core types as PyYAML resolves them (plus
# timestamp, which an unquoted date resolves to). Anything else (!!python/..., !!binary, !!set,
# local !tags) is refused.
CORE_YAML_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp")
)


def check_yaml_tags(node: Any, source: str) -> None:
    """Refuse any non-core tag (``!!python/...``, ``!custom``, ``!!binary``...) anywhere in a
    composed YAML node tree, naming ``source:line``; keys are checked too."""
    import yaml

    from robustedge.errors import RobustEdgeError

    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:  # aliases share nodes: visit each once
            continue
        seen.add(id(n))
        if n.tag not in CORE_YAML_TAGS:
            raise RobustEdgeError(
                f"{source}:{n.start_mark.line + 1}: YAML tag {n.tag!r} is not allowed "
                "(plain mappings, lists, strings, numbers, booleans and null only)"
            )
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack += [k, v]
        elif isinstance(n, yaml.SequenceNode):
            stack += list(n.value)


def compose_yaml(text: str, source: str) -> Tuple[Optional[Any], Any]:
    """(composed node tree or None, a SafeLoader constructor) with every tag checked.

    Raises ``RobustEdgeError("source:line: ...")`` on invalid YAML or a non-core tag.
    """
    import yaml

    from robustedge.errors import RobustEdgeError

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RobustEdgeError(f"{source}:{line}: invalid YAML: {problem}") from None
    except (ValueError, RecursionError) as e:  # characters the reader refuses; deep nesting
        raise RobustEdgeError(f"{source}:1: invalid YAML: {type(e).__name__}: {e}") from None
    check_yaml_tags(node, source)
    if node is not None and expanded_size(node) > MAX_YAML_NODES:
        raise RobustEdgeError(
            f"{source}:{node.start_mark.line + 1}: YAML expands to more than "
            f"{MAX_YAML_NODES:,} values through aliases: refused"
        )
    return node, yaml.SafeLoader("")


def expanded_size(node: Any) -> int:
    """Number of values ``node`` stands for once every alias is expanded (memoised, so a
    "billion laughs" document is measured, not expanded)."""
    import yaml

    sizes: dict = {}
    order, stack = [], [node]
    while stack:  # post-order without recursion (deep nesting must not overflow the stack)
        n = stack.pop()
        if id(n) in sizes:
            continue
        sizes[id(n)] = None
        order.append(n)
        if isinstance(n, yaml.MappingNode):
            stack += [x for kv in n.value for x in kv]
        elif isinstance(n, yaml.SequenceNode):
            stack += list(n.value)
    for n in reversed(order):
        if isinstance(n, yaml.MappingNode):
            kids = [x for kv in n.value for x in kv]
        elif isinstance(n, yaml.SequenceNode):
            kids = list(n.value)
        else:
            kids = []
        sizes[id(n)] = 1 + sum(sizes[id(k)] or 0 for k in kids)
    return sizes[id(node)]


def load_yaml(text: str, source: str) -> Any:
    """Plain data from YAML text: safe constructors only, non-core tags refused (one line)."""
    import yaml

    from robustedge.errors import RobustEdgeError

    node, cons = compose_yaml(text, source)
    if node is None:
        return None
    try:
        return cons.construct_document(node)
    except (yaml.YAMLError, ValueError, TypeError) as e:
        line = node.start_mark.line + 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RobustEdgeError(f"{source}:{line}: invalid YAML: {problem}") from None


def read_yaml(path: PathLike) -> Any:
    """:func:`load_yaml` of a file; a missing or undecodable file is a one-line error."""
    from robustedge.errors import CheckpointError

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise CheckpointError(f"missing file: {path}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    return load_yaml(text, str(path))


def safe_path(root: PathLike, rel: Any, what: str = "path") -> Path:
    """``root / rel`` for a relative path read from a file inside ``root`` (a run folder,
    manifest or recipe), refused with :class:`~robustedge.errors.UnsafePathError` unless it
    stays inside ``root``: no absolute path, no ``..``, no drive, no NUL, and no symlink that
    resolves outside."""
    from robustedge.errors import UnsafePathError

    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise UnsafePathError(f"{what}: not a relative file name: {rel!r}")
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in win.parts:
        raise UnsafePathError(f"{what}: {rel!r} leaves its folder {root}: refused")
    root = Path(root)
    full = root / rel
    try:
        inside = full.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # symlink loop
        inside = False
    if not inside:
        raise UnsafePathError(f"{what}: {rel!r} resolves outside {root}: refused")
    return full


def read_json(path: PathLike) -> Any:
    from robustedge.errors import CheckpointError

    try:
        return jsonsafe.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"missing file: {path}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):  # Enum
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def staging_dir(final: PathLike) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``final`` only when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists():  # a swap cut short by a crash: finish undoing it
        os.replace(old, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
