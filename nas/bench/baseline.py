"""The pipeline people usually write, for `nas bench` to measure the project's trainer against.

`torchvision.datasets.MNIST` + `DataLoader` (the spec's batch size, shuffled, 2 workers) + per-sample
PIL transforms (`RandomAffine` with the same ranges as `nas.augment`, `ToTensor`, `Normalize`), the
textbook loop with `loss.item()` per step, and validation through a `DataLoader` of 1,000 images.
It trains the same model (same initial weights for a seed), optimizer and LR schedule as
`nas.train.train`, on the same 55,000 / 5,000 split (`nas.data.search_split`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from .timing import WARMUP_IMAGES, Run
from ..data import MEAN, STD, check_raw_files, search_split
from ..memory import peak_memory, reset_peaks
from ..model import build
from ..spec import Spec
from ..train import confusion, make_optimizer, make_scheduler

USUAL_WORKERS = 2  # what the tutorials use
USUAL_EVAL_BATCH = 1_000


def usual_datasets(data_dir: Path, spec: Spec, subset: int | None) -> tuple[Subset, Subset]:
    """The search split (training, validation) as torchvision datasets with per-sample PIL transforms."""
    check_raw_files(data_dir, train=True)
    t = spec.train
    normalize = [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]
    # the same distribution as nas.augment.random_affine (rotation, shift and scale, bilinear, black fill)
    augment = [transforms.RandomAffine(degrees=t.rotation, translate=(t.shift, t.shift),
                                       scale=(1 - t.scale, 1 + t.scale),
                                       interpolation=transforms.InterpolationMode.BILINEAR)
               ] if max(t.rotation, t.shift, t.scale) > 0 else []
    train_set = datasets.MNIST(str(data_dir), train=True, transform=transforms.Compose(augment + normalize))
    val_set = datasets.MNIST(str(data_dir), train=True, transform=transforms.Compose(normalize))
    train_idx, val_idx = search_split(len(train_set), subset)
    return Subset(train_set, train_idx.tolist()), Subset(val_set, val_idx.tolist())


def usual_train(spec: Spec, train_set: Dataset, val_set: Dataset, device: torch.device, epochs: int,
                seed: int) -> tuple[list[float], list[float], float]:
    """The textbook loop. Returns (training seconds per epoch, wall seconds per epoch, final val accuracy %)."""
    pin = device.type == "cuda"
    loader = DataLoader(train_set, batch_size=spec.train.batch_size, shuffle=True, num_workers=USUAL_WORKERS,
                        pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=USUAL_EVAL_BATCH, num_workers=USUAL_WORKERS, pin_memory=pin)
    torch.manual_seed(seed)  # as nas.train.train: the same initial weights
    model = build(spec).to(device)
    opt = make_optimizer(spec.train, model)  # torch's default kernels, as usually written
    sched = make_scheduler(spec.train, opt, epochs * len(loader))
    train_seconds, wall_seconds, acc = [], [], 0.0
    for _ in range(epochs):
        clock = _Clock(device)
        model.train()
        running_loss = 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=spec.train.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running_loss += loss.item()  # as the tutorials do (on a GPU, a host sync per step)
        train_seconds.append(clock.lap())
        # the project's one accuracy pass, fed by the DataLoader, so (a) and (b) count correct alike
        counts = confusion(model, ((x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                                   for x, y in val_loader))
        acc = 100.0 * counts.diagonal().sum().item() / counts.sum().item()
        wall_seconds.append(train_seconds[-1] + clock.lap())
        if not math.isfinite(running_loss):
            raise FloatingPointError("the usual pipeline diverged")
    return train_seconds, wall_seconds, acc


class _Clock:
    """Seconds since the last lap: CUDA events on a GPU (synchronised at each lap), else the host clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.last = self._mark()

    def _mark(self) -> torch.cuda.Event | float:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def lap(self) -> float:
        now = self._mark()
        if self.cuda:
            now.synchronize()
            seconds = self.last.elapsed_time(now) / 1000
        else:
            seconds = now - self.last
        self.last = now
        return seconds


def run_usual(spec: Spec, data_dir: Path, device: torch.device, epochs: int, seed: int, subset: int | None) -> Run:
    """(b): a short warm-up run, then `epochs` timed epochs of the usual pipeline."""
    train_set, val_set = usual_datasets(data_dir, spec, subset)
    usual_train(spec, Subset(train_set, range(min(WARMUP_IMAGES, len(train_set)))), val_set, device, 1, seed)
    reset_peaks(device)
    train_seconds, wall_seconds, acc = usual_train(spec, train_set, val_set, device, epochs, seed)
    return Run("(b) DataLoader", len(train_set), train_seconds, wall_seconds, acc, torch.get_num_threads(),
               peak_memory(device, workers=True))
