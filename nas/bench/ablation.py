"""`nas bench --ablation`: the project's trainer with each speed setting switched in turn, and `--speed`."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import fields, replace

import torch

from .timing import run_ours
from ..data import Splits
from ..device import usable_cores
from ..errors import UsageError
from ..spec import Spec
from ..train import Speed, TrainResult, train


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
    if any(r is None for r in results):  # a thread's exception is printed by threading, not raised here
        raise RuntimeError("a concurrent training failed (see above)")
    return sum(len(data.train) * epochs / sum(e.seconds for e in r.history) for r in results), results[-1].final_acc


def ablation(spec: Spec, data: Splits, epochs: int, seed: int, rounds: int, threads: int, best: Speed) -> None:
    """Print the trainer's images/s with each of `best`'s settings switched in turn, interleaved over rounds.

    Interleaving spreads this VM's drifting speed over every variant instead of over the last ones.
    """
    device = data.train.x.device
    cores = usable_cores()
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
    variants[f"2 at once, {each} thread(s) each"] = (None, each)  # None: two trainings, as nas.search --jobs 2
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


_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_BOOL = {"0": False, "1": True, "false": False, "true": True, "off": False, "on": True}


def parse_speed(text: str, base: Speed) -> Speed:
    """`--speed channels_last=0,amp=bf16`: `base` with some settings changed; UsageError names a bad one."""
    names = [f.name for f in fields(Speed)]
    changes: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip().lower()
        if key not in names:
            raise UsageError(f"--speed: unknown setting {key!r} (one of {', '.join(names)})")
        if key == "amp":
            if value not in _AMP:
                raise UsageError(f"--speed: amp must be one of {', '.join(_AMP)}, not {value!r}")
            changes["amp"] = _AMP[value]
        elif value in _BOOL:
            changes[key] = _BOOL[value]
        else:
            raise UsageError(f"--speed: {key} must be 0 or 1, not {value!r}")
    return replace(base, **changes)
