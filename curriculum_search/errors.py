"""Error types whose ``str()`` is one line naming the file and the field at fault.

Every error a user can cause (a bad file, a missing checkpoint, a broken dataset) is raised as a
:class:`UserError` subclass; the CLI prints it as ``error: <message>`` and exits with status 2,
without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Base class for errors caused by input the user controls. ``str()`` is a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(UserError):
    """A configuration file (space, recipe, zoo entry) is malformed or has an invalid field."""

    def __init__(self, path: str | Path | None, field: str | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        where = self.path or "<config>"
        if field:
            where = f"{where}: {field}"
        super().__init__(f"{where}: {message}")


class DataError(ConfigError):
    """A dataset file (COCO JSON, image) is missing or inconsistent."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or belongs to another model."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class StudyError(UserError):
    """A study cannot be created or resumed as asked (changed teacher pool, direction mismatch...)."""


class TrialFailure(Exception):
    """A trial failed for a reason worth recording (NaN loss, out of memory); the study goes on."""
