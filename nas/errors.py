"""Every error type of the package, and how one is told in one line. Imports nothing of `nas`.

A command turns the *expected* errors (bad input, missing or corrupt files) into one line on
stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit status 2."""


class SpecError(ValueError):
    """A spec (or spec file) that does not describe a buildable, trainable candidate."""


class SpaceError(ValueError):
    """A search-space file that is missing or malformed; the message names file and key."""


class DataError(RuntimeError):
    """Missing or corrupt data, with a message fit for one line on stderr."""


class CheckpointError(ValueError):
    """A file that is not one of our checkpoints, or whose weights do not fit its spec."""


class StorageError(Exception):
    """The study's storage stopped answering for longer than a worker waits (exit status 3).

    Not a RuntimeError: the search lets a trial's RuntimeError fail that trial and goes on, but a
    lost storage stops the worker."""


class ExportCheckError(RuntimeError):
    """An exported model that does not reproduce the PyTorch logits: never ship it (exit status 1)."""


EXPECTED_ERRORS = (UsageError, SpecError, SpaceError, DataError, CheckpointError)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to `limit`."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0].strip() if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
