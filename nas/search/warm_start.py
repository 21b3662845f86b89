"""Known designs as a starting point: the hand-made references that fit the budget and the space
(a too-large one narrowed until it fits), and any spec files the user names, enqueued as a study's
first trials."""

from __future__ import annotations

from dataclasses import replace

import optuna

from ..bundled import reference_files
from ..cost import count_params
from ..errors import UsageError
from ..model import build
from ..store.record import queued_as
from ..space import Space
from ..spec import Spec, load_spec

# Narrowing tries every width at 99 %, 98 %, ... of the design's (a count takes a few milliseconds); below a
# quarter it is no longer the design people made (and, clamped at the space's narrowest widths, stops shrinking)
NARROWING_STEPS = tuple(p / 100 for p in range(99, 24, -1))


def warm_starts(space: Space, budget: int, files: list[str], references: bool = True) -> list[tuple[str, dict, dict]]:
    """(name, parameters, moved) of every design to enqueue: the bundled references that fit the budget
    and the space, a too-large one narrowed to fit (`narrowed`; the others are skipped), then `files`
    (one that does not fit is refused: UsageError)."""
    chosen = []
    named = [(str(f), load_spec(f), True) for f in files]
    bundled = [(p.stem, load_spec(p), False) for p in reference_files()] if references else []
    for name, spec, required in bundled + named:
        params = count_params(build(spec))
        if params >= budget and not required and (narrow := narrowed(spec, space, budget)):
            spec, factor, params = narrow
            name = f"{name} at widths x{factor:.2f}"
        fit = space.params_for(spec)
        if params < budget and fit is not None:
            chosen.append((name, *fit))
        elif required:
            why = (f"{params:,} parameters >= budget {budget:,}" if params >= budget
                   else f"the space {space.name} cannot draw this design")
            raise UsageError(f"--warm-start {name}: {why}")
    return chosen


def narrowed(spec: Spec, space: Space, budget: int) -> tuple[Spec, float, int] | None:
    """The widest copy of `spec` under `budget` with every width (blocks, transition, head) scaled by one
    factor and moved to the nearest width the space draws, with that factor and its parameter count;
    None if none fits. Its shape (stages, blocks, head) and its training recipe stay the design's own."""
    a = spec.arch

    def scaled(width: int, key: str, factor: float) -> int:
        return int(space.nearest(key, max(1, round(width * factor)))) if width else 0

    for factor in NARROWING_STEPS:
        arch = replace(a, stages=tuple(tuple(scaled(w, "arch.width", factor) for w in stage) for stage in a.stages),
                       transition_width=scaled(a.transition_width, "arch.transition_width", factor),
                       head_width=scaled(a.head_width, "arch.head_width", factor))
        candidate = replace(spec, arch=arch)
        params = count_params(build(candidate))
        if params < budget:
            return candidate, factor, params
    return None


def enqueue(study: optuna.Study, starts: list[tuple[str, dict, dict]]) -> list[str]:
    """Queue each design once (a resumed study skips those it has run); returns what was said of each."""
    said = []
    for name, params, moved in starts:
        before = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(params, user_attrs=queued_as(name), skip_if_exists=True)
        # skip_if_exists does not say whether it skipped; a trial more says it queued (on a shared study
        # another worker's new trial can make a skipped design read as queued: this is only what is said)
        queued = len(study.get_trials(deepcopy=False)) > before
        notes = []
        if moved:
            notes.append(", ".join(f"{k} {old} -> {new}" for k, (old, new) in moved.items())
                         + ": the nearest the space draws")
        if not queued:
            notes.append("run before: not queued again")
        said.append(name + (f" ({'; '.join(notes)})" if notes else ""))
    return said
