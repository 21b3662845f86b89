"""Known designs as a starting point: the models our searches found at the budgets nearest this one (one found
at a smaller budget widened to fill this one), the hand-made references that fit the budget and the space (a
too-large design narrowed until it fits), and any spec files the user names, enqueued as a study's first
trials: once, however many commands start together on the study (`exclusive`), and again only while none of a
design's trials reached a result. The scaling of a design's widths also serves `nas search --widths filled`
(`filled`): every candidate trained as its widest copy within the budgets."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from numbers import Real
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..bundled import found_files, reference_files
from ..cost import Budgets, check_buildable, count_params, over_budget, spec_costs
from ..errors import UsageError
from ..model import build
from ..store.record import queued_as, warm_start_of
from ..store.storage import exclusive
from ..space import Space
from ..spec import Spec, load_spec

# Narrowing tries every width at 99 %, 98 %, ... of the design's (a count takes a few milliseconds); below a
# quarter it is no longer the design people made (and, clamped at the space's narrowest widths, stops shrinking)
NARROWING_STEPS = tuple(p / 100 for p in range(99, 24, -1))
# Widening a model found at a smaller budget tries 4x, 3.99x, ... 1.01x (the space's widest widths cap it sooner)
WIDENING_STEPS = tuple(p / 100 for p in range(400, 100, -1))
# --widths filled: every candidate at the widest of these factors (widened, as drawn, or narrowed) that fits
FILLING_STEPS = WIDENING_STEPS + (1.0,) + NARROWING_STEPS
# --widen-best: a copy of the study's best with fewer than this many times its parameters is that design
# trained again (a widened copy that became the best has no room left), so it is not queued
LEADER_GROWTH = 1.1
NOT_QUEUED = "not queued again"  # enqueue's note on a design the study has already (run, queued or running)


def warm_starts(space: Space, budget: int | Budgets, files: list[str], references: bool = True
                ) -> list[tuple[str, dict, dict]]:
    """(name, parameters, moved) of every design to enqueue: the spec a space's `arch:` names, the found
    models nearest the budget (`nearest_found`; one found at a smaller budget widened to fill this one:
    `widened`) and the bundled references, each that fits the budget(s) and the space, a too-large one
    narrowed to fit (`narrowed`; the others are skipped), then `files` (one that does not fit is refused:
    UsageError)."""
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)
    budget = budgets.params
    chosen = []
    named = [(str(f), load_spec(f), True, False) for f in files]
    own = [(space.fixed_from, space.fixed, False, False)] if space.fixed is not None else []  # `arch: <spec>`
    found = [(f"found/{p.stem}", load_spec(p), False, _found_budget(p) < budget) for p in nearest_found(budget)]
    bundled = (own + found + [(p.stem, load_spec(p), False, False) for p in reference_files()]) if references else []
    for name, spec, required, widen in bundled + named:
        check_buildable(spec, name, UsageError)  # a named file's design is counted before it is built
        if any(getattr(spec.arch, key) != value for key, value in space.shape):  # made for other data: said
            stem = dict(space.shape).get("stem", spec.arch.stem)
            name += (" (first and last layer adapted to the data" + (f", {stem} stem added" if stem != spec.arch.stem
                                                                    else "") + ")")
            spec = replace(spec, arch=replace(spec.arch, **dict(space.shape)))
        params = count_params(build(spec))
        over = over_budget(spec_costs(spec), budgets)
        if over and not required and (narrow := narrowed(spec, space, budgets)):
            spec, factor, params = narrow
            name = f"{name} at widths x{factor:.2f}"
            over = []
        elif widen and not over and (wide := widened(spec, space, budgets)):
            spec, factor, params = wide
            name = f"{name} at widths x{factor:.2f}"
        fit = space.params_for(spec)
        if not required and fit is not None and any(fit[0] == params for _, params, _ in chosen):
            continue  # the same design under another name (the space's own spec is a found model)
        if not over and fit is not None:
            chosen.append((name, *fit))
        elif required:
            why = (f"{params:,} parameters >= budget {budget:,}" if params >= budget
                   else "; ".join(map(str, over)) if over else f"the space {space.name} cannot draw this design")
            raise UsageError(f"--warm-start {name}: {why}")
    return chosen


def nearest_found(budget: int) -> list[Path]:
    """The found models to start a search at `budget` parameters from: the one found at that budget, else the
    nearest found at a larger budget (narrowed to fit by warm_starts); and the nearest found at a smaller one
    (widened to fill the budget by warm_starts): the best known designs on either side."""
    by_budget = sorted((_found_budget(p), p) for p in found_files())
    exact = [p for b, p in by_budget if b == budget]
    above = exact or [p for b, p in by_budget if b > budget][:1]
    below = [p for b, p in by_budget if b < budget][-1:]
    return above + below


def _found_budget(path: Path) -> int:
    """The parameter budget a found model was searched at (its file's `search.budget`)."""
    return json.loads(path.read_text())["search"]["budget"]


def narrowed(spec: Spec, space: Space, budget: int | Budgets) -> tuple[Spec, float, int] | None:
    """The widest copy of `spec` under `budget` (the parameters, or every budget) with every width (blocks,
    transition, head) scaled by one factor below 1 and moved to the nearest width the space draws, with that
    factor and its parameter count; None if none fits. Its shape (stages, blocks, head) and its training
    recipe stay the design's own."""
    return _widest_fit(spec, space, budget, NARROWING_STEPS)


def widened(spec: Spec, space: Space, budget: int | Budgets) -> tuple[Spec, float, int] | None:
    """As `narrowed`, with factors above 1: the widest copy of a design that fits `budget` with room to spare
    (a model found at a smaller budget); None if no wider copy fits, or the space's widest widths stop it
    from growing."""
    wide = _widest_fit(spec, space, budget, WIDENING_STEPS)
    if wide is None or wide[0].arch == spec.arch:
        return None
    # the space's widest widths stop some widths growing, so several factors give this copy: name the smallest
    factor = min(f for f in WIDENING_STEPS if f <= wide[1] and _scaled(spec, space, f).arch == wide[0].arch)
    return wide[0], factor, wide[2]


def filled(spec: Spec, space: Space, budget: int | Budgets) -> tuple[Spec, float, int] | None:
    """`nas search --widths filled`: the widest copy of `spec` within `budget` at any of FILLING_STEPS (a design
    with room widened, one over a budget narrowed, as `widened` and `narrowed` scale them), with its factor and
    parameter count; None if even its narrowest copy is over a budget."""
    return _widest_fit(spec, space, budget, FILLING_STEPS)


def can_fill(spec: Spec, space: Space, budget: int | Budgets) -> bool:
    """Whether `filled` finds a copy within `budget`: the narrowest copy fits (the sampler's screen, which
    redraws up to 16 times per proposal, cannot afford `filled`'s tens of counts)."""
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)
    return not over_budget(spec_costs(_scaled(spec, space, FILLING_STEPS[-1])), budgets)


def as_trained(spec: Spec, space: Space, budget: int | Budgets, fill: bool) -> tuple[Spec, float | None]:
    """What a candidate drawn as `spec` trains as, and the factor its widths were scaled by: with `fill`
    (`--widths filled`) its `filled` copy, else (or where no copy fits: the gate rejects it) `spec`, None."""
    copy = filled(spec, space, budget) if fill else None
    return (spec, None) if copy is None else (copy[0], copy[1])


def fits(spec: Spec, space: Space, budget: int | Budgets, fill: bool) -> bool:
    """Whether a candidate drawn as `spec` is trained rather than rejected: with `fill`, whether a copy of it
    can be scaled to fit (`can_fill`), else whether it is within every budget itself."""
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)
    return can_fill(spec, space, budgets) if fill else not over_budget(spec_costs(spec), budgets)


def _widest_fit(spec: Spec, space: Space, budget: int | Budgets, factors: tuple[float, ...]
                ) -> tuple[Spec, float, int] | None:
    """The copy of `spec` at the first of `factors` (widest first) that is within every budget, with that
    factor and its parameter count; None if none is."""
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)
    too_large = set()  # snapped to the space's widths, most factors repeat a design already counted (75 -> ~10)
    for factor in factors:
        candidate = _scaled(spec, space, factor)
        if candidate.arch in too_large:
            continue
        cost = spec_costs(candidate)  # the gate's counts, from the spec (a few milliseconds)
        if not over_budget(cost, budgets):
            return candidate, factor, cost.params
        too_large.add(candidate.arch)
    return None


def _scaled(spec: Spec, space: Space, factor: float) -> Spec:
    """`spec` with every width (blocks, transition, head) times `factor`, moved to the nearest the space draws."""
    a = spec.arch

    def scaled(width: int, key: str) -> int:
        return int(space.nearest(key, max(1, round(width * factor)))) if width else 0

    return replace(spec, arch=replace(a, stages=tuple(tuple(scaled(w, "arch.width") for w in stage)
                                                      for stage in a.stages),
                                      transition_width=scaled(a.transition_width, "arch.transition_width"),
                                      head_width=scaled(a.head_width, "arch.head_width")))


def enqueue(study: optuna.Study, starts: list[tuple[str, dict, dict]],
            storage: optuna.storages.BaseStorage | None = None, url: str | None = None) -> list[str]:
    """Queue each design unless the study has it already; returns what was said of each.

    A design counts as run once one of its trials reached a result (COMPLETE or PRUNED), and as queued while
    one waits or runs (WAITING or RUNNING: a retry of a dead worker's trial is one); a design whose trials
    all failed or were interrupted is queued again. The check and the queueing are one step under
    `exclusive(storage, url, study)`, so commands that start together on one study queue each design once."""
    if not starts:
        return []
    said, queued = [], []
    with exclusive(storage, url, study.study_name):
        trials = study.get_trials(deepcopy=False)  # read under the lock: another command's queueing is in
        for name, params, moved in starts:
            same = [t for t in trials if _same_design(_queued_params(t), params)
                    # the retry of a trial whose worker died before it drew anything: known by its name only
                    or (not _queued_params(t) and warm_start_of(t) == name)]
            notes = []
            if moved:
                notes.append(", ".join(f"{k} {old} -> {new}" for k, (old, new) in moved.items())
                             + ": the nearest the space draws")
            if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in same):
                notes.append(f"run before: {NOT_QUEUED}")
            elif any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in same) or any(
                    _same_design(p, params) for p in queued):
                notes.append(f"queued or running already: {NOT_QUEUED}")
            else:
                study.enqueue_trial(params, user_attrs=queued_as(name))
                queued.append(params)
                if same:  # only failed or interrupted trials: it never reached a result
                    numbers = ", ".join(str(t.number) for t in same)
                    notes.append(f"queued again: trial{'s' if len(same) > 1 else ''} {numbers} did not reach a result")
            said.append(name + (f" ({'; '.join(notes)})" if notes else ""))
    return said


def queue_widened_best(study: optuna.Study, spec: Spec, number: int, space: Space, budgets: Budgets,
                       storage: optuna.storages.BaseStorage | None = None, url: str | None = None) -> str | None:
    """`nas search --widen-best`: queue the widest copy within every budget (`widened`) of trial `number`'s
    design, the study's new best, as a known design named `trial N at widths xF`; nothing when it would have
    under LEADER_GROWTH times the parameters, the space cannot draw it, or the study has it already (another
    worker queued it, or it ran). Returns what `enqueue` said of it, or None when nothing was queued."""
    wide = widened(spec, space, budgets)
    if wide is None or wide[2] < LEADER_GROWTH * spec_costs(spec).params:  # the counts `widened` compares
        return None
    fit = space.params_for(wide[0])
    if fit is None:
        return None
    queued = enqueue_new(study, [(f"trial {number} at widths x{wide[1]:.2f}", *fit)], storage, url)
    return queued[0] if queued else None


def enqueue_new(study: optuna.Study, starts: list[tuple[str, dict, dict]],
                storage: optuna.storages.BaseStorage | None = None, url: str | None = None) -> list[str]:
    """`enqueue`, returning what it said of the designs it queued now (not of those the study had already):
    what follows a new best (--widen-best, --neighbours) reports."""
    return [said for said in enqueue(study, starts, storage, url) if NOT_QUEUED not in said]


def _queued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial was queued with (enqueue_trial's `fixed_params`), else those it drew (a
    retry, a drawn trial): what Optuna's own skip_if_exists compares."""
    return trial.system_attrs.get("fixed_params", trial.params)


def _same_design(have: dict[str, Any], params: dict[str, Any]) -> bool:
    """Optuna's skip_if_exists comparison: the same names, each value equal (numbers to the bit, NaN = NaN)."""
    if have.keys() != params.keys():
        return False
    for key, value in params.items():
        other = have[key]
        if isinstance(value, Real) and not isinstance(value, bool) and isinstance(other, Real):
            if not (value == other or (math.isnan(float(value)) and math.isnan(float(other)))):
                return False
        elif value != other:
            return False
    return True
