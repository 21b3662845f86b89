"""Does a long search's worker keep its memory level? Many tiny trials in one worker process, its
resident memory sampled as they go.

The worker is the search's own (`nas.search.workers.work`: sampler, gate, pruner, records, healing,
best.json) on a SQLite study, with the tiny space, 1 epoch on a few hundred images, so a thousand
trials take minutes. `--onednn-cache N` sets oneDNN's kernel cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY)
before anything is trained; without it the worker's own setting applies (nas.device).

    python benchmarks/memory_growth.py --trials 1000 [--onednn-cache 1024] [--out FILE.jsonl]

Prints the resident memory after every `--every` trials and, with `--out`, appends one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import optuna
import torch

from nas.bundled import spaces
from nas.cli import run_script
from nas.data import load_search_data, resolve_data_dir
from nas.device import ONEDNN_CACHE_VARIABLE, cpu_model, resolve_device
from nas.search.workers import Job, work
from nas.store.storage import create_or_load, open_storage


def resident_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--every", type=int, default=100, help="print the memory after every N trials")
    p.add_argument("--subset", type=int, default=256, help="training images per trial")
    p.add_argument("--onednn-cache", type=int, help="oneDNN's kernel cache capacity (default: the worker's)")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="append the result as one JSON line")
    args = p.parse_args()
    if args.onednn_cache is not None:
        os.environ[ONEDNN_CACHE_VARIABLE] = str(args.onednn_cache)
    device = resolve_device("cpu", threads=1)  # one worker's share on a 2-core machine, as --jobs 2
    data = load_search_data(resolve_data_dir(args.data_dir), device, args.subset)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/memory.db"
        create_or_load("memory", open_storage(url), direction="maximize")
        job = Job(space=str(spaces()["mnist_tiny"]), budget=3000, study="memory", storage=url, epochs=1, seed=0,
                  subset=args.subset, data_dir="", device="cpu", trials=args.trials, timeout=None, quiet=True,
                  out=tmp, threads=1)
        samples: list[tuple[float, float]] = []  # (wall-clock time, MiB)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append((time.time(), resident_mib()))

        start = time.perf_counter()
        before = resident_mib()
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = work(job, data)
        done.set()
        thread.join()
        study = optuna.load_study(study_name="memory", storage=url)
        ends = sorted(t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete)
    # resident memory at each `every`-th finished trial: the first sample taken after it ended
    at = {k: next((mib for t, mib in samples if t >= ends[k - 1]), samples[-1][1] if samples else before)
          for k in range(args.every, len(ends) + 1, args.every)}
    print(f"{len(ends)} trials in {time.perf_counter() - start:.0f} s on {cpu_model()}, torch {torch.__version__}, "
          f"{ONEDNN_CACHE_VARIABLE}={os.environ.get(ONEDNN_CACHE_VARIABLE)}")
    print(f"resident memory: {before:.0f} MiB before the first trial; "
          + ", ".join(f"{mib:.0f} after {k}" for k, mib in at.items()))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps({"trials": len(ends), "onednn_cache": os.environ.get(ONEDNN_CACHE_VARIABLE),
                                "before_mib": round(before), "mib_after": {k: round(v) for k, v in at.items()},
                                "cpu": cpu_model(), "torch": torch.__version__}) + "\n")
    return code


if __name__ == "__main__":
    run_script("memory_growth", main)
