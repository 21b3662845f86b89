"""Local search around the study's best (`nas search --neighbours N`): when a full training becomes the best,
N of its neighbours, each the same candidate with one sampled parameter moved one step, are queued as known
designs (never screened out at a cheap rung: each reaches the full training), so the workers spend the next
minutes next to the best instead of on random draws. A step: a choice swapped for another, a number moved
by 10-25 % of its range (log ranges: by a factor of 1.2-1.6), an integer (a width, a block count) by one or
two of its steps, the other way where an end of the range would cut the step short; a block or stage the
step adds copies the one before it. A neighbour over a budget, one the space cannot draw or one the study
has is passed over; in a study whose candidates fill the budgets (`--widths filled`), also one that fills to
the design the best is (a width moved in proportion to the others: scaled back, the same model)."""

from __future__ import annotations

import random
import re
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from ..cost import Budgets
from ..space import Space
from .objective import DRAWN, FILLED
from .warm_start import as_trained, enqueue_new, fits

# --neighbours' default where the search starts from known designs: one for each of two workers. Without
# a start, the first bests are weak draws, and their neighbours took the time the cheap rungs would have
# screened better designs in (docs/results.md, 2026-12-05): none there
NEIGHBOURS = 2
BLOCK_PARAM = re.compile(r"(?P<kind>\w+)_s(?P<stage>\d+)(?:_b(?P<block>\d+))?")  # width_s2_b3, blocks_s2


def neighbours(trial: FrozenTrial, space: Space, budgets: Budgets, count: int, seed: int, widths: str = DRAWN
               ) -> list[tuple[str, dict[str, Any], dict]]:
    """Up to `count` neighbours of `trial`, as warm_starts gives designs: (name, parameters, {}), each with
    another parameter moved one step, named `trial N, lr_sgd 0.316 -> 0.25`; only those within every budget
    (`widths` "filled": that can be scaled to fit, and fill to another design than `trial`'s) that the space can
    draw. The same trial and seed give the same neighbours."""
    # the design the best trained (filled: scaled to the budgets); a neighbour filling to it would train it again
    fill = widths == FILLED
    trained = (as_trained(space.sample(_Moved(dict(trial.params))), space, budgets, fill)[0]  # type: ignore[arg-type]
               if fill else None)
    rng = random.Random(f"{seed}/{trial.number}")
    names = sorted(trial.params)
    rng.shuffle(names)
    found: list[tuple[str, dict[str, Any], dict]] = []
    for name in names:
        if len(found) == count:
            break
        old = trial.params[name]
        new = step(old, trial.distributions[name], rng)
        if new == old:
            continue
        try:
            spec = space.sample(_Moved({**trial.params, name: new}))  # type: ignore[arg-type] (its suggest_* calls)
        except _NoNeighbour:
            continue
        fit = space.params_for(spec)  # None: the step left what the space draws (valid padding on a small map)
        if (fit is None or fit[0] == trial.params or any(fit[0] == p for _, p, _ in found)
                or not fits(spec, space, budgets, fill)
                or (trained is not None and as_trained(spec, space, budgets, fill)[0] == trained)):
            continue
        found.append((f"trial {trial.number}, {name} {_short(old)} -> {_short(new)}", fit[0], {}))
    return found


def neighbours_default(starts: list) -> int:
    """How many neighbours follow each new best when --neighbours is not given: NEIGHBOURS where the search
    has known designs to start from (`starts`, whether queued by this run or an earlier one), else none."""
    return NEIGHBOURS if starts else 0


def step(value: Any, distribution: BaseDistribution, rng: random.Random) -> Any:
    """`value` moved one step within `distribution` (see the module's note); `value` itself where it cannot move."""
    if isinstance(distribution, CategoricalDistribution):
        others = [c for c in distribution.choices if c != value]
        return rng.choice(others) if others else value
    if not isinstance(distribution, (FloatDistribution, IntDistribution)):
        return value
    low, high = distribution.low, distribution.high
    sign = rng.choice((-1, 1))
    if isinstance(distribution, IntDistribution) and not distribution.log:
        span = sign * distribution.step * rng.choice((1, 2))
        raws = (value + span, value - span)
    elif distribution.log:
        factor = rng.uniform(1.2, 1.6) ** sign
        raws = (value * factor, value / factor)
    else:
        span = sign * rng.uniform(0.10, 0.25) * (high - low)
        raws = (value + span, value - span)
    moves: list[tuple[Any, bool]] = []  # (the value moved, whether an end of the range cut the move short)
    for raw in raws:
        moved = _on_grid(min(max(raw, low), high), distribution)
        if moved != value:
            moves.append((moved, not low <= raw <= high))
    # a move an end cuts short goes the other way where that has room (min keeps the first of equals):
    # rotation 14.9 -> 15 of 5-15 would train the best again with a 1 % change, a full training for a copy
    return min(moves, key=lambda move: move[1])[0] if moves else value


def _on_grid(value: float, distribution: FloatDistribution | IntDistribution) -> Any:
    """`value` (within the range) on the distribution's grid: its steps, else three significant figures
    (a readable name, the same neighbour) where those stay within the range."""
    low, high = distribution.low, distribution.high
    if isinstance(distribution, IntDistribution):
        return int(low + round((value - low) / distribution.step) * distribution.step)
    if distribution.step:
        return low + round((value - low) / distribution.step) * distribution.step
    short = float(f"{value:.3g}")
    return short if low <= short <= high else value


def queue_neighbours(study: optuna.Study, trial: FrozenTrial, space: Space, budgets: Budgets, count: int,
                     seed: int, storage: optuna.storages.BaseStorage | None = None, url: str | None = None,
                     widths: str = DRAWN) -> list[str]:
    """Queue `trial`'s neighbours (`neighbours`), each once however many workers queue them (`enqueue_new`);
    returns the names of those queued."""
    return enqueue_new(study, neighbours(trial, space, budgets, count, seed, widths), storage, url)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class _Moved:
    """A stand-in trial answering each suggest_* from `params`; a parameter the step brought in (a block or
    stage it added) takes the value of the same parameter one block, else one stage, before it."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def _answer(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        match = BLOCK_PARAM.fullmatch(name)
        if match is None:  # e.g. the transition's width once a pool becomes a 1x1 conv: no block before it
            raise _NoNeighbour(name)
        kind, stage, block = match["kind"], int(match["stage"]), match["block"]
        earlier = ([f"{kind}_s{stage}_b{int(block) - 1}"] if block and int(block) > 1 else []) + \
                  [f"{kind}_s{stage - 1}" + (f"_b{block}" if block else ""), f"{kind}_s{stage - 1}_b1"]
        for other in earlier:
            if other in self.params:
                self.params[name] = self.params[other]  # the next block of an added stage copies this one
                return self.params[name]
        raise _NoNeighbour(name)

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return int(self._answer(name))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return float(self._answer(name))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._answer(name)


class _NoNeighbour(Exception):
    pass
