"""The search's samplers (`--sampler`): a TPE that does not waste trials on candidates the budget gate would
reject, and plain random search, the baseline a model-based sampler has to beat.

Every cost the gate checks (parameters, MACs, peak RAM, flash) is a known, cheap function of the sampled
parameters, so there is no need to learn it from rejections alone: each joint (relative) proposal of TPE
is screened with the gate's own counts (nas.cost.spec_costs), and redrawn a few times if it would not
fit. The gate in the objective still decides and records every over-budget candidate that gets through
(random start-up trials, exhausted redraws). Random search draws every parameter independently and
learns nothing: its over-budget draws are rejected untrained, as the gate rejects any.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler

REDRAWS = 16
SAMPLERS = ("tpe", "random")  # --sampler; the first is the default
TPE_STARTUP_TRIALS = 10  # random draws (finished or pruned trials) before TPE models the study


class BudgetAwareTPESampler(TPESampler):
    def __init__(self, fits: Callable[[dict[str, Any]], bool | None], redraws: int = REDRAWS, **tpe_kwargs: Any):
        """`fits(params)` says whether a parameter set fits the budget, or None if it cannot tell."""
        super().__init__(**tpe_kwargs)
        self._fits = fits
        self._redraws = redraws

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = super().sample_relative(study, trial, search_space)
        for _ in range(self._redraws):  # empty during the random start-up: nothing to screen
            if not params or self._fits(params) is not False:
                break
            params = super().sample_relative(study, trial, search_space)
        return params


def make_sampler(name: str, fits: Callable[[dict[str, Any]], bool | None], seed: int,
                 startup: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler `--sampler name` names, seeded: TPE (multivariate and grouped, as the spaces' conditional
    parameters need; a constant liar for the workers beside it; `startup` random draws before its model, None:
    TPE_STARTUP_TRIALS) screened with `fits`, or random search."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name != "tpe":
        raise ValueError(f"unknown sampler {name!r}: one of {', '.join(SAMPLERS)}")
    return BudgetAwareTPESampler(fits, seed=seed, multivariate=True, group=True,
                                 n_startup_trials=TPE_STARTUP_TRIALS if startup is None else startup,
                                 constant_liar=True)


def describe_sampler(name: str, startup: int | None = None) -> str:
    """What the run header says of the sampler."""
    if name == "random":
        return "random search (every draw independent; a draw over a budget is rejected untrained)"
    draws = TPE_STARTUP_TRIALS if startup is None else startup
    return f"TPE (multivariate; {draws} random draws first; proposals screened with the budget gate's own costs)"
