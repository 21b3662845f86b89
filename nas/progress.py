"""Progress on stderr, one way for every command: durations, time left, and a line that is rewritten
in place on a terminal and printed whole elsewhere.

A line is either a string or a list of fields, (rank, text) pairs, each text with its leading separator.
On a terminal StatusLine fits every line to the terminal's width (read at each line, so a resize is
honoured): it leaves out whole fields, the lowest rank first (the later field first among equals), and only
when the fields of rank KEEP alone do not fit does it cut the line, with "…". Elsewhere (a file, a pipe)
every line is printed whole, as a line of its own.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Sequence

KEEP = 100  # a field of this rank (or above) is never left out; a plain string is one such field
Fields = Sequence[tuple[int, str]]


def format_duration(seconds: float) -> str:
    """1m05s, 2h03m: short enough for a progress line (never negative)."""
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def time_left(elapsed: float, done: float, to_do: float) -> float | None:
    """Seconds left at the rate measured so far: `elapsed` seconds for `done` units, `to_do` units to go
    (None: nothing done yet, so no rate). Never negative."""
    if done <= 0:
        return None
    return max(0.0, elapsed) / done * max(0.0, to_do)


def format_left(seconds: float | None) -> str:
    """The time left, or "unknown" when it cannot be told yet."""
    return "unknown" if seconds is None else format_duration(seconds)


def fit(fields: str | Fields, width: int) -> str:
    """The line `fields` make, at most `width` characters: the fields below KEEP left out, lowest rank first,
    until it fits; cut with "…" only if the rest still does not."""
    if isinstance(fields, str):
        fields = [(KEEP, fields)]
    dropped: set[int] = set()

    def joined() -> str:  # a separator left at the start by a field left out goes too
        return "".join(text for i, (_, text) in enumerate(fields) if i not in dropped).lstrip(" |,").rstrip()

    line = joined()
    for index in sorted(range(len(fields)), key=lambda i: (fields[i][0], -i)):
        if len(line) <= width or fields[index][0] >= KEEP:
            break
        dropped.add(index)
        line = joined()
    if len(line) <= width:
        return line
    if width < 1:
        return ""
    cut = line[:width - 1]
    if line[width - 1] != " " and " " in cut:  # not in the middle of a word
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" |,") + "…"


class StatusLine:
    """One status line on stderr: on a terminal, fitted to its width and rewritten in place (the rest of the
    screen line cleared); elsewhere, each line printed whole. Thread-safe (the search's heartbeat and storage
    threads may report too)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.lock = threading.RLock()

    def show(self, line: str | Fields, final: bool = False) -> None:
        """Show `line` (a string, or (rank, text) fields); `final` keeps it on screen (the next line starts
        below it)."""
        if self.quiet:
            return
        with self.lock:
            if sys.stderr.isatty():
                # one column spare: some terminals wrap as soon as the last column is written
                width = shutil.get_terminal_size(fallback=(80, 24)).columns - 1
                print("\r\x1b[K" + fit(line, width), end="\n" if final else "", file=sys.stderr, flush=True)
            else:
                print(fit(line, sys.maxsize), file=sys.stderr, flush=True)
