"""SIGINT and SIGTERM in a search: the first one stops the work in hand cleanly (the running trial is
stored as failed/interrupted, a worker's processes are told once), a second one exits at once."""

from __future__ import annotations

import os
import signal
from typing import Callable


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_signals(first: Callable[[int], None]) -> None:
    """SIGINT and SIGTERM: `first(signum)` the first time; a second one exits at once."""
    seen: list[int] = []

    def handler(signum: int, frame) -> None:
        if seen:
            os._exit(128 + seen[0])
        seen.append(signum)
        first(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def raise_interrupted(signum: int) -> None:
    raise Interrupted(signum)


def interruptible(call: Callable[[], int]) -> int:
    """`call()` with SIGINT/SIGTERM raising Interrupted: its exit status, or 128 + the signal's number."""
    on_signals(raise_interrupted)
    try:
        return call()
    except Interrupted as exc:
        return 128 + exc.signum
