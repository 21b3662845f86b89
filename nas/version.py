"""What produced a result: the package version, and the git commit when it runs from a checkout."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"
_CHECKOUT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def commit() -> str | None:
    """The checkout's commit (with `-dirty` when files differ from it), or None for an installed package."""
    if not (_CHECKOUT / ".git").exists() or not (_CHECKOUT / "pyproject.toml").is_file():
        return None
    try:
        head = subprocess.run(["git", "-C", str(_CHECKOUT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(_CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance() -> dict[str, str | None]:
    """The fields that best.json and metrics.json record about the code that wrote them."""
    return {"version": __version__, "commit": commit()}
