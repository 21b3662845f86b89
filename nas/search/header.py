"""What a search prints before it starts: the study, the budgets, the space, the device, the fidelities, the data
(and what the data changed in the space), the warm starts; and what it says of a space changed under a study."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..cost import Budgets
from ..data import header
from ..device import describe, usable_cores
from ..fidelity import STEP_BATCH, Fidelity
from ..progress import format_duration
from ..store.credentials import redact
from ..store.settings import stored_space_file
from .objective import DRAWN, FILLED
from .pruner import MEDIAN_STARTUP_TRIALS, hold_scores, median_first_epoch
from .sampler import describe_sampler

if TYPE_CHECKING:
    from .plan import Plan


def run_header(plan: Plan, args: argparse.Namespace, budgets: Budgets, n_before: int, cheap: tuple[Fidelity, ...],
               started: list[str], space_before: str | None = None, rung_unit: str = "images",
               widths: str = DRAWN) -> str:
    """What this run will do, before it starts."""
    trials = "unlimited" if plan.trials is None else f"{plan.trials:,}"
    hold = hold_scores(plan.trials, len(cheap), args.eta, args.promote_after)
    lines = [
        f"{'continuing' if n_before else 'new'} study {plan.study_name!r}"
        + (f" ({n_before} trials so far)" if n_before else "") + f" in {redact(plan.url)}",
        f"budget {budgets}, space {plan.space.name} ({plan.space.path}), outputs in {plan.out}",
        f"device {describe(plan.device)}",
        f"{plan.full.train_images:,} training / {plan.val_images:,} validation images, {args.epochs} epochs per "
        f"full training, {trials} trials" + (f" or {format_duration(args.timeout)}" if args.timeout else "")
        + f", {args.jobs} worker process(es)" + jobs_hint(plan, args.jobs),
        (f"rungs: {' -> '.join(f'{r.epochs}x{r.train_images:,}' for r in (*cheap, plan.full))} (epochs x images"
         + (f"; cheap rungs in optimiser steps: images for a batch of {STEP_BATCH}, batch b trains on b/{STEP_BATCH}"
            if rung_unit == "steps" else "") + f"; the best 1/{args.eta:g} at each cheap rung go on"
         + (f", once it has {hold} scores, or later as it ranks them" if hold else "")
         + f"); in the full training {median_rule(args.epochs)}" if cheap else
         f"rungs: none (every candidate at full fidelity; {median_rule(args.epochs, behind_rungs=False)})")
        + (f"; then the best {args.finalists} again with {args.finalist_seeds} new seed(s) each"
           if args.finalists else ""),
        f"sampler: {describe_sampler(args.sampler, args.startup_trials)}"
        + ("; each new best with room in the budgets is followed by its widest copy (--widen-best)"
           if args.widen_best else "")
        + (f"; each new best is followed by {plan.neighbours} of its neighbours, one parameter moved one step "
           "(--neighbours)" if plan.neighbours else ""),
        *(["widths: every candidate filled to the budgets (--widths filled): its widths scaled by one factor to "
           "its widest copy within them; the widths drawn are proportions"] if widths == FILLED else []),
        header(plan.data),  # the data, its shape and preprocessing, the rule, what was skipped
        *([f"space: {plan.space.rule}"] if plan.space.rule else []),  # what the data changed in the space
        *([f"space: every candidate has the architecture {fixed_arch_code(plan)}; only the training is drawn"]
          if plan.space.arch is not None else []),
    ]
    if space_before is not None:
        lines.append(space_changed(plan, n_before, space_before))
    if started:
        lines.append(f"warm start: {'; '.join(started)}")
    return "\n".join(lines)


def median_rule(epochs: int, behind_rungs: bool = True) -> str:
    """When the median rule stops a full training of `epochs` (nas.search.pruner), in words."""
    first = median_first_epoch(epochs, behind_rungs)
    if first >= epochs:  # the last epoch is never judged
        return "no median rule (too few epochs)"
    return f"the median rule from epoch {first}, once {MEDIAN_STARTUP_TRIALS} have completed"


def fixed_arch_code(plan: Plan) -> str:
    """The architecture half of the code of a space's fixed architecture (as the data shapes it)."""
    return next(plan.space.lowest_specs()).code.split(" | ")[0]


def jobs_hint(plan: Plan, jobs: int) -> str:
    """On a CPU with cores to spare, what --jobs would buy: small CNNs keep one thread busier than two (two
    one-thread workers trained 1.75x the images per second of one two-thread worker: docs/results.md)."""
    cores = usable_cores()
    if plan.device.type != "cpu" or jobs >= cores:
        return ""
    return f" (--jobs {cores} trains more candidates per hour on this CPU's {cores} cores: one thread each)"


def space_changed(plan: Plan, n_before: int, space_before: str) -> str:
    """What the header and the summary say of a study continued with --space-changed."""
    now = stored_space_file(plan.space.path)
    if not n_before:
        return f"space {plan.space.name} changed (--space-changed): was {space_before}, now {now}; no trials before"
    return (f"space {plan.space.name} changed (--space-changed): trials 0-{n_before - 1} were drawn from it as "
            f"{space_before} held it, the trials from {n_before} on from {now}")
