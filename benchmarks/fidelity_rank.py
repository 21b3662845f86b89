"""Does the cheap judgement rank candidates like the full one? Spearman correlation per fidelity.

Draws N candidates under the budget at random from a space (the gate's fvcore count decides), trains
each at full fidelity (`--epochs` on the whole 55,000-image search split) and at each cheap fidelity
(EPOCHSxIMAGES: that many epochs on the first IMAGES of the split, the schedule compressed to the run),
and prints the Spearman rank correlation between every cheap score and the full final-epoch validation
accuracy: over all candidates, and over the better half (the candidates a search spends its time on).
"Epoch k of the full run" (what a pruner inside one training sees) is listed too, at no extra cost.

`--rungs-in steps` counts the cheap fidelities in optimiser steps (nas.fidelity.rung_images: a candidate
of batch b trains on b/128 of the images, as `nas search --rungs-in steps` does); their scores are stored
under `2x11000s`, beside the image-counted `2x11000`.

Results go to a JSON-lines file as each candidate finishes; a rerun with the same file skips the
candidates already measured, so a long run can be stopped and continued; a rerun with other cheap
fidelities trains only those for the candidates already measured (their full training is kept).
`--jobs N` measures N candidates at once in N processes, each with its share of the CPU threads (on a
CPU, two one-thread trainings get through more than one two-thread training); the seconds recorded are
then those of a shared machine, and only the scores are compared.

    python benchmarks/fidelity_rank.py --budget 8000 --min-params 2000 --candidates 20 \
        --out studies/fidelity_rank.jsonl [--space mnist] [--cheap 2x11000 4x27500] [--rungs-in steps]
        [--epochs 15] [--seed 0] [--jobs 2]

`--from-study NAME --storage URL` trains nothing: it ranks the candidates a search itself promoted to full
fidelity and trained to the last epoch, by the scores the search recorded at each rung. Those candidates
are the region the search spends its time in, chosen by the rungs: a narrow range of accuracies, where any
ranking is harder than over random draws.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

from nas import build, count_params
from nas.data import Split, Splits, load_search_data, resolve_data_dir
from nas.device import describe, resolve_device, usable_cores
from nas.fidelity import RUNG_UNITS, Fidelity, rung_images
from nas.cli import run_script
from nas.space import load_space
from nas.spec import Spec
from nas.train import train


def fidelity(text: str) -> tuple[int, int]:
    epochs, images = text.lower().split("x")
    return int(epochs), int(images)


def candidates(space_name: str, budget: int, n: int, seed: int, min_params: int = 0) -> list[Spec]:
    """The first n random draws of the space with min_params <= fvcore count < budget (same seed, same list)."""
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found: list[Spec] = []
    while len(found) < n:
        trial = study.ask()
        spec = space.sample(trial)
        study.tell(trial, 0.0)
        if min_params <= count_params(build(spec)) < budget:
            found.append(spec)
    return found


def ranks(values: list[float]) -> np.ndarray:
    """Ranks with ties sharing their mean rank (as Spearman's rho wants)."""
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(len(values), dtype=float)
    values_arr = np.asarray(values)
    for v in np.unique(values_arr):
        tied = values_arr == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def subset(data: Splits, images: int) -> Splits:
    return Splits(Split(data.train.x[:images], data.train.y[:images]), data.held_out)


def label(epochs: int, images: int, unit: str) -> str:
    """A cheap fidelity's key in the results: 2x11000 (in images), 2x11000s (in optimiser steps)."""
    return f"{epochs}x{images}" + ("s" if unit == "steps" else "")


def measure(spec: Spec, data: Splits, epochs: int, cheap: list[tuple[int, int]], seed: int, unit: str,
            row: dict | None = None) -> dict:
    """Train `spec` at full fidelity (unless `row` holds that already) and at each cheap fidelity it lacks."""
    if row is None:
        row = {"code": spec.code, "spec": spec.to_dict(), "params": count_params(build(spec)),
               "train_images": len(data.train)}
        start = time.perf_counter()
        try:
            full = train(spec, data, epochs=epochs, seed=seed)
            row["full_curve"] = [r.eval_acc for r in full.history]
        except FloatingPointError:
            row["full_curve"] = None  # diverged: ranks last at every fidelity it also diverges at
        row["full_seconds"] = time.perf_counter() - start
    for e, n in cheap:
        if label(e, n, unit) in row:
            continue
        images = rung_images(Fidelity(e, n), spec.train.batch_size, unit, len(data.train))
        start = time.perf_counter()
        try:
            acc = train(spec, subset(data, images), epochs=e, seed=seed).final_acc
        except FloatingPointError:
            acc = None
        row[label(e, n, unit)] = acc
        row[f"{label(e, n, unit)}_seconds"] = time.perf_counter() - start
        row[f"{label(e, n, unit)}_images"] = images
    return row


def key(spec: Spec) -> str:
    """A candidate's identity in the results file (v1 rows are upgraded first, so a key never changes)."""
    return json.dumps(spec.to_dict(), sort_keys=True)


def read_rows(path: Path) -> dict[str, dict]:
    """The candidates measured so far, keyed by their spec."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return {key(Spec.from_dict(row["spec"])): row for row in rows}


def append_row(path: Path, row: dict) -> None:
    """One line, under a lock: several worker processes append to the same file."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row) + "\n")


def measure_share(args: argparse.Namespace, todo: list[tuple[int, Spec, dict | None]], threads: int | None) -> None:
    """Measure `todo` (candidate index, spec, its row so far) one after the other, appending each row as it ends."""
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device, threads)
    data = load_search_data(resolve_data_dir(args.data_dir), device)
    print(f"pid {os.getpid()}: {describe(device)}, {len(todo)} candidate(s)", flush=True)
    for i, spec, row in todo:
        row = measure(spec, data, args.epochs, args.cheap, args.seed + i, args.rungs_in, row)
        append_row(args.out, row)
        curve = row["full_curve"]
        cheap = [label(e, n, args.rungs_in) for e, n in args.cheap]
        print(f"candidate {i + 1}/{args.candidates}: {row['params']:,} params, full "
              f"{'diverged' if curve is None else f'{curve[-1]:.2f} %'} in {row['full_seconds']:.0f} s; "
              + ", ".join(f"{k}: {row[k]}" for k in cheap) + f" | {spec.code}", flush=True)


def study_rows(study: str, storage: str) -> tuple[list[dict], int, list[tuple[int, int]]]:
    """The rows of a study's complete trials that climbed every cheap rung, with the study's epochs and rungs."""
    from nas.store.record import Outcome, read_trials

    records = [r for r in read_trials(study, storage) if r.outcome == Outcome.COMPLETE and r.rungs and r.fidelity]
    if not records:
        raise SystemExit(f"fidelity_rank: study {study!r} holds no complete trial that climbed the cheap rungs")
    cheap = [(s.fidelity.epochs, s.fidelity.train_images) for s in records[0].rungs]
    rows = [{"full_curve": [r.curve[e] for e in sorted(r.curve)], "train_images": r.fidelity.train_images,
             **{f"{s.fidelity.epochs}x{s.fidelity.train_images}": s.val_acc for s in r.rungs}} for r in records]
    return rows, records[0].fidelity.epochs, cheap


def report(rows: list[dict], epochs: int, cheap: list[tuple[int, int]]) -> None:
    """Spearman's rho of each cheap judgement against the full score, for each fidelity every row holds."""
    rows = [r for r in rows if r["full_curve"] is not None]
    full = [r["full_curve"][-1] for r in rows]
    better = sorted(range(len(rows)), key=lambda i: -full[i])[:max(2, len(rows) // 2)]
    print(f"{len(rows)} candidates (diverged ones left out); full: {epochs} epochs x all images, "
          f"final-epoch val acc {min(full):.2f}-{max(full):.2f} %")
    print(f"{'cheap judgement':<34} {'cost':>6} {'rho (all)':>10} {'rho (better half)':>18}")
    # cost in images seen, a share of the full training's (seconds would depend on the machine's load); counted
    # in steps, the mean over the candidates
    scores = {}
    for unit in RUNG_UNITS:
        for e, n in cheap:
            held = label(e, n, unit)
            if all(held in r for r in rows):
                cost = e * (float(np.mean([r[f"{held}_images"] for r in rows])) if unit == "steps" else n)
                scores[f"{e} epochs x {n:,} images" + (" (steps)" if unit == "steps" else "")] = (held, cost)
    scores.update({f"epoch {k} of the full run": (k, None) for k in (1, 2, 3, 5, 8) if k < epochs})
    for name, (held, cost) in scores.items():
        values = [(r[held] if isinstance(held, str) else r["full_curve"][held - 1]) for r in rows]
        values = [-1.0 if v is None else v for v in values]  # a diverged cheap run ranks last
        share = cost / (epochs * rows[0]["train_images"]) if cost else held / epochs
        print(f"{name:<34} {100 * share:>5.1f}% {spearman(values, full):>10.3f} "
              f"{spearman([values[i] for i in better], [full[i] for i in better]):>18.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="mnist")
    p.add_argument("--budget", type=int, default=8000)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--min-params", type=int, default=0,
                   help="skip smaller draws: a budget-aware search soon spends its time near the budget, "
                        "where the ranking is hardest")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--cheap", type=fidelity, nargs="+", default=[(2, 11_000), (4, 27_500)])
    p.add_argument("--rungs-in", choices=RUNG_UNITS, default="images",
                   help="count the cheap fidelities in images or in optimiser steps (as nas search --rungs-in)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("studies/fidelity_rank.jsonl"))
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1, help="candidates measured at once, one process each")
    p.add_argument("--report-only", action="store_true", help="print the table of what the file holds")
    p.add_argument("--from-study", metavar="NAME", help="rank a study's own promoted candidates (trains nothing)")
    p.add_argument("--storage", help="with --from-study: the study's storage URL or journal file")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.from_study:
        report(*study_rows(args.from_study, args.storage))
        return
    if not args.report_only:
        done = read_rows(args.out)
        wanted = [label(e, n, args.rungs_in) for e, n in args.cheap]
        todo = [(i, spec, done.get(key(spec)))
                for i, spec in enumerate(candidates(args.space, args.budget, args.candidates, args.seed,
                                                    args.min_params))
                if key(spec) not in done or any(k not in done[key(spec)] for k in wanted)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        jobs = min(args.jobs, len(todo))
        if jobs > 1:  # candidate k goes to worker k % jobs; each worker loads the data itself
            ctx = multiprocessing.get_context("spawn")
            threads = max(1, usable_cores() // jobs)
            procs = [ctx.Process(target=measure_share, args=(args, todo[k::jobs], threads)) for k in range(jobs)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
        elif todo:
            measure_share(args, todo, None)
    done = read_rows(args.out)
    report(list(done.values()), args.epochs, args.cheap)


if __name__ == "__main__":
    run_script("fidelity_rank", main)
