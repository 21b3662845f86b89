"""Trainer: spec + data -> trained module, reporting each epoch to a callback.

It knows nothing of Optuna: a search stops a trial by raising from `on_epoch`.

Speed: a search is hundreds of short trainings on the same images, so the loop keeps everything on
the device (data, augmentation, running loss and accuracy: no host sync inside an epoch), and
`Speed` holds the device-specific measures that paid off in `python -m nas.bench` (see the README
for what each gained or lost).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment
from .data import Split, Splits
from .model import build
from .spec import Spec, Train

EVAL_BATCH = 256  # CPU: 0.24 s for 5,000 images here against 0.38 s in batches of 1,000-2,000, and less memory
GPU_EVAL_BATCH = 5_000  # a GPU wants big batches: the whole validation split at once
# An epoch whose mean training loss is above this many times ln(classes) (the loss of a uniform guess:
# 2.30 for 10 classes, i.e. 23.0) has exploded, even if it is still finite: nas.train stops it as diverged.
# Measured on 2,048 images, 1-2 epochs: the reference specs and high-LR search candidates stay below 2.35;
# with lr 1000 every reference spec (SGD or AdamW) ends its first epoch at 972 to 1.6e21 and then sits at
# chance (10 %), where its loss (ln 10 again) would no longer tell.
EXPLODED_LOSS_FACTOR = 10.0


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


@dataclass(frozen=True)
class Speed:
    """How the trainer runs on a device. `Speed()` is the plain loop; `speed_for` picks the measured-best settings."""

    channels_last: bool = False  # NHWC activations: faster mkldnn convs and max-pools on CPU, tensor cores on GPU
    amp: torch.dtype | None = None  # autocast dtype (bf16 on a GPU); None = float32 throughout
    fast_dropout: bool = False  # CPU: dropout masks from numpy's 16-bit random integers instead of bernoulli_
    fused_optimizer: bool = False  # the optimizer's fused kernel (one call for all parameters) instead of a loop
    reuse_memory: bool = False  # CPU/glibc: keep freed activations in the heap instead of unmapping them every step
    compile: bool = False  # torch.compile the model, once per architecture (no gain on this CPU; try it on a GPU)
    side_stream: bool = False  # CUDA: train on its own stream, so concurrent trials (--jobs) overlap


def speed_for(device: torch.device | str, *, compile: bool = False, bf16: bool | None = None) -> Speed:
    """The settings the benchmark measured as fastest on `device` without costing accuracy.

    `bf16` says whether the device computes bfloat16 natively (default: asked of CUDA). A CPU trains
    in float32: without bf16 arithmetic, bf16 autocast was slower; with it (AMX, or Zen 4's AVX512-BF16)
    1.1-1.3x faster, but it scored 0.06 lower on average over ten pairs of 15-epoch trainings, too
    near what separates the best designs.
    torch.compile was slower on a CPU after 12-40 s of compiling per architecture.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return Speed(channels_last=True, amp=None, fast_dropout=True, fused_optimizer=True, reuse_memory=True,
                     compile=compile)
    if bf16 is None:
        bf16 = torch.cuda.is_bf16_supported()
    return Speed(channels_last=True, amp=torch.bfloat16 if bf16 else None, fast_dropout=False,
                 fused_optimizer=True, compile=compile, side_stream=True)


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the same distribution, from cheaper random numbers (a CPU measure).

    On a CPU, `bernoulli_` (one draw of torch's Mersenne twister per element) took a fifth to a
    quarter of a training step of the classic design. Here each 64-bit word of numpy's SFC64
    generator (about 3x faster than torch's `random_()`) gives four 16-bit integers, each kept when
    >= a threshold: keep probability (65536 - round(p * 65536)) / 65536, i.e. 1 - p to within 1e-5,
    scaled by 1 / (1 - p) as nn.Dropout. The generator is seeded from torch's when the module is made,
    so a seeded training stays deterministic, and each module has its own (thread-safe) stream.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        self.bits = np.random.SFC64(int(torch.randint(0, 2**62, ())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return torch.zeros_like(x)
        n = x.numel()
        # numpy compares int16 and turns bools into floats 3-10x faster than torch on one CPU thread
        draws = self.bits.random_raw((n + 3) // 4).view(np.int16)[:n]  # uniform on [-32768, 32767]
        keep = draws >= round(self.p * 65536) - 32768
        mask = torch.from_numpy(np.multiply(keep, np.float32(1.0 / (1.0 - self.p)))).to(x.device, x.dtype)
        if x.is_contiguous():
            mask = mask.view(x.shape)
        elif x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):  # mask in x's memory order
            b, c, h, w = x.shape
            mask = mask.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            x, mask = x.contiguous(), mask.view(x.shape)
        return x * mask


def _swap_dropout(model: nn.Module, fast: bool) -> None:
    """Turn every plain nn.Dropout into a FastDropout (fast=True) or back (fast=False); no state changes."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if fast and type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
            elif not fast and type(child) is FastDropout:
                setattr(parent, name, nn.Dropout(child.p, child.inplace))


def make_optimizer(train: Train, model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """The spec's optimizer; `fused` picks its fused kernel (CPU and CUDA), the same update in one call."""
    kernels = {"fused": True} if fused else {}
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=0.9, nesterov=True,
                               weight_decay=train.weight_decay, **kernels)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, **kernels)


def make_scheduler(train: Train, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LR schedule over the whole run, peaking at `train.lr`."""
    if train.schedule == "onecycle":
        # OneCycleLR's warm-up ends at step pct_start * total_steps - 1 and it divides by that: 0 (a
        # ZeroDivisionError) for a 5-step run (a cheap rung or smoke run on ~600 images), so those warm up longer
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total_steps,
                                                   pct_start=0.2 if total_steps != 5 else 0.3)
    if train.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
    elif train.schedule == "step":  # x0.1 at half and at three quarters of the run
        factor = lambda step: 0.1 ** ((step >= total_steps // 2) + (step >= 3 * total_steps // 4))  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of a module's weights: `module` is a copy that holds the average.

    After each optimizer step, `update()` moves every parameter and floating buffer (BN's running
    statistics too) of the copy towards the live one: avg = d·avg + (1 - d)·live, with the decay
    warming up as d = min(decay, (1 + t) / (10 + t)) at update t, so early, random weights fade fast.
    One foreach lerp for all tensors and a decay computed on the host from a counter: no host sync.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).requires_grad_(False)
        pairs = list(zip([*model.parameters(), *model.buffers()], [*self.module.parameters(), *self.module.buffers()]))
        self._live = [live for live, _ in pairs if live.is_floating_point()]
        self._average = [avg for live, avg in pairs if live.is_floating_point()]
        self._counters = [(live, avg) for live, avg in pairs if not live.is_floating_point()]  # BN's batch count

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        torch._foreach_lerp_(self._average, self._live, 1.0 - decay)

    @torch.no_grad()
    def copy_counters(self) -> None:
        """Copy the integer buffers (not averaged), so the average's state_dict is complete."""
        for live, avg in self._counters:
            avg.copy_(live)


_heap_tuned = False


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` (N, C, H, W) in channels-last memory order, with channels-last strides even for one channel.

    For C = 1 both orders hold the same bytes, and `contiguous(memory_format=channels_last)` keeps the
    NCHW strides; a convolution reads the layout from the strides, so a 1x1 conv on such an image writes
    NCHW, and every layer up to the next multi-channel conv runs in NCHW, its backward converting layouts
    (1.14x the epoch time of a design opening with a 1x1 conv, on one CPU thread). The strides are set
    without a copy.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1 and x.stride(1) != 1:
        x = x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
    return x


def _reuse_freed_memory() -> None:
    """Ask glibc to serve allocations below 64 MB from the heap and to keep up to 256 MB freed there.

    By default a freed multi-megabyte activation goes back to the OS and the next step faults its
    pages in again (~25 page faults per image here); kept, they are reused. Process-wide and once: the
    memory stays with the process, as it would with jemalloc or tcmalloc. No-op off glibc.
    """
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _sync(device: torch.device) -> None:
    """Wait for the work this thread queued (its current stream), so that a host clock measures it."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def eval_batch_size(device: torch.device) -> int:
    return GPU_EVAL_BATCH if device.type == "cuda" else EVAL_BATCH


def split_batches(split: Split, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch):
        yield split.x[start:start + batch], split.y[start:start + batch]


@torch.no_grad()
def confusion(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              *, amp: torch.dtype | None = None) -> torch.Tensor:
    """counts[true, predicted] over (images, labels) batches, on the batches' device: the one accuracy pass.

    Runs the model in eval mode (optionally under autocast, as it was trained) and restores its mode.
    No host sync: the caller reads the counts when it needs them.
    """
    was_training = model.training
    model.eval()
    counts = None
    for x, y in batches:
        with _autocast(x.device, amp):
            logits = model(x)
        classes = logits.shape[1]
        predicted = logits.argmax(1)
        batch_counts = torch.bincount(y * classes + predicted, minlength=classes * classes)
        counts = batch_counts if counts is None else counts + batch_counts
    model.train(was_training)
    if counts is None:
        raise ValueError("confusion: no batches")
    return counts.view(classes, classes)


def evaluate(model: nn.Module, split: Split, *, amp: torch.dtype | None = None) -> float:
    """Accuracy in % on a split, in batches sized for its device."""
    device = split.y.device
    counts = confusion(model, split_batches(split, eval_batch_size(device)), amp=amp)
    return 100.0 * counts.diagonal().sum().item() / len(split)  # one host-device sync per evaluation


def train(spec: Spec, data: Splits, *, epochs: int = 15, seed: int = 0,
          on_epoch: Callable[[EpochResult], None] | None = None, speed: Speed | None = None) -> TrainResult:
    """Train `spec` on `data.train` with its schedule for `epochs` epochs, measuring `data.held_out` each epoch.

    The model lives on the data's device. `on_epoch` may raise to stop training early. `speed`
    defaults to `speed_for(device)`; the returned model is plain `build(spec)` (standard memory
    format and modules) whatever the settings. With `spec.train.ema` > 0 the held-out accuracy of
    every epoch and the returned model are those of the averaged weights (`WeightAverage`).
    """
    device = data.train.x.device
    speed = speed_for(device) if speed is None else speed
    if speed.reuse_memory and device.type == "cpu":
        _reuse_freed_memory()
    torch.manual_seed(seed)
    model = build(spec).to(device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # copied before dropout is swapped: the average is evaluated and returned, never trained, so it keeps nn.Dropout
    average = WeightAverage(model, spec.train.ema) if spec.train.ema > 0 else None
    if speed.fast_dropout:
        _swap_dropout(model, fast=True)
    opt = make_optimizer(spec.train, model, fused=speed.fused_optimizer)
    n, batch = len(data.train), spec.train.batch_size
    steps = math.ceil(n / batch)
    sched = make_scheduler(spec.train, opt, epochs * steps)
    chance_loss = math.log(max(2, spec.arch.num_classes))  # cross-entropy of a uniform guess
    forward = torch.compile(model) if speed.compile else model
    result = TrainResult(average.module if average is not None else model)
    stream = torch.cuda.Stream(device) if speed.side_stream and device.type == "cuda" else None
    if stream is not None:  # the data was written on the default stream
        stream.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            for epoch in range(1, epochs + 1):
                _sync(device)
                start = time.perf_counter()
                model.train()
                order = torch.randperm(n, device=device)
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), dtype=torch.int64, device=device)
                for i in range(steps):
                    idx = order[i * batch:(i + 1) * batch]
                    x, y = augment(data.train.x[idx], spec.train, data.train.background), data.train.y[idx]
                    if speed.channels_last:
                        x = channels_last(x)
                    with _autocast(device, speed.amp):
                        logits = forward(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=spec.train.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    if average is not None:
                        average.update()
                    # accumulate on the device: no host sync inside the loop
                    loss_sum += loss.detach() * len(y)
                    correct += (logits.detach().argmax(1) == y).sum()
                train_loss, train_acc = loss_sum.item() / n, 100.0 * correct.item() / n
                _sync(device)
                seconds = time.perf_counter() - start
                if not math.isfinite(train_loss) or train_loss > EXPLODED_LOSS_FACTOR * chance_loss:
                    raise FloatingPointError(f"training diverged in epoch {epoch} (mean training loss {train_loss:.4g}, "
                                             f"a uniform guess scores {chance_loss:.2f})")
                if average is not None:
                    average.copy_counters()
                eval_acc = evaluate(forward if average is None else average.module, data.held_out, amp=speed.amp)
                record = EpochResult(epoch, epochs, train_loss, train_acc, eval_acc, seconds)
                result.history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
    finally:
        if stream is not None:  # later users of the model are on the default stream
            torch.cuda.current_stream(device).wait_stream(stream)
        _swap_dropout(model, fast=False)
        model.to(memory_format=torch.contiguous_format)
        if average is not None:
            average.module.to(memory_format=torch.contiguous_format)
    return result
