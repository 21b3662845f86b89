"""Progress on stderr, one way for every command: durations, time left, and a line that is rewritten
in place on a terminal and printed whole elsewhere."""

from __future__ import annotations

import sys
import threading


def format_duration(seconds: float) -> str:
    """1m05s, 2h03m: short enough for a progress line."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def time_left(elapsed: float, done: float, to_do: float) -> float | None:
    """Seconds left at the rate measured so far: `elapsed` seconds for `done` units, `to_do` units to go
    (None: nothing done yet, so no rate)."""
    if done <= 0:
        return None
    return elapsed / done * max(0.0, to_do)


def format_left(seconds: float | None) -> str:
    return "?" if seconds is None else format_duration(seconds)


class StatusLine:
    """One status line on stderr: rewritten in place on a terminal, a new line each time elsewhere.
    Thread-safe (the search's heartbeat and storage threads may report too)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.lock = threading.RLock()
        self._width = 0

    def show(self, line: str, final: bool = False) -> None:
        """Show `line`; `final` keeps it on screen (the next line starts below it)."""
        if self.quiet:
            return
        with self.lock:
            if sys.stderr.isatty():
                print("\r" + line.ljust(self._width), end="\n" if final else "", file=sys.stderr, flush=True)
                self._width = 0 if final else len(line)
            else:
                print(line, file=sys.stderr, flush=True)
