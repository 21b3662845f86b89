"""Where training runs: the device a command asked for, its CPU threads, and the hardware in words."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .errors import UsageError


# oneDNN (PyTorch's CPU convolutions and pooling) keeps the kernels it compiled for each layer shape it
# meets, up to 1,024 by default, and a search meets new shapes with nearly every candidate, so a worker's
# memory kept growing. Measured over 1,000 tiny trials in one worker (benchmarks/memory_growth.py,
# docs/results.md): at 1,024 it grew by 182 MiB after the first 100 trials, still rising; at 256 by 62 MiB,
# and trained found/b8000 as fast (one model's training compiles far fewer kernels than that).
# oneDNN reads the variable when it first compiles a kernel, so it is set before any training.
ONEDNN_CACHE_VARIABLE, ONEDNN_CACHE_CAPACITY = "ONEDNN_PRIMITIVE_CACHE_CAPACITY", 256


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    """`auto` (CUDA if available), `cpu` or `cuda`. On a CPU, torch uses `threads` threads (a worker's
    share of the cores), else every core this process may use: set here, once, so that no later call
    undoes a worker's share (two workers on 2 cores with 2 threads each train several times slower)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        os.environ.setdefault(ONEDNN_CACHE_VARIABLE, str(ONEDNN_CACHE_CAPACITY))  # a user's setting wins
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    elif device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins
        torch.set_num_threads(usable_cores())
    return device


def usable_cores() -> int:
    """Cores this process may run on (torch's default can count cores it is not allowed on)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name, and "(AMX)" where it has AMX tiles: two VMs that both call themselves "Intel(R)
    Xeon(R) Processor" trained about 1.6-1.9x apart, and AMX told them apart."""
    amx = " (AMX)" if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() else ""  # no public query
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + amx
    except OSError:
        pass
    return (platform.processor() or platform.machine() or "CPU") + amx


def describe(device: torch.device) -> str:
    """The hardware in words, for every timing a command reports."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_model()}, {usable_cores()} cores, {torch.get_num_threads()} threads"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
