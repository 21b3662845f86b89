"""What one timed pipeline measured (Run), and the project's trainer timed (run_ours): shared by the
benchmark, its ablation and the usual pipeline it is compared with."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from ..data import Splits
from ..memory import peak_memory, reset_peaks
from ..spec import Spec
from ..train import Speed, train

WARMUP_IMAGES = 1_024  # a short run before timing: kernels chosen, caches and allocator filled


@dataclass
class Run:
    """What one pipeline measured: per-epoch training seconds and wall seconds, final accuracy, memory."""

    name: str
    images: int  # training images per epoch
    train_seconds: list[float]
    wall_seconds: list[float]  # training + validation
    final_acc: float
    threads: int
    memory: str

    @property
    def images_per_second(self) -> float:
        return self.images * len(self.train_seconds) / sum(self.train_seconds)

    def line(self) -> str:
        return (f"{self.name:<14} {self.images_per_second:>8,.0f} img/s  "
                f"{statistics.fmean(self.wall_seconds):6.2f} s/epoch (training {statistics.fmean(self.train_seconds):.2f} s)  "
                f"val {self.final_acc:.2f} %  {self.threads} thread(s)  {self.memory}")


def run_ours(spec: Spec, data: Splits, epochs: int, seed: int, speed: Speed | None = None,
             name: str = "(a) nas.train", warmup: bool = True) -> Run:
    """(a): optionally a short warm-up run, then `epochs` timed epochs of `nas.train.train`."""
    device = data.train.x.device
    if warmup:
        short = Splits(data.train.first(WARMUP_IMAGES), data.held_out)
        train(spec, short, epochs=1, seed=seed, speed=speed)
    reset_peaks(device)
    marks = [time.perf_counter()]  # one per finished epoch: training + validation, as the search sees it
    result = train(spec, data, epochs=epochs, seed=seed, speed=speed,
                   on_epoch=lambda r: marks.append(time.perf_counter()))
    walls = [b - a for a, b in zip(marks, marks[1:])]
    return Run(name, len(data.train), [r.seconds for r in result.history], walls, result.final_acc,
               torch.get_num_threads(), peak_memory(device))
