"""Trainer: spec + data -> trained module, reporting each epoch to a callback.

It knows nothing of Optuna: a search stops a trial by raising from `on_epoch`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .augment import random_affine
from .data import Split, Splits
from .model import build
from .spec import Spec, Train

EVAL_BATCH = 2_000


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float  # % on the augmented training batches, running over the epoch
    eval_acc: float  # % on the held-out split
    seconds: float  # training time of the epoch, evaluation excluded


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochResult] = field(default_factory=list)

    @property
    def final_acc(self) -> float:
        """Held-out accuracy after the last epoch that ran (never the best epoch)."""
        return self.history[-1].eval_acc


def make_optimizer(train: Train, model: nn.Module) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=0.9, nesterov=True,
                               weight_decay=train.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def make_scheduler(train: Train, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LR schedule over the whole run, peaking at `train.lr`."""
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total_steps, pct_start=0.2)
    if train.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
    elif train.schedule == "step":  # x0.1 at half and at three quarters of the run
        factor = lambda step: 0.1 ** ((step >= total_steps // 2) + (step >= 3 * total_steps // 4))  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> float:
    """Accuracy in % on a split, in large batches."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=split.y.device)
    for start in range(0, len(split), EVAL_BATCH):
        logits = model(split.x[start:start + EVAL_BATCH])
        correct += (logits.argmax(1) == split.y[start:start + EVAL_BATCH]).sum()
    model.train(was_training)
    return 100.0 * correct.item() / len(split)  # one host-device sync per evaluation


def train(spec: Spec, data: Splits, *, epochs: int = 15, seed: int = 0,
          on_epoch: Callable[[EpochResult], None] | None = None) -> TrainResult:
    """Train `spec` on `data.train` with its schedule for `epochs` epochs, measuring `data.held_out` each epoch.

    The model lives on the data's device. `on_epoch` may raise to stop training early.
    """
    device = data.train.x.device
    torch.manual_seed(seed)
    model = build(spec).to(device)
    opt = make_optimizer(spec.train, model)
    n, batch = len(data.train), spec.train.batch_size
    steps = math.ceil(n / batch)
    sched = make_scheduler(spec.train, opt, epochs * steps)
    result = TrainResult(model)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            x, y = random_affine(data.train.x[idx], spec.train.augment), data.train.y[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=spec.train.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            # accumulate on the device: no host sync inside the loop
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        train_loss, train_acc = loss_sum.item() / n, 100.0 * correct.item() / n
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged in epoch {epoch} (loss {train_loss})")
        record = EpochResult(epoch, epochs, train_loss, train_acc, evaluate(model, data.held_out), seconds)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return result
