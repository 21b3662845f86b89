"""Known designs as a starting point: the hand-made references that fit the budget and the space,
and any spec files the user names, enqueued as a study's first trials."""

from __future__ import annotations


import optuna

from .bundled import reference_files
from .cost import count_params
from .errors import UsageError
from .model import build
from .space import Space
from .spec import load_spec


def warm_starts(space: Space, budget: int, files: list[str], references: bool = True) -> list[tuple[str, dict, dict]]:
    """(name, parameters, moved) of every design to enqueue: the bundled references that fit the budget
    and the space (the others are skipped), then `files` (one that does not fit is refused: UsageError)."""
    chosen = []
    named = [(str(f), load_spec(f), True) for f in files]
    bundled = [(p.stem, load_spec(p), False) for p in reference_files()] if references else []
    for name, spec, required in bundled + named:
        params = count_params(build(spec))
        fit = space.params_for(spec)
        if params < budget and fit is not None:
            chosen.append((name, *fit))
        elif required:
            why = (f"{params:,} parameters >= budget {budget:,}" if params >= budget
                   else f"the space {space.name} cannot draw this design")
            raise UsageError(f"--warm-start {name}: {why}")
    return chosen


def enqueue(study: optuna.Study, starts: list[tuple[str, dict, dict]]) -> list[str]:
    """Queue each design once (a resumed study skips those it has run); returns what was said of each."""
    said = []
    for name, params, moved in starts:
        study.enqueue_trial(params, user_attrs={"warm_start": name}, skip_if_exists=True)
        changes = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in moved.items())
        said.append(name + (f" ({changes}: the nearest the space draws)" if changes else ""))
    return said
