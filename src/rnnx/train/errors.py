"""The errors of a training run that the command line reports specially (no Lightning import)."""

from __future__ import annotations


class RunInterrupted(Exception):
    """The user stopped a run (Ctrl-C); the message says what was saved and how to resume."""


class RunDirectoryExists(FileExistsError):
    """``--out-dir`` already holds a run; nothing was touched."""


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be read: names the file and what is wrong."""
