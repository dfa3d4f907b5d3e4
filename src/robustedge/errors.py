"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class RobustEdgeError(Exception):
    """A problem with the user's input (files, names, shapes, options), not a bug."""


class UnknownNameError(RobustEdgeError, KeyError):
    """An unknown registry name; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(RobustEdgeError):
    """Missing, corrupt or malformed data (files, shapes, NaN/inf)."""


class CheckpointError(RobustEdgeError):
    """Missing or corrupt run folders, weights or checkpoints."""


class TrainingError(RobustEdgeError):
    """Training could not go on (e.g. a non-finite loss)."""


class UnsafePathError(CheckpointError):
    """A path read from a run folder, manifest or recipe that leaves its folder, or a file that
    does not match its recorded sha256: refused, never read."""
