"""`python -m nas.bench`: the project's trainer against the pipeline people usually write, in one run.

(a) `nas.train.train`: MNIST held in tensors on the device, batched augmentation, `speed_for(device)`.
(b) the usual pipeline: `torchvision.datasets.MNIST` + `DataLoader` (batch from the spec, shuffle,
    2 workers) + per-sample PIL transforms (`RandomAffine` with the same ranges as (a)'s augmentation,
    `ToTensor`, `Normalize`), the same model (same initial weights), optimizer and LR schedule.
Both train on the same 55,000 images and validate on the same 5,000 (`nas.data.search_split`).
Each is warmed up on a short run first. The last line is `ratio X`: (a)'s images/s over (b)'s.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import MAX_DEGREES, MAX_SCALE, MAX_SHIFT
from .cli import Parser, UsageError, add_device_args, positive_int, resolve_device, run_main
from .cost import count_params
from .data import MEAN, STD, Split, Splits, check_raw_files, load_search_data, resolve_data_dir, search_split
from .model import build
from .spec import Arch, Spec, Train, load_spec
from .train import Speed, TrainResult, make_optimizer, make_scheduler, speed_for, train

# The classic hand-made final design (7,416 parameters), fixed here so the benchmark does not move
# when the search spaces or reference files change.
DEFAULT_SPEC = Spec(
    Arch(stages=((8, 16), (16, 16, 16)), transition="1x1_pool", transition_width=8, padding="valid",
         head="gap_conv", batch_norm=True, dropout=0.05),
    Train(optimizer="sgd", lr=0.05, schedule="onecycle", batch_size=128, label_smoothing=0.0,
          weight_decay=1e-4, augment=0.5),
)
USUAL_WORKERS = 2  # what the tutorials use
USUAL_EVAL_BATCH = 1_000
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.bench", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=positive_int, default=2, help="timed epochs per pipeline (default: 2)")
    p.add_argument("--spec", help="spec file to train (default: the classic 7,416-parameter design)")
    p.add_argument("--subset", type=positive_int, help="train on only this many training images (smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of both trainings (same initial weights)")
    p.add_argument("--threads", type=positive_int,
                   help="intra-op threads for the project's trainer (default: every core, as the CLIs set)")
    p.add_argument("--speed", help="change (a)'s settings, e.g. channels_last=0,reuse_memory=0 (see nas.train.Speed)")
    p.add_argument("--ablation", action="store_true",
                   help="instead: time the project's trainer with each speed setting switched in turn")
    p.add_argument("--rounds", type=positive_int, default=3, help="--ablation: interleaved rounds per variant")
    add_device_args(p)
    return p.parse_args(argv)


# --- memory ---------------------------------------------------------------------------------------

def _reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:  # Linux: "5" resets this process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")  # since the last reset
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(device: torch.device, workers: bool = False) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB allocated"
    text = f"peak RSS {_peak_rss_mb():,.0f} MB"
    if workers:  # the largest finished child: a DataLoader worker, sharing most pages with the main process
        text += f" + workers ({resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MB RSS each at most)"
    return text


# --- (a) the project's trainer --------------------------------------------------------------------

def run_ours(spec: Spec, data: Splits, epochs: int, seed: int, speed: Speed | None = None, name: str = "(a) nas.train",
             warmup: bool = True) -> Run:
    device = data.train.x.device
    if warmup:
        short = Splits(Split(data.train.x[:WARMUP_IMAGES], data.train.y[:WARMUP_IMAGES]), data.held_out)
        train(spec, short, epochs=1, seed=seed, speed=speed)
    _reset_peaks(device)
    marks = [time.perf_counter()]  # one per finished epoch: training + validation, as the search sees it
    result = train(spec, data, epochs=epochs, seed=seed, speed=speed, on_epoch=lambda r: marks.append(time.perf_counter()))
    walls = [b - a for a, b in zip(marks, marks[1:])]
    return Run(name, len(data.train), [r.seconds for r in result.history], walls, result.final_acc,
               torch.get_num_threads(), _memory(device))


# --- (b) the usual pipeline -----------------------------------------------------------------------

def usual_datasets(data_dir: Path, spec: Spec, subset: int | None):
    """The 55k/5k split as torchvision datasets with per-sample PIL transforms."""
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    check_raw_files(data_dir)
    s = spec.train.augment
    normalize = [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]
    # the same distribution as nas.augment.random_affine (rotation, shift and scale, bilinear, black fill)
    augment = [transforms.RandomAffine(degrees=MAX_DEGREES * s, translate=(MAX_SHIFT * s, MAX_SHIFT * s),
                                       scale=(1 - MAX_SCALE * s, 1 + MAX_SCALE * s),
                                       interpolation=transforms.InterpolationMode.BILINEAR)] if s > 0 else []
    train_set = datasets.MNIST(str(data_dir), train=True, transform=transforms.Compose(augment + normalize))
    val_set = datasets.MNIST(str(data_dir), train=True, transform=transforms.Compose(normalize))
    train_idx, val_idx = search_split(len(train_set), subset)
    return Subset(train_set, train_idx.tolist()), Subset(val_set, val_idx.tolist())


def usual_train(spec: Spec, train_set, val_set, device: torch.device, epochs: int, seed: int) -> tuple[list[float], list[float], float]:
    """The textbook loop. Returns (training seconds per epoch, wall seconds per epoch, final val accuracy)."""
    from torch.utils.data import DataLoader

    pin = device.type == "cuda"
    loader = DataLoader(train_set, batch_size=spec.train.batch_size, shuffle=True, num_workers=USUAL_WORKERS, pin_memory=pin)
    val_loader = DataLoader(val_set, batch_size=USUAL_EVAL_BATCH, num_workers=USUAL_WORKERS, pin_memory=pin)
    torch.manual_seed(seed)
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
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        acc = 100.0 * correct / len(val_set)
        wall_seconds.append(train_seconds[-1] + clock.lap())
        if not math.isfinite(running_loss):
            raise FloatingPointError("the usual pipeline diverged")
    return train_seconds, wall_seconds, acc


class _Clock:
    """Seconds since the last lap: CUDA events on a GPU (synchronised at each lap), else the host clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.last = self._mark()

    def _mark(self):
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
    from torch.utils.data import Subset

    train_set, val_set = usual_datasets(data_dir, spec, subset)
    usual_train(spec, Subset(train_set, range(min(WARMUP_IMAGES, len(train_set)))), val_set, device, 1, seed)
    _reset_peaks(device)
    train_seconds, wall_seconds, acc = usual_train(spec, train_set, val_set, device, epochs, seed)
    return Run("(b) DataLoader", len(train_set), train_seconds, wall_seconds, acc, torch.get_num_threads(),
               _memory(device, workers=True))


# --- the command ----------------------------------------------------------------------------------

def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU") if Path("/proc/cpuinfo").exists() else "CPU"
    return f"{model}, {os.cpu_count()} cores"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _concurrent(spec: Spec, data: Splits, epochs: int, seed: int, jobs: int, speed: Speed) -> tuple[float, float]:
    """`jobs` trainings at once in threads, as `nas.search --jobs`: (images/s of all together, last accuracy)."""
    results: list[TrainResult | None] = [None] * jobs

    def work(k: int) -> None:
        results[k] = train(spec, data, epochs=epochs, seed=seed + k, speed=speed)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in results):
        raise RuntimeError("a concurrent training failed (see above)")
    return sum(len(data.train) * epochs / sum(e.seconds for e in r.history) for r in results), results[-1].final_acc


def ablation(spec: Spec, data: Splits, epochs: int, seed: int, rounds: int, threads: int, best: Speed) -> None:
    """Time the trainer with each of `best`'s settings switched in turn, interleaved over rounds."""
    device = data.train.x.device
    cores = os.cpu_count() or 1
    variants: dict[str, tuple[Speed | None, int]] = {"(a) settings": (best, threads)}  # (settings, threads)
    # reuse_memory is left out: once set, a process cannot unset it (compare two runs with --speed instead)
    for name in ("channels_last", "fast_dropout", "fused_optimizer", "compile"):
        on = getattr(best, name)
        variants[f"{'-' if on else '+'} {name}"] = (replace(best, **{name: not on}), threads)
    variants["- amp" if best.amp else "+ amp bf16"] = (replace(best, amp=None if best.amp else torch.bfloat16), threads)
    variants["plain loop: Speed()"] = (Speed(), threads)
    if device.type == "cpu":
        for other in sorted({1, cores} - {threads}):
            variants[f"{other} thread(s)"] = (best, other)
    each = max(1, cores // 2) if device.type == "cpu" else threads
    variants[f"2 at once, {each} thread(s) each"] = (None, each)  # as nas.search --jobs 2
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    accs: dict[str, float] = {}
    for r in range(rounds):
        for name, (speed, n_threads) in variants.items():
            torch.set_num_threads(n_threads)
            start = time.perf_counter()
            if speed is None:
                ips, accs[name] = _concurrent(spec, data, epochs, seed, 2, best)
            else:
                run = run_ours(spec, data, epochs, seed, speed, name, warmup=(r == 0))
                ips, accs[name] = run.images_per_second, run.final_acc
            speeds[name].append(ips)
            if r == 0 and speed is not None and speed.compile:
                print(f"{name}: first run (warm-up, compiles, {epochs} epoch(s)) took {time.perf_counter() - start:.1f} s",
                      flush=True)
    torch.set_num_threads(threads)
    base = statistics.median(speeds["(a) settings"])
    print(f"{'variant':<30} {'img/s':>7} {'vs first':>8}  {'rounds (img/s)':<24} val acc")
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"{name:<30} {median:>7,.0f} {median / base:>7.2f}x  {' '.join(f'{v:,.0f}' for v in values):<24} {accs[name]:.2f} %")


def parse_speed(text: str, base: Speed) -> Speed:
    """`--speed channels_last=0,amp=bf16`: (a)'s settings with some changed."""
    names = [f.name for f in fields(Speed)]
    changes: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        value = value.strip().lower()
        if key.strip() not in names:
            raise UsageError(f"--speed: unknown setting {key.strip()!r} (one of {', '.join(names)})")
        if key.strip() == "amp":
            if value not in _AMP:
                raise UsageError(f"--speed: amp must be one of {', '.join(_AMP)}, not {value!r}")
            changes["amp"] = _AMP[value]
        elif value in _BOOL:
            changes[key.strip()] = _BOOL[value]
        else:
            raise UsageError(f"--speed: {key.strip()} must be 0 or 1, not {value!r}")
    return replace(base, **changes)


_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_BOOL = {"0": False, "1": True, "false": False, "true": True, "off": False, "on": True}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.spec) if args.spec else DEFAULT_SPEC
    device = resolve_device(args.device)
    speed = parse_speed(args.speed or "", speed_for(device))
    default_threads = torch.get_num_threads()
    threads = args.threads or default_threads
    data_dir = resolve_data_dir(args.data_dir)
    data = load_search_data(data_dir, device, args.subset, args.download)  # checks (or downloads) MNIST first
    rss = _status_mb("VmRSS")  # torch, torchvision and (a)'s data loaded: the floor of both peaks below
    print(f"nas.bench on {_hardware(device)}, device {device}, torch {torch.__version__}, load {_load()}"
          + (f", process RSS {rss:,.0f} MB before training" if rss is not None else ""))
    print(f"model {spec.code} ({count_params(build(spec)):,} params), {len(data.train):,} training / "
          f"{len(data.held_out):,} validation images, {args.epochs} timed epoch(s) after a warm-up")
    print(f"(a) settings: {speed}", flush=True)
    if args.ablation:
        ablation(spec, data, args.epochs, args.seed, args.rounds, threads, speed)
        print(f"load after: {_load()}")
        return 0
    # (b) first, in the process as torch starts it (default threads, default allocator settings);
    # (a)'s tensors are freed meanwhile, so neither pipeline's peak memory holds the other's data
    del data
    usual = run_usual(spec, data_dir, device, args.epochs, args.seed, args.subset)
    data = load_search_data(data_dir, device, args.subset)
    torch.set_num_threads(threads)
    ours = run_ours(spec, data, args.epochs, args.seed, speed)
    print(ours.line())
    print(usual.line())
    print(f"load after: {_load()}")
    print(f"ratio {ours.images_per_second / usual.images_per_second:.2f}")
    return 0


if __name__ == "__main__":
    run_main("nas.bench", main)
