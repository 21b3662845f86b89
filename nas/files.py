"""The one way this package writes a file: atomically, under a unique temporary name; and the one way
it reads an input file: only a regular file, and only up to a size limit.

A reader (or a crash) never sees half a file, and two writers of the same path never share a
temporary file: each renames its own complete file into place, and the last one wins. A reader never
opens a FIFO (it would wait for a writer forever) or a device such as /dev/zero (it would read until
memory runs out), and never reads more than the limit its kind of file allows.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .errors import UsageError

MiB = 1 << 20
TEXT_LIMIT = 1 * MiB  # a spec file, best.json or a search space: a few KB in practice
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database (an Optuna storage)
# what an earlier output of each kind looks like: its suffixes and the first non-blank bytes it may start with
_KINDS = {"json": ((".json",), (b"{", b"[")), "html": ((".html", ".htm"), (b"<",)),
          "csv": ((".csv",), (b"number,",))}  # nas report --csv: its header starts so


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path`; on success it replaces `path`, on failure it is removed.

    The temporary name keeps `path`'s suffix (torch.export insists on `.pt2`) and starts with a dot.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from a colleague or a web server
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically, creating the parent directory if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2) + "\n")


def check_replaceable(path: str | os.PathLike, kind: str, flag: str = "--out") -> None:
    """Refuse (UsageError) to replace anything but an earlier output of this `kind` ("json", "html", "csv").

    A mistyped `--out` must never destroy what it names: a study's SQLite database or journal, a
    checkpoint, a dataset file. So an existing file is replaced only if its suffix and first bytes are those
    of this kind, and never if it is an SQLite database, whatever its name.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; name a file")
    if not path.exists():
        return
    suffixes, starts = _KINDS[kind]
    head = b""
    if path.is_file():  # never open a FIFO or a device: reading it could block
        with path.open("rb") as f:
            head = f.read(512)
    if head.startswith(SQLITE_HEADER):
        raise UsageError(f"{flag} {path} is an SQLite database (a study's storage?): refusing to overwrite it")
    if not path.is_file() or path.suffix.lower() not in suffixes or not head.lstrip().startswith(starts):
        raise UsageError(f"{flag} {path} exists and is not a {kind.upper()} file this command wrote: "
                         "refusing to overwrite it (name a new file)")


def _not_regular(mode: int) -> str:
    """What a file that is not a regular one is, in words: 'a directory', 'a FIFO' (a named pipe), ..."""
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a file of another kind"


def _check_regular(path: Path, st: os.stat_result, what: str, limit: int, error: type[Exception]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file ({_not_regular(st.st_mode)}), so not a {what}")
    if st.st_size > limit:
        raise error(f"{path}: {st.st_size:,} bytes, more than a {what} may hold ({limit:,} bytes)")


def open_input(path: str | os.PathLike, what: str, limit: int, error: type[Exception] = UsageError,
               hint: str = "") -> BinaryIO:
    """Open `path` for reading in binary, if it is a regular file of at most `limit` bytes; else raise `error`
    (the caller's type: SpecError, SpaceError, CheckpointError, UsageError) in one line naming the file.

    `what` names the kind of file ("spec file"); `hint` is added to the missing file's message. A path
    that is not a regular file (a directory, a FIFO, a device such as /dev/zero, a socket) is refused after
    os.stat, before it is opened: opening a FIFO waits for a writer forever. It is opened with O_NONBLOCK
    and checked again once open (os.fstat), so a FIFO swapped in after the first check opens at once and is
    refused, rather than hanging.
    """
    path = Path(path)
    try:
        _check_regular(path, os.stat(path), what, limit, error)  # follows symlinks: a link to /dev/zero is a device
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise error(f"{path}: no such {what}{hint}") from None
    except OSError as exc:  # permission denied, a name too long, a loop of links, ...
        raise error(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    try:
        _check_regular(path, os.fstat(fd), what, limit, error)  # what was opened, in case the path changed since
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes_file(path: str | os.PathLike, what: str, limit: int, error: type[Exception] = UsageError,
                    hint: str = "") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_input): never more than `limit` are
    read, even from a file that grows while it is read."""
    with open_input(path, what, limit, error, hint) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise error(f"{path}: more than a {what} may hold ({limit:,} bytes)")
    return data


def read_text_file(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT, error: type[Exception] = UsageError,
                   hint: str = "") -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes (see open_input); other bytes raise `error`."""
    data = read_bytes_file(path, what, limit, error, hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start:,} is 0x{data[exc.start]:02x}), so not a {what}") from None
