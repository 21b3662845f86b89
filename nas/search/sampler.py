"""A TPE sampler that does not waste trials on candidates the budget gate would reject.

Every cost the gate checks (parameters, MACs, peak RAM, flash) is a known, cheap function of the sampled
parameters, so there is no need to learn it from rejections alone: each joint (relative) proposal of TPE
is screened with the gate's own counts (nas.cost.spec_costs), and redrawn a few times if it would not
fit. The gate in the objective still decides and records every over-budget candidate that gets through
(random start-up trials, exhausted redraws).
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler

REDRAWS = 16


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
