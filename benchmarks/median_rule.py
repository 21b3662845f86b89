"""Does the median rule inside the full training stop the right candidates? A replay on recorded trainings.

A search's full training is judged after each epoch by the median rule (nas.search.pruner.RungPruner): a
candidate is stopped when its best validation score so far is below the median of the complete candidates'
at this epoch (Optuna's MedianPruner), once `startup` candidates have completed, from epoch `warmup` on and
before the last epoch. This script takes full trainings that ran to their last epoch, as searches recorded
them, and asks what the rule could know and what it would have done:

- Spearman's rho between the score at each epoch and the final-epoch score: how well a rule judging at
  that epoch can order these candidates;
- the search's own pruner replayed over random orders of the candidates, for each setting given: each
  candidate trains epoch by epoch and is stopped where the rule says, against the complete ones before it
  (one worker's order: two workers would judge against slightly fewer). Printed: the share of trainings
  stopped, of their epochs saved, and of orders in which no complete candidate holds the best final score
  (the best was stopped); and, with a time limit (a share of the epochs all the trainings would take in
  full), how often the candidates complete by then include the best final score: the rule's saved epochs
  buy more candidates, its wrong stops lose them. "no rule" (every training runs in full) comes first.

`--studies STORAGE ...` adds the complete full trainings of every study each storage holds (a journal file
or a URL, as `nas report --storage`) to `--curves`, a JSON-lines file, one line per training, so the
measurement outlives the studies (a training already in the file is not added again). The table is over
every line of the file.

    python benchmarks/median_rule.py --studies runs/ttt/new-no-warm-seed2/study.journal \\
        --curves benchmarks/results/full_curves_b8000.jsonl [--settings 5/3 5/12 2/3] [--orders 500]
        [--time-shares 0.4 0.6]
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial
from scipy.stats import spearmanr

from nas.cli import run_script
from nas.search.pruner import MEDIAN_STARTUP_TRIALS, RungPruner, median_first_epoch
from nas.store.record import Outcome, read_trials
from nas.store.storage import open_storage

CHEAP_RUNGS = 2  # the default ladder's; the replay's steps are numbered as the search numbers them


def setting(text: str) -> tuple[int, int]:
    """'STARTUP/WARMUP', e.g. '5/3': the rule waits for 5 complete candidates and judges from epoch 3."""
    try:
        startup, warmup = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STARTUP/WARMUP such as 5/3, not {text!r}") from None
    if startup < 0 or warmup < 1:
        raise argparse.ArgumentTypeError(f"STARTUP must be >= 0 and WARMUP >= 1, not {text!r}")
    return startup, warmup


def source_name(storage: str) -> str:
    """A storage's name in the curves file: its last two folders and file name (a run's folder says what it was)."""
    return "/".join(Path(storage).parts[-3:]) if "://" not in storage else storage.rsplit("/", 1)[-1]


def study_curves(storage: str) -> list[dict]:
    """One line per full training that ran to its last epoch, from every study the storage holds."""
    if "://" not in storage and not Path(storage).is_file():
        raise SystemExit(f"median_rule: no such study file: {storage}")
    opened = open_storage(storage)
    lines = []
    for name in optuna.get_all_study_names(opened):
        for r in read_trials(optuna.load_study(study_name=name, storage=opened)):
            epochs = r.fidelity.epochs if r.fidelity else 0
            if r.outcome == Outcome.COMPLETE and epochs and sorted(r.curve) == list(range(1, epochs + 1)):
                lines.append({"source": source_name(storage), "study": name, "trial": r.number, "params": r.params,
                              "code": r.code, "curve": [r.curve[e] for e in range(1, epochs + 1)]})
    return lines


def add_curves(path: Path, lines: list[dict]) -> int:
    """Append the lines not in the file yet (by source, study and trial); returns how many were added."""
    held = read_curves(path)
    seen = {(c["source"], c["study"], c["trial"]) for c in held}
    new = [c for c in lines if (c["source"], c["study"], c["trial"]) not in seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(json.dumps(c) + "\n" for c in new)
    return len(new)


def read_curves(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def replay(curves: list[list[float]], order: list[int], startup: int, warmup: int) -> list[int | None]:
    """The epoch at which the search's pruner stops each candidate (None: it completes), taking them in `order`,
    each judged against the complete ones before it. The last epoch is never judged: the training is done."""
    study = optuna.create_study(direction="maximize")
    pruner = RungPruner(CHEAP_RUNGS, median_startup=startup, median_warmup=warmup)
    stopped: list[int | None] = [None] * len(curves)
    for i in order:
        values = {}
        for epoch, score in enumerate(curves[i], 1):
            values[CHEAP_RUNGS + epoch] = score
            if epoch < len(curves[i]) and pruner.prune(study, create_trial(state=TrialState.RUNNING,
                                                                           intermediate_values=values)):
                stopped[i] = epoch
                break
        if stopped[i] is None:
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=curves[i][-1], intermediate_values=values))
    return stopped


def best_in_time(curves: list[list[float]], order: list[int], stopped: list[int | None], epochs: float) -> float | None:
    """The best final score among the candidates that completed within `epochs` of training, taken in `order` (a
    stopped one costs the epochs it ran): what a search that must stop at a time limit holds."""
    spent, best = 0, None
    for i in order:
        spent += len(curves[i]) if stopped[i] is None else stopped[i]
        if spent > epochs:
            break
        if stopped[i] is None:
            best = curves[i][-1] if best is None else max(best, curves[i][-1])
    return best


def report(lines: list[dict], settings: list[tuple[int, int]], orders: int, seed: int,
           time_shares: tuple[float, ...] = (0.4, 0.6)) -> None:
    curves = [c["curve"] for c in lines]
    epochs = len(curves[0])
    if any(len(c) != epochs for c in curves):
        raise SystemExit("median_rule: the curves file mixes trainings of different lengths")
    final = [c[-1] for c in curves]
    print(f"{len(curves)} full trainings of {epochs} epochs from {len({c['source'] for c in lines})} searches; "
          f"final-epoch validation {min(final):.2f}-{max(final):.2f} %")
    print("rho of the score at epoch k against the final one:")
    print("  " + "  ".join(f"{k}: {spearmanr([c[k - 1] for c in curves], final)[0]:+.2f}" for k in range(1, epochs)))
    best, total = max(final), epochs * len(curves)
    rng = random.Random(seed)
    shuffled = [rng.sample(range(len(curves)), len(curves)) for _ in range(orders)]  # the same orders for each rule
    print(f"the median rule replayed over {orders} random orders (STARTUP complete first / judged from epoch WARMUP); "
          f"'best found in T': the best final score among those complete within T of the epochs all would take:")
    print(f"{'startup/warmup':<16} {'stopped':>8} {'epochs saved':>13} {'best stopped':>13}"
          + "".join(f"{f'best found in {share:.0%}':>19}" for share in time_shares))
    for startup, warmup in [(None, None), *settings]:
        stopped_share, saved_share, lost, found = [], [], 0, [0] * len(time_shares)
        for order in shuffled:
            stopped = [None] * len(curves) if startup is None else replay(curves, order, startup, warmup)
            stopped_share.append(np.mean([s is not None for s in stopped]))
            saved_share.append(sum(epochs - s for s in stopped if s is not None) / total)
            lost += max(final[i] for i, s in enumerate(stopped) if s is None) < best
            for k, share in enumerate(time_shares):
                found[k] += best_in_time(curves, order, stopped, share * total) == best
        name = "no rule" if startup is None else f"{startup}/{warmup}"
        print(f"{name:<16} {100 * np.mean(stopped_share):>7.0f}% {100 * np.mean(saved_share):>12.0f}% "
              f"{100 * lost / orders:>12.0f}%" + "".join(f"{100 * n / orders:>18.0f}%" for n in found))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", nargs="+", default=[], metavar="STORAGE",
                   help="add the complete full trainings of every study in these storages to --curves")
    p.add_argument("--curves", type=Path, default=Path("benchmarks/results/full_curves_b8000.jsonl"))
    p.add_argument("--settings", type=setting, nargs="+",
                   default=[(MEDIAN_STARTUP_TRIALS, median_first_epoch(15)), (5, 3), (5, 8), (5, 10), (2, 12)],
                   help="median-rule settings to replay, as STARTUP/WARMUP (default: the search's own first)")
    p.add_argument("--orders", type=int, default=500)
    p.add_argument("--time-shares", type=float, nargs="+", default=[0.4, 0.6],
                   help="time limits, as shares of the epochs all the trainings would take in full")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for storage in args.studies:
        print(f"{storage}: {add_curves(args.curves, study_curves(storage))} full trainings added to {args.curves}")
    lines = read_curves(args.curves)
    if len(lines) < 3:
        raise SystemExit(f"median_rule: {args.curves} holds {len(lines)} full trainings; at least 3 are needed")
    report(lines, args.settings, args.orders, args.seed, tuple(args.time_shares))


if __name__ == "__main__":
    run_script("median_rule", main)
