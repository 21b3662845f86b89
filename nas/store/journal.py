"""Optuna's journal file (`<study>.journal`, the storage of `--jobs N` studies), never written after a
torn line.

A crash or a full disk can cut a journal's last record (bytes without their newline), and the next
append would glue its record onto them: one invalid line in the middle of the file that every later
read fails on. `JournalFile` checks the tail, under the journal's own lock, when the journal is opened
and before every append: a cut record is moved to `<journal>.torn-<UTC time>` and the journal cut back
to its last whole line (a record that lacks only its newline gets it), and one line on stderr says so.
An append that the disk cuts is taken back.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

log = logging.getLogger(__name__)


@contextmanager
def _locked(lock: JournalFileSymlinkLock) -> Iterator[None]:
    """Hold a journal's lock: the one Optuna's JournalFileBackend takes around every append."""
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class JournalFile(JournalFileBackend):
    """Optuna's journal file backend (the same file, format and lock), never written after a torn line.

    - Opening it repairs a torn tail: if the file does not end in a newline, its lock is taken (a worker
      in the middle of an append finishes first), the tail is looked at again, and the bytes after the
      last newline are moved to `<journal>.torn-<UTC time>` and cut off; a tail that is a whole record
      and lacks only its newline gets the newline instead. One line on stderr says what was done. If it
      cannot be done (a read-only file, a full disk), reading still works: Optuna skips a torn last line.
    - Every append checks the tail the same way under the lock before it writes, so a journal that a
      crash cut while this process had it open is repaired too, or the append fails: it never glues.
    - An append that the disk cuts (a full disk, a file size limit) is taken back to where it started,
      and the error raised: the file is left ending in a whole line.
    """

    def __init__(self, file_path: str) -> None:
        self._journal_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self._journal_lock)
        try:
            if _torn(self._file_path):  # checked without the lock first: a whole journal takes none
                with _locked(self._journal_lock):
                    _repair(self._file_path)
        except OSError as exc:
            log.debug("could not repair %s now (%s); it is read without its torn tail", file_path, exc)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode("utf-8")
        with _locked(self._journal_lock):
            _repair(self._file_path)
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            try:
                start, written = os.fstat(fd).st_size, 0
                try:
                    while written < len(data):
                        written += os.write(fd, data[written:])
                except BaseException:
                    if written:
                        try:
                            os.ftruncate(fd, start)  # never leave a torn line; the next append's check is the fallback
                        except OSError:
                            pass
                    raise
                os.fsync(fd)
            finally:
                os.close(fd)


def _torn(path: str) -> bool:
    """Whether the file at `path` is non-empty and does not end in a newline."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        return f.read(1) != b"\n"


def _repair(path: str) -> None:
    """Make the journal at `path` end in a whole line (its lock held): the bytes after its last newline
    are moved to a side file, or get their newline if they are a whole record. Says so on stderr."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end = _after_last_newline(f, size)
        f.seek(end)
        tail = f.read()
        if _whole_record(tail):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            print(f"nas: repaired {path}: its last record lacked its newline (cut by a crash or a full disk); "
                  "added it", file=sys.stderr, flush=True)
            return
        side = _save_aside(path, tail)  # kept before anything is cut: nothing is lost
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    print(f"nas: repaired {path}: a torn last record ({len(tail)} bytes, cut by a crash or a full disk) moved to "
          f"{side}", file=sys.stderr, flush=True)


def _after_last_newline(f, size: int, chunk: int = 1 << 16) -> int:
    """The offset just after the last b"\\n" of the open file `f` of `size` bytes (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _whole_record(tail: bytes) -> bool:
    """Whether `tail` is one whole journal record (a JSON object with an op code), only its newline missing.
    A cut record never is: its closing brace is its last byte."""
    try:
        record = json.loads(tail)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _save_aside(path: str, tail: bytes) -> str:
    """Write a journal's torn tail to `<path>.torn-<UTC time>` (a new file, synced); returns its path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        side = f"{path}.torn-{stamp}" + (f"-{n}" if n else "")
        try:
            fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            view = memoryview(tail)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(side)
            raise
        os.close(fd)
        try:  # the new name itself survives a crash before the journal is cut
            dir_fd = os.open(os.path.dirname(os.path.abspath(side)), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        return side
    raise OSError(errno.EEXIST, "no free name for a torn journal record", f"{path}.torn-{stamp}")
