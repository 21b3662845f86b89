"""Built-in sets fetched through torchvision's own dataset classes, bounded in time; a failure is one line.

torchvision is imported only here, only for a download: reading the files needs none of it.
"""

from __future__ import annotations

import socket
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import DataError, first_line

# seconds a download waits for a connection or for the next bytes: torchvision's urllib calls set no
# timeout, so a network that drops packets (or a server that never answers) would hang it for good
DOWNLOAD_TIMEOUT = 20.0


def download(cls_name: str, root: Path, kwargs: dict[str, Any], what: str, by_hand: str) -> None:
    """torchvision.datasets.<cls_name>(root, download=True, **kwargs), within DOWNLOAD_TIMEOUT per network wait.

    A failure leaves no empty folders and is one DataError: `cannot download <what> (<reason>); <by_hand>`."""
    dataset = torchvision_dataset(cls_name)
    made = [p for p in (root, *root.parents) if not p.exists()]
    before = set(_dirs(root))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # process-wide, so only for the download, before any training
    try:
        dataset(root=str(root), download=True, **kwargs)
    except Exception as exc:  # no network, a mirror down or silent, a checksum that does not match
        new = made + [d for d in _dirs(root) if d not in before]
        for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):  # deepest first; a folder with files in it stays
                folder.rmdir()
        raise DataError(f"cannot download {what} ({download_reason(exc)}); {by_hand}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _dirs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_dir()] if root.is_dir() else []


def download_reason(exc: BaseException, limit: int = 50) -> str:
    """Why a download failed, short. torchvision's message is "Error downloading F:" and then, for each mirror,
    "Tried URL, got:" and urllib's error: its last line is the reason ("[Errno 111] Connection refused")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if len(lines) > 1 and lines[0].endswith(":") else first_line(exc, 1000)
    if text.startswith("<urlopen error ") and text.endswith(">"):
        text = text[len("<urlopen error "):-1]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def torchvision_dataset(cls_name: str):
    """A torchvision dataset class, imported only for a download: a torchvision that is missing or built for
    another torch (its import fails with "operator torchvision::nms does not exist") is one DataError line."""
    try:
        import torchvision.datasets as datasets
    except Exception as exc:
        def version(name: str) -> str:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return "(not installed)"
        torch_v, vision_v = version("torch"), version("torchvision")
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torchvision":
            raise DataError(f"--download needs torchvision, which is not installed (torch {torch_v}); "
                            "install it, or place the files by hand") from None
        raise DataError(f"torchvision {vision_v} does not match torch {torch_v}: importing it fails "
                        f"({first_line(exc, 60)}); install the torchvision built for torch {torch_v}") from None
    return getattr(datasets, cls_name)
