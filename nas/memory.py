"""Memory probes for the benchmark: the process's RSS and peak RSS (Linux), and peak GPU memory."""

from __future__ import annotations

import resource
from pathlib import Path

import torch


def reset_peaks(device: torch.device) -> None:
    """Start a new peak: the process's peak RSS (VmHWM) and, on a GPU, torch's peak allocation."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:  # Linux: "5" resets this process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def status_mb(key: str) -> float | None:
    """A size field of /proc/self/status (`VmRSS`, `VmHWM`, ...) in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """The process's peak RSS in MB since the last `reset_peaks` (since it started, off Linux)."""
    peak = status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device: torch.device, workers: bool = False) -> str:
    """The peak since `reset_peaks`, in words: GPU memory allocated on a GPU, else the process's RSS.

    `workers` adds the largest finished child process (a DataLoader worker, sharing most of its
    pages with the main process); the kernel keeps no per-child peak that could be reset.
    """
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB allocated"
    text = f"peak RSS {peak_rss_mb():,.0f} MB"
    if workers:
        text += f" + workers ({resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MB RSS each at most)"
    return text
