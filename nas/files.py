"""The one way this package writes a file: atomically, under a unique temporary name.

A reader (or a crash) never sees half a file, and two writers of the same path never share a
temporary file: each renames its own complete file into place, and the last one wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database (an Optuna storage)
# what an earlier output of each kind looks like: its suffixes and the first non-blank bytes it may start with
_KINDS = {"json": ((".json",), (b"{", b"[")), "html": ((".html", ".htm"), (b"<",))}


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
    """Refuse (UsageError) to replace anything but an earlier output of this `kind` ("json" or "html").

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
