"""Multi-fidelity search: a ladder of rungs, and the rule that promotes a candidate up it.

A candidate is first judged cheaply (a few epochs on a slice of the training images, the LR schedule
compressed to that short run); only the best third at a rung is trained at the next, and only
those that survive every cheap rung get the full training (`--epochs` on all the search images).
Each rung is a fresh training, so a short run gets its whole schedule (warm-up and annealing), where
the first epochs of a long run sit at a one-cycle schedule's peak learning rate.
benchmarks/fidelity_rank.py measures how each rung ranks candidates against the full training.

In Optuna's terms a trial reports its score at cheap rung k as the intermediate value of step k, and
the epochs of its full training as steps K+1 ... K+epochs (K = number of cheap rungs). One step is one
fidelity, and every rule below compares values at one step only: never across fidelities. A study
without cheap rungs (K = 0) is exactly the earlier full-fidelity search: epoch e is step e.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from .errors import UsageError
from .record import Fidelity, warm_start_of

# the default ladder, as shares of the full fidelity: (epochs, images). 2/15 x 1/5 and 4/15 x 1/2 of the
# full 15 x 55,000: 2.7 % and 13 % of its cost (in images trained on)
DEFAULT_RUNGS = ((2 / 15, 1 / 5), (4 / 15, 1 / 2))
ETA = 3  # keep the best 1/ETA at each cheap rung (successive halving's reduction factor)
MIN_RUNG_IMAGES = 256  # below this a rung's score says little; such rungs are dropped
# median stopping inside the full training (as the earlier search did): a trial is stopped when its
# accuracy at an epoch is below the median of the completed trials at that epoch; epochs 1-2 are never
# judged (warm-up), so Optuna (judging steps >= warm-up) first stops at epoch 3
MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS = 5, 3


def parse_rung(text: str) -> Fidelity:
    """'2x11000' -> Fidelity(2, 11000) (a command-line rung)."""
    try:
        epochs, images = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"rung {text!r}: expected EPOCHSxIMAGES, e.g. 2x11000") from None
    if epochs < 1 or images < 1:
        raise UsageError(f"rung {text!r}: epochs and images must be positive")
    return Fidelity(epochs, images)


def ladder(full: Fidelity, cheap: list[Fidelity] | None = None) -> tuple[Fidelity, ...]:
    """The rungs a candidate climbs, cheapest first, ending at `full`.

    `cheap` None: the default ladder scaled to `full`; [] : full fidelity only. Each cheap rung must
    cost less than the next (epochs x images) and use no more epochs or images than the full one.
    """
    if cheap is None:
        cheap = [Fidelity(max(1, round(full.epochs * e)), int(full.train_images * n)) for e, n in DEFAULT_RUNGS]
        cheap = [r for r in cheap if r.train_images >= MIN_RUNG_IMAGES]
    # drop repeats: a tiny run scales two rungs onto one, or a rung onto the full fidelity
    rungs = (*(r for r in dict.fromkeys(cheap) if r != full), full)
    for low, high in zip(rungs, rungs[1:]):
        if low.epochs > full.epochs or low.train_images > full.train_images:
            raise UsageError(f"rung {low.epochs}x{low.train_images} is above the full fidelity "
                             f"{full.epochs}x{full.train_images} (--epochs x training images)")
        if low.epochs * low.train_images >= high.epochs * high.train_images:
            raise UsageError(f"rungs must cost more at each step: {low.epochs}x{low.train_images} is not "
                             f"cheaper than {high.epochs}x{high.train_images}")
    return rungs


def promoted(score: float, peers: list[float], eta: float = ETA) -> bool:
    """Successive halving's rule, asynchronously (ASHA): is `score` among the best 1/eta of the scores
    at this rung so far (the peers and itself)? The first candidates at a rung are judged against the
    few scores there are, at least the best one goes on."""
    ranked = sorted([*peers, score], reverse=True)
    keep = max(1, int(len(ranked) // eta))
    return score >= ranked[keep - 1]


class RungPruner(optuna.pruners.BasePruner):
    """One pruner for the whole ladder: the promotion rule at the cheap rungs' steps, the median rule
    at the full training's epochs. Both compare one step, i.e. one fidelity, at a time. A warm start (a
    known design, queued with `record.queued_as`) climbs every cheap rung: what is known of it
    is its full training, and a study's first few scores at a rung are too few to screen it on."""

    def __init__(self, cheap_rungs: int, eta: float = ETA) -> None:
        self.cheap_rungs, self.eta = cheap_rungs, eta
        self.median = optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                                  n_warmup_steps=cheap_rungs + MEDIAN_WARMUP_EPOCHS)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if step >= self.cheap_rungs:
            return self.median.prune(study, trial)
        if warm_start_of(trial) is not None:
            return False
        return not promoted(trial.intermediate_values[step], rung_scores(study, step, trial.number), self.eta)


def rung_scores(study: optuna.Study, step: int, but: int | None = None) -> list[float]:
    """The scores other trials reported at one step (one rung): finished or still running."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=states)
            if t.number != but and step in t.intermediate_values]
