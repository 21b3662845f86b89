"""Every error type of the package, and how one is told in one line. Imports nothing of `nas`.

A command turns the *expected* errors into one line on stderr and an exit status of their own
(nas/cli.py run_script): bad input, missing or corrupt files 2; a storage that stopped answering 3;
a full disk 4. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Iterator


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


class DiskFull(Exception):
    """A disk that is full (ENOSPC) or over its quota (EDQUOT), at `path` when it is known (exit status 4).

    Not an OSError: the storage's retry loop waits out an OSError, and a full disk does not empty itself
    while it waits."""

    def __init__(self, path: str | None, reason: str = "No space left on device") -> None:
        super().__init__(f"disk full at {path} ({reason})" if path else f"disk full ({reason})")
        self.path, self.reason = path, reason


class ExportCheckError(RuntimeError):
    """An exported model that does not reproduce the PyTorch logits: never ship it (exit status 1)."""


EXPECTED_ERRORS = (UsageError, SpecError, SpaceError, DataError, CheckpointError)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
POSTGRES_DISK_FULL = "53100"  # the SQLSTATE of PostgreSQL's disk_full: the server's own disk


def chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it (`__cause__` and `__context__`, even a suppressed one: a
    `raise ... from None` hides the cause from the traceback, not from us), nearest first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def disk_full(exc: BaseException, path: str | None = None) -> DiskFull | None:
    """The DiskFull behind `exc`, if a full disk is what went wrong: an OSError ENOSPC or EDQUOT, SQLite's
    SQLITE_FULL ("database or disk is full") or PostgreSQL's disk_full, anywhere in its chain. `path`: where,
    when the error itself does not say (SQLite's errors name no file); else None."""
    for e in chain(exc):
        if isinstance(e, DiskFull):
            return e if e.path or not path else DiskFull(path, e.reason)
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return DiskFull(e.filename or path, e.strerror or first_line(e))
        if isinstance(e, sqlite3.Error) and (getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                                             or "database or disk is full" in str(e)):
            return DiskFull(path, "database or disk is full")
        if getattr(e, "sqlstate", None) == POSTGRES_DISK_FULL:  # psycopg's DiskFull
            return DiskFull(path or "the database server", first_line(e))
    return None


def root_cause(exc: BaseException) -> BaseException:
    """The exception that started it all: the last one of `exc`'s chain that is not a wrapper (the
    storage's StorageInternalError, our StorageError) nor an error of Optuna's own handling of it
    (optuna#5280: its `_run_trial` raises UnboundLocalError or AssertionError when a trial's result
    cannot be stored). `exc` itself if there is no other."""
    wrappers = ("StorageInternalError", "StorageError", "UnboundLocalError", "AssertionError")
    found = [e for e in chain(exc) if type(e).__name__ not in wrappers]
    return found[-1] if found else exc


def cause_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of `exc`'s root cause, without SQLAlchemy's "(driver.Error) " prefix."""
    text = first_line(root_cause(exc), limit)
    return text[text.index(") ") + 2:] if text.startswith("(") and ") " in text[:80] else text


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to `limit`."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0].strip() if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
