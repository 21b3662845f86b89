"""What every command shares: one-line errors, device choice, thread settings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

import torch

from .data import DataError
from .space import SpaceError
from .spec import SpecError


class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit status 2."""


EXPECTED_ERRORS = (UsageError, SpaceError, SpecError, DataError)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def format_duration(seconds: float) -> str:
    """1m05s, 2h03m: short enough for a progress line."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train (auto: CUDA if available)")
    parser.add_argument("--data-dir", help="directory holding MNIST/raw (default: $NAS_DATA_DIR, else ./data)")
    parser.add_argument("--download", action="store_true", help="download MNIST into the data dir if it is missing")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins
        # every core this process may use; torch's default can count cores the process is not allowed on
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return device


def run_main(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Run a command's main(); expected errors become one line on stderr and exit status 2."""
    try:
        code = main(argv)
    except EXPECTED_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
