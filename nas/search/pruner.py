"""The search's pruner: successive halving's promotion rule at the cheap rungs, the median rule in
the full training. The rungs themselves, and how they map to Optuna's steps, are nas.fidelity's."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..fidelity import REDUCTION_FACTOR
from ..store.record import warm_start_of

# median stopping inside the full training (as the earlier search did): a trial is stopped when its
# accuracy at an epoch is below the median of the completed trials at that epoch; epochs 1-2 are never
# judged (warm-up), so Optuna (judging steps >= warm-up) first stops at epoch 3
MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS = 5, 3


def promoted(score: float, peers: list[float], eta: float = REDUCTION_FACTOR) -> bool:
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

    def __init__(self, cheap_rungs: int, eta: float = REDUCTION_FACTOR) -> None:
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
