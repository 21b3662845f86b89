"""The search's pruner: successive halving's promotion rule at the cheap rungs, the median rule in
the full training. The rungs themselves, and how they map to Optuna's steps, are nas.fidelity's."""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..fidelity import REDUCTION_FACTOR
from ..store.record import Outcome, outcome_of, promoted_as, promotion_of, warm_start_of
from ..store.storage import exclusive

# median stopping inside the full training: a trial is stopped when its best accuracy so far in the full
# training is below the median of the completed trials at this epoch, once 5 have completed; never at the last
# epoch (the objective does not ask there). Behind cheap rungs it judges only the last fifth of the training
# (from epoch 12 of 15): the candidates that reach it passed two rungs, and their early epochs barely order them
# (replayed on 26 recorded trainings, judging from epoch 3 stopped the best in 43 % of orders; docs/results.md).
# Without rungs every draw trains in full, and early epochs tell weak draws apart (rho 0.79 at epoch 3 over 40
# random draws): it judges from the first fifth (epoch 3 of 15), as the search did before it had rungs.
MEDIAN_STARTUP_TRIALS = 5


def median_first_epoch(epochs: int, behind_rungs: bool = True) -> int:
    """The first epoch of a full training of `epochs` that the median rule judges: 4/5 of the way behind cheap
    rungs (12 of 15, 4 of 5), 1/5 without (3 of 15); rounded up."""
    fifths = 4 if behind_rungs else 1
    return max(1, -(-fifths * epochs // 5))


def promoted(score: float, peers: list[float], eta: float = REDUCTION_FACTOR, hold: int = 0) -> bool:
    """Successive halving's rule, asynchronously (ASHA): is `score` among the best 1/eta of the scores
    at this rung so far (the peers and itself)? While a rung holds fewer than eta scores it has no best
    1/eta: with `hold` (a number of scores, at least 1) nobody goes on until the rung has eta scores and
    `hold` of them (a late promotion takes the best on then), without it the best one so far does (a run
    too short to wait)."""
    ranked = sorted([*peers, score], reverse=True)
    keep = int(len(ranked) // eta)
    if hold and (keep == 0 or len(ranked) < hold):
        return False
    return score >= ranked[max(1, keep) - 1]


def hold_scores(trials: int | None, cheap_rungs: int, eta: float = REDUCTION_FACTOR,
                promote_after: int | None = None) -> int:
    """How many scores a run's cheap rungs wait for before anyone goes on (`promoted`'s `hold`):
    `promote_after` (--promote-after), and at least eta's own (3). A candidate climbs by late promotions
    once a run has `wait * eta ** rungs` trials (27 for eta's own 3 with two cheap rungs, 81 for 9): a
    shorter run waits for eta's own only, and one too short for that (or without cheap rungs) does not
    hold (0): each rung's first goes on, or the run might end with nothing trained."""
    own = math.ceil(eta)
    for wait in (max(own, promote_after or 0), own):
        if cheap_rungs and (trials is None or trials >= wait * eta ** cheap_rungs):
            return wait
    return 0


class RungPruner(optuna.pruners.BasePruner):
    """One pruner for the whole ladder: the promotion rule at the cheap rungs' steps, the median rule
    at the full training's epochs. Both compare one step, i.e. one fidelity, at a time. A warm start (a
    known design, queued with `record.queued_as`) climbs every cheap rung: what is known of it
    is its full training, and a study's first few scores at a rung are too few to screen it on.
    `hold`: the promotion rule's (`promoted`); late promotions are then queued by `queue_late_promotions`.
    `median_startup`, `median_warmup`: how many complete trials the median rule waits for, and the first epoch
    of the full training it judges (benchmarks/median_rule.py replays other settings on recorded trainings)."""

    def __init__(self, cheap_rungs: int, eta: float = REDUCTION_FACTOR, hold: int = 0,
                 median_startup: int = MEDIAN_STARTUP_TRIALS, median_warmup: int = median_first_epoch(15)) -> None:
        self.cheap_rungs, self.eta, self.hold = cheap_rungs, eta, hold
        self.median_startup, self.median_warmup = median_startup, median_warmup

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if step >= self.cheap_rungs:
            return self.below_median(study, trial, step)
        if warm_start_of(trial) is not None:
            return False
        score = trial.intermediate_values[step]
        return not promoted(score, rung_scores(study, step, trial.number), self.eta, self.hold)

    def below_median(self, study: optuna.Study, trial: FrozenTrial, step: int) -> bool:
        """The median rule at a step of the full training: Optuna's MedianPruner, but the trial's best score
        so far is taken over its full training only. Optuna's takes it over all its steps, so a cheap rung's
        score (another fidelity) stood for the trial: a good rung-2 score kept a weak full training going."""
        if step < self.cheap_rungs + self.median_warmup:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self.median_startup:
            return False
        at_step = [t.intermediate_values[step] for t in complete if step in t.intermediate_values]
        at_step = [v for v in at_step if not math.isnan(v)]
        if not at_step:
            return False
        own = [v for s, v in trial.intermediate_values.items() if s >= self.cheap_rungs and not math.isnan(v)]
        return not own or max(own) < statistics.median(at_step)  # only NaN so far: it diverged


RANKED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # whose rung scores count: finished or running


def scores_at(trials: list[FrozenTrial], step: int, but: int | None = None) -> list[float]:
    """The scores `trials` (but trial `but`) reported at one step (one rung), finished or still running."""
    return [t.intermediate_values[step] for t in trials
            if t.state in RANKED and t.number != but and step in t.intermediate_values]


def rung_scores(study: optuna.Study, step: int, but: int | None = None) -> list[float]:
    """The scores other trials reported at one step (one rung): finished or still running."""
    return scores_at(study.get_trials(deepcopy=False, states=RANKED), step, but)


def late_promotions(trials: list[FrozenTrial], step: int, eta: float = REDUCTION_FACTOR,
                    hold: int = 0) -> list[FrozenTrial]:
    """ASHA's late promotion: the trials screened out at cheap rung `step` whose score now ranks among the
    rung's best 1/eta (more scores have come in since they finished, and the rung keeps more of them), and
    whose candidate no trial trains on yet; none while the rung holds fewer than `hold` scores."""
    scores = sorted(scores_at(trials, step), reverse=True)
    keep = int(len(scores) // eta)
    if keep == 0 or len(scores) < hold:
        return []
    taken = {p[0] for t in trials if (p := promotion_of(t)) is not None}
    return [t for t in trials if t.state == TrialState.PRUNED and t.last_step == step and t.number not in taken
            and outcome_of(t) == Outcome.SCREENED and t.intermediate_values[step] >= scores[keep - 1]]


def queue_late_promotions(study: optuna.Study, step: int, eta: float, storage: optuna.storages.BaseStorage,
                          url: str | None, hold: int = 0) -> list[int]:
    """Queue each late promotion at rung `step` (`late_promotions`) as a trial of the same parameters that
    starts at the next rung (`record.promoted_as`); returns the screened trials' numbers. Read and queued
    under the study's lock (`exclusive`), so workers finishing the rung together queue each candidate once.
    A queued trial runs before any new candidate is drawn (Optuna takes waiting trials first)."""
    with exclusive(storage, url, study.study_name):
        promotions = late_promotions(study.get_trials(deepcopy=False), step, eta, hold)
        for trial in promotions:
            study.enqueue_trial(trial.params, user_attrs=promoted_as(trial.number, step + 1))
    return [t.number for t in promotions]
