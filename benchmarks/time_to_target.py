"""Time to target: wall time until a search holds a full-fidelity candidate with >= TARGET % validation accuracy.

Runs `nas search` as a user would, with the code of the checkout this script is in (a worktree's script
measures that worktree, wherever it is started from), in a fresh studies folder per variant, and watches
its study: the time to target is from the command's start to the end of the first complete trial (full
fidelity, final epoch) at or above the target. The search is stopped there, or at the cap (reported as "> cap").
No finalists: the question is how soon a good enough candidate is found, not which one wins.

    python benchmarks/time_to_target.py --variants old new new-no-warm [--budget 8000] [--target 99.4]
        [--cap-minutes 90] [--seed 0] [--jobs 1] [--space NAME] [--rungs EPOCHSxIMAGES ...]
        [--rungs-in images|steps] [--sampler tpe|random] [--startup-trials N] [--promote-after N]
        [--max-macs SIZE] [--widen-best] [--neighbours N] [--widths drawn|filled]
        [--out studies/time_to_target] [--device auto] [--data-dir ...]

Variants: old = the search before this one: its space (mnist_classic), every candidate at full fidelity
with the median pruner, no warm start, no neighbours of the best; new = the default (cheap rungs, warm
start, neighbours of each new best); new-no-warm = the default without warm start (and so without
neighbours). `--jobs`, `--space`, `--rungs`, `--rungs-in`, `--sampler`, `--startup-trials`, `--promote-after`,
`--max-macs`, `--widen-best`, `--neighbours` and `--widths` are given to the new variants' command (default: the
command's own).
Each variant's result is appended to <out>/results.jsonl, with the trials trained at each fidelity, the best
complete trial within the cap (its validation accuracy, number, minute and design) and the machine's speed
timed just before (`speed_probe`: 2 epochs of results/b8000_search3/best.json, found/b8000 until 2026-12-05,
on 11,000 images, one thread); never run two variants, or anything else CPU-heavy, at the same time on one
machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import optuna
import torch

from nas.bench.timing import run_ours
from nas.data.load import load_search_data
from nas.data.source import resolve_data_dir
from nas.device import cpu_model, usable_cores
from nas.fidelity import DEFAULT_RUNG_UNIT, RUNG_UNITS
from nas.search.objective import DRAWN, WIDTHS
from nas.search.sampler import SAMPLERS
from nas.spec import load_spec
from nas.store.record import Outcome, TrialRecord, read_trials, trained_per_fidelity

VARIANTS = {
    "old": ["--space", "mnist_classic", "--rungs", "none", "--no-warm-start", "--neighbours", "0"],
    "new": [],
    "new-no-warm": ["--no-warm-start"],
}
POLL_SECONDS = 10
# the machine's speed, timed before each variant: one fixed design (found/b8000 until 2026-12-05), so every
# recorded probe times the same training
PROBE_SPEC = "results/b8000_search3/best.json"  # under benchmarks/
PROBE_IMAGES, PROBE_EPOCHS = 11_000, 2
# the checkout this script belongs to: the search runs there, so `python -m nas.search` measures this
# checkout's code (a `-m` module is found in the working directory before PYTHONPATH and installs)
ROOT = Path(__file__).resolve().parents[1]


def complete(records: list[TrialRecord]) -> list[TrialRecord]:
    """The trials that completed the full training with a score and an end time."""
    return [r for r in records if r.outcome == Outcome.COMPLETE and r.value is not None and r.finished is not None]


def reached(records: list[TrialRecord], target: float) -> datetime.datetime | None:
    """When the first complete trial at or above the target finished (None: none yet)."""
    hits = [r.finished for r in complete(records) if r.value >= target]
    return min(hits) if hits else None


def best_within(records: list[TrialRecord], started: datetime.datetime, cap_seconds: float) -> dict | None:
    """The best complete trial that ended within the cap: its validation accuracy, number, minute and design."""
    ended = [r for r in complete(records) if (r.finished - started).total_seconds() <= cap_seconds]
    if not ended:
        return None
    best = max(ended, key=lambda r: r.value)
    return {"value": best.value, "trial": best.number, "minute": round((best.finished - started).total_seconds() / 60, 1),
            "params": best.params, "code": best.code}


def worker_time(records: list[TrialRecord], started: datetime.datetime) -> dict:
    """Where the workers' time went, from the trials' own records (training seconds, evaluations left out): the
    cheap rungs, the full trainings, and each full training's start minute, epochs run and outcome."""
    full = sorted((r for r in records if r.epoch_seconds), key=lambda r: r.number)

    def minute(r: TrialRecord) -> float | None:
        return round((r.started - started).total_seconds() / 60, 1) if r.started else None

    return {"cheap_rung_seconds": round(sum(s.seconds for r in records for s in r.rungs)),
            "full_training_seconds": round(sum(sum(r.epoch_seconds) for r in full)),
            "full_trainings": [{"trial": r.number, "outcome": r.outcome.value, "epochs": len(r.epoch_seconds),
                                "value": r.value, "start_minute": minute(r)} for r in full]}


def speed_probe(data_dir: Path, images: int = PROBE_IMAGES, epochs: int = PROBE_EPOCHS) -> dict:
    """How fast this machine trains right now: PROBE_SPEC's epochs on `images` search images, one thread (as each
    of the search's workers), after a short warm-up. The same VM has trained 1.3-1.5x slower at some hours
    than at others, so runs are compared in time only beside their probes."""
    data = load_search_data(data_dir, torch.device("cpu"), subset=images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_ours(load_spec(Path(__file__).resolve().parent / PROBE_SPEC), data, epochs, seed=0)
    finally:
        torch.set_num_threads(threads)
    return {"spec": PROBE_SPEC, "train_images": images, "epoch_seconds": [round(s, 2) for s in run.train_seconds]}


def poll(study: str, storage: str) -> list[TrialRecord]:
    """The study's trials so far; none while it is not created yet or its database is busy (asked again later)."""
    try:
        return read_trials(study, storage)
    except Exception:
        return []


class Search(NamedTuple):
    command: list[str]  # every path in it absolute: it runs in ROOT
    study: str
    storage: str
    flags: list[str]  # the variant's own flags, as recorded


# the settings given on to the new variants' `nas search`, in this order (unset: the command's own default)
PASSED_ON = ("jobs", "space", "rungs", "rungs_in", "sampler", "startup_trials", "promote_after", "max_macs",
             "widen_best", "neighbours", "widths")


def search_command(name: str, args: argparse.Namespace, folder: Path) -> Search:
    """The `nas search` command of one variant, with its study, storage and flags."""
    study = f"ttt-{name}"
    new = name != "old"  # PASSED_ON: the new variants' settings only
    jobs = args.jobs if new and args.jobs else 1
    space = str(Path(args.space).resolve()) if args.space and Path(args.space).is_file() else args.space
    given = {**vars(args), "space": space}
    flags = list(VARIANTS[name])
    for option in PASSED_ON if new else ():
        value = given.get(option)
        if value is not None and value is not False:  # a flag's value: none (True), the value (0 too), or a list
            values = [] if value is True else value if isinstance(value, list) else [value]
            flags += [f"--{option.replace('_', '-')}", *map(str, values)]
    folder = folder.resolve()
    # several workers share a journal file, as the search's own default storage does for --jobs > 1
    storage = str(folder / "study.journal") if jobs > 1 else f"sqlite:///{folder / 'study.db'}"
    command = [sys.executable, "-m", "nas.search", "--budget", str(args.budget), "--study", study,
               "--storage", storage, "--studies-dir", str(folder), "--timeout", str(args.cap_minutes * 60),
               "--seed", str(args.seed), "--finalists", "0", "--device", args.device, "-q", "--no-report",
               *(["--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir else []), *flags]
    return Search(command, study, storage, flags)


def run_variant(name: str, args: argparse.Namespace) -> dict:
    folder = args.out / f"{name}-seed{args.seed}"
    if folder.exists():
        raise SystemExit(f"time_to_target: {folder} exists: remove it or pick another --out")
    folder.mkdir(parents=True)
    command, study, storage, flags = search_command(name, args, folder)
    load_before = os.getloadavg()[0]  # before the probe, which loads a core itself
    # the search's own data folder: --data-dir, else $NAS_DATA_DIR, else ./data where the search runs (ROOT)
    probe = speed_probe(Path(args.data_dir).resolve() if args.data_dir else ROOT / resolve_data_dir(None))
    started = datetime.datetime.now()
    clock = time.perf_counter()
    with open(folder / "search.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        hit = None
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            hit = reached(poll(study, storage), args.target)
            if hit is not None or time.perf_counter() - clock > args.cap_minutes * 60:
                proc.send_signal(signal.SIGTERM)  # the search stores its running trial and exits cleanly
                proc.wait()
                break
    wall = time.perf_counter() - clock
    records = read_trials(study, storage)
    hit = hit or reached(records, args.target)
    per_fidelity = {str(f): n for f, n in trained_per_fidelity(records).items()}
    seconds = (hit - started).total_seconds() if hit else None
    if seconds is not None and seconds > args.cap_minutes * 60:  # a trial that ended after the cap does not count
        seconds = None
    result = {"variant": name, "flags": flags, "budget": args.budget, "target": args.target,
              "seed": args.seed, "seconds_to_target": seconds, "cap_seconds": args.cap_minutes * 60,
              "wall_seconds": wall, "trials": len(records), "trials_per_fidelity": per_fidelity,
              "best_within_cap": best_within(records, started, args.cap_minutes * 60),
              "worker_time": worker_time(records, started), "command": " ".join(command),
              "load_before": load_before, "speed_probe": probe, "hardware": f"{cpu_model()}, {usable_cores()} cores",
              "started": started.isoformat(timespec="seconds")}
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--budget", type=int, default=8000)
    p.add_argument("--target", type=float, default=99.4)
    p.add_argument("--cap-minutes", type=int, default=90)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, help="worker processes of the new variants' search (default: its own, 1)")
    p.add_argument("--space", help="the new variants' search space (default: the command's default)")
    p.add_argument("--rungs", nargs="+", metavar="EPOCHSxIMAGES",
                   help="the new variants' cheap rungs (default: the command's own ladder)")
    p.add_argument("--rungs-in", choices=RUNG_UNITS,
                   help=f"what the new variants' cheap rungs count (default: the command's own, {DEFAULT_RUNG_UNIT})")
    p.add_argument("--sampler", choices=SAMPLERS, help="the new variants' sampler (default: the command's own, tpe)")
    p.add_argument("--startup-trials", type=int, metavar="N",
                   help="the new variants' --startup-trials: TPE's random draws first (default: the command's own, 10)")
    p.add_argument("--promote-after", type=int, metavar="N",
                   help="the new variants' --promote-after (default: the command's own, eta's 3 scores)")
    p.add_argument("--max-macs", metavar="SIZE",
                   help="the new variants' --max-macs, e.g. 1.2M: only designs this cheap to run, and so to train")
    p.add_argument("--widen-best", action="store_true",
                   help="the new variants' search queues the widest copy of each new best (nas search --widen-best)")
    p.add_argument("--neighbours", type=int, metavar="N",
                   help="the new variants' --neighbours: neighbours queued after each new best (default: the "
                        "command's own: 2 with a warm start, else 0)")
    p.add_argument("--widths", choices=WIDTHS,
                   help="the new variants' --widths: filled trains every candidate as its widest copy within the "
                        f"budget (default: the command's own, {DRAWN})")
    p.add_argument("--out", type=Path, default=Path("studies/time_to_target"))
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        r = run_variant(name, args)
        shown = (f"{r['seconds_to_target'] / 60:.1f} min" if r["seconds_to_target"] is not None
                 else f"> {args.cap_minutes} min")
        best = r["best_within_cap"]
        best = f"best {best['value']:.2f} % (trial {best['trial']}, minute {best['minute']})" if best else "none complete"
        print(f"{name:<12} {shown:>10} to a full-fidelity candidate >= {args.target} % val; {best} "
              f"({r['trials']} trials, {r['trials_per_fidelity']} trained per fidelity, load {r['load_before']:.2f} at the start; "
              f"speed probe {r['speed_probe']['epoch_seconds']} s an epoch)", flush=True)


if __name__ == "__main__":
    main()
