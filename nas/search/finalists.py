"""A selection that survives the noise: the best few trials trained again with new seeds.

One validation image is 0.02 % and a design's seed-to-seed spread about ±0.1 %, so the single best
final-epoch score of a search is partly luck (the winner's curse: the luckiest seed of many similar
designs). Before a search names its winner, its top `count` complete trials are trained again at full
fidelity, on the same search split, with `seeds` new seeds each, and ranked by their mean validation
accuracy; the search's own run is left out of the mean, since it was picked for being high.

Each training is stored as soon as it ends (nas.store.record.record_reevaluation), so an interrupted
selection resumes where it stopped, and workers on several machines add to the same results. The
test set is never read here: `data` is the search split.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection

import optuna

from ..data import Splits
from ..progress import format_left, time_left
from ..spec import Spec
from ..store.heartbeat import HOST
from ..store.record import Reevaluation, TrialRecord, read_reevaluations, read_trials, record_reevaluation
from ..store.storage import with_retry
from ..store.winner import finalists, lead_of, ranked_finalists
from ..train import train

SEED_STRIDE = 1_000_000  # re-evaluation seed j of trial n: --seed + (j + 1) * stride + n, apart from search seeds


def seeds_of(trial: int, base_seed: int, seeds: int) -> list[int]:
    return [base_seed + (j + 1) * SEED_STRIDE + trial for j in range(seeds)]


def pending(study: optuna.Study, *, base_seed: int, count: int, seeds: int) -> list[tuple[TrialRecord, int]]:
    """The finalists' trainings not stored yet, as (trial, seed) pairs in a fixed order."""
    done = read_reevaluations(study)
    return [(r, seed) for r in finalists(read_trials(study), count) for seed in seeds_of(r.number, base_seed, seeds)
            if seed not in done.get(r.number, Reevaluation(r.number, {})).val_accs]


def reevaluate(study: optuna.Study, data: Splits, *, epochs: int, base_seed: int, count: int, seeds: int,
               quiet: bool = False, trainer=train, only: Collection[tuple[int, int]] | None = None,
               label: str = "") -> None:
    """Train each of the `count` best complete trials with `seeds` new seeds (those not stored yet).

    `only`: this worker's share, as (trial, seed) pairs, when several workers split the trainings; one
    stored meanwhile (by another machine) is skipped. `label` prefixes this worker's lines."""
    todo = [(r, seed) for r, seed in pending(study, base_seed=base_seed, count=count, seeds=seeds)
            if only is None or (r.number, seed) in only]
    if not todo:
        return
    say = (lambda text: None) if quiet else (lambda text: print(label + text, file=sys.stderr, flush=True))
    trials = ", ".join(f"#{n}" for n in dict.fromkeys(r.number for r, _ in todo))
    say(f"finalists: trials {trials} again with new seeds at {epochs} epochs x {len(data.train):,} images "
        f"({len(todo)} training(s) to go here), ranked by mean validation accuracy over {seeds} seed(s) each")
    start = time.perf_counter()
    for k, (record, seed) in enumerate(todo, 1):
        began = time.time()  # wall-clock, for the report's timeline
        try:
            acc = trainer(Spec.from_dict(record.spec), data, epochs=epochs, seed=seed).final_acc
        except FloatingPointError as exc:  # a design that diverges with some seed is not a robust winner
            say(f"finalist #{record.number} seed {seed}: {exc}; counted as 0 %")
            acc = 0.0
        run = (began, time.time(), HOST)
        with_retry(lambda: record_reevaluation(study, record.number, seed, acc, run), "recording a finalist")
        elapsed = time.perf_counter() - start
        say(f"finalist #{record.number} seed {seed}: val {acc:.2f}% ({k}/{len(todo)}, "
            f"ETA {format_left(time_left(elapsed, k, len(todo) - k))})")


def table(study: optuna.Study, count: int) -> str:
    """The finalists with their search score and re-evaluation, the winner marked."""
    records = read_trials(study)
    top: list[TrialRecord] = finalists(records, count)
    if not top:
        return ""
    done = read_reevaluations(study)
    ranked = ranked_finalists(study, records)  # one read: the winner and its lead agree
    winner = None if ranked is None else ranked[0]
    lines = [f"finalists (top {len(top)} by their search run; new seeds at full fidelity, validation split):",
             f"{'trial':>6} {'params':>7} {'search val':>10} {'re-evaluated: mean ± std':>25} {'min':>7} {'seeds':>5}"]
    for r in top:
        again = done.get(r.number)
        stats = (f"{again.mean:>17.2f} ± {again.std:.2f}% {min(again.val_accs.values()):>6.2f}% "
                 f"{len(again.val_accs):>5}") if again else f"{'-':>25} {'-':>7} {0:>5}"
        mark = " <- winner" if winner and winner[1] is not None and winner[0].number == r.number else ""
        lines.append(f"{r.number:>6} {r.params or 0:>7,} {r.value:>9.2f}% {stats}{mark}")
    lead = lead_of(ranked)
    if lead is not None:
        lines.append(lead.sentence())
    return "\n".join(lines)
