"""The report's study, read once (`Trials`), and its figure sections: each a title, a caption and a figure, or a
note saying why there is none (`sections`). The figures themselves are drawn by nas.report.figures and
nas.report.choices."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Callable

import optuna
import plotly.graph_objects as go

from . import choices, figures
from ..errors import first_line
from ..store.record import (FinalistRun, Outcome, Reevaluation, TrialRecord, read_finalist_runs, read_reevaluations,
                            read_trial)

log = logging.getLogger(__name__)

SLICE_PARAMS, PARALLEL_PARAMS = 6, 8


@dataclass
class Section:
    title: str
    caption: str
    figure: go.Figure | None = None
    note: str = ""  # shown instead of a figure that cannot be drawn


@dataclass(frozen=True)
class Trials:
    """A study's trials read once: the counts and every figure agree while a search adds trials."""

    records: list[TrialRecord]
    complete: choices.Snapshot  # the complete trials, for Optuna's plot functions
    reevaluations: dict[int, Reevaluation] = field(default_factory=dict)  # the finalists' new seeds, by trial
    finalist_runs: list[FinalistRun] = field(default_factory=list)  # when and where each of those trainings ran

    @classmethod
    def read(cls, study: optuna.Study) -> "Trials":
        frozen = study.get_trials(deepcopy=False)
        records = [read_trial(t) for t in frozen]
        done = {r.number for r in records if r.outcome == Outcome.COMPLETE}
        return cls(records, choices.snapshot([t for t in frozen if t.number in done]), read_reevaluations(study),
                   read_finalist_runs(study))

    def of(self, outcome: Outcome) -> list[TrialRecord]:
        return [r for r in self.records if r.outcome == outcome]


# ---------------------------------------------------------------- the figures' sections


def _guard(title: str, caption: str, make: Callable[[], go.Figure], needs: str | None = None) -> Section:
    """A figure, or a note saying why there is none: a report never crashes on a young study."""
    if needs:
        return Section(title, caption, note=needs)
    try:
        with choices.quiet():
            return Section(title, caption, figure=make())
    except Exception as exc:  # Optuna raises on many thin studies (one trial, one value, ...)
        return Section(title, caption, note=f"not drawn: {first_line(exc)}")


def sections(trials: Trials, budget: int | None, now: datetime.datetime,
             limits: dict[str, int | None] | None = None) -> list[Section]:
    """`limits`: the study's device budgets (StudySettings.DEVICE_BUDGETS: max_macs, max_ram, max_flash)."""
    records, complete = trials.records, trials.complete
    limits = limits or {}
    n_complete = len(complete.numbers)
    none_complete = "no trial has completed yet: nothing to draw" if not n_complete else None
    few = none_complete or ("needs at least 2 completed trials" if n_complete < 2 else None)

    top: list[str] = []
    if not few:
        try:  # the most important choices pick the axes of the parallel-coordinate and slice plots
            with choices.quiet():
                top = list(optuna.importance.get_param_importances(complete.study))
        except Exception:  # Optuna's importance fails on some thin studies: the axes fall back to every parameter
            log.debug("parameter importances not computed", exc_info=True)
            top = []
    top = top or sorted({p for t in complete.study.trials for p in t.params})

    no_size = None if any(r.params is not None for r in records) else "no trial has been counted yet"
    return [
        _guard("Validation accuracy versus parameters",
               "Every candidate at its fvcore parameter count. Filled: complete trials at their final-epoch "
               "validation accuracy; open: pruned (grey), interrupted (brown) and running (green) trials at "
               "the accuracy of their last epoch (not comparable with a final accuracy, so never on the front). "
               "The lane below holds candidates with no accuracy: rejected by the budget gate before any "
               "training, diverged or failed. Dashed: the budget (a model needs fewer parameters). Orange "
               "steps: the Pareto front — no complete trial is both smaller and more accurate.",
               lambda: figures.tradeoff_figure(records, "params", "parameters (fvcore count)", budget), no_size),
        _guard("Validation accuracy versus MACs",
               "The same candidates against multiply-accumulates per image (fvcore); the front is the MACs front.",
               lambda: figures.tradeoff_figure(records, "macs", "MACs per image (fvcore)", limits.get("max_macs")),
               no_size),
        *(_guard(f"Validation accuracy versus {title.split(' (')[0]}",
                 "The same candidates against the device cost computed from each one's layer sequence before any "
                 "training (trials of studies made before it was recorded: from their spec); the front is this "
                 "cost's front. Dashed: its budget, where the study has one (a model may need as much, no more).",
                 lambda cost=cost, title=title, limit=limit: figures.device_cost_figure(
                     records, cost, title, limits.get(limit)), no_size)
          for cost, title, limit in figures.DEVICE_COSTS),
        _guard("Optimization history",
               "Final-epoch validation accuracy of each complete trial, and the best so far, by trial number. "
               "Rejected candidates are left out (they never trained); their numbers are gaps on the axis.",
               lambda: figures.history_figure(records), none_complete),
        _guard("Learning curves",
               "Validation accuracy after every epoch of every trained trial: blue complete (drawn on top), "
               "grey pruned, purple diverged, brown interrupted, green running, each trial in its own shade. "
               "Hover names a curve's trial; the legend lists complete trials best first (a click hides one, a "
               "double click shows it alone). Where a grey curve ends, the median pruner stopped it.",
               lambda: figures.learning_curves_figure(records),
               None if any(r.curve for r in records) else "no trial has finished an epoch yet"),
        _guard("Cheap rungs",
               "Successive halving: every trained candidate is first judged cheaply (a few epochs on part of "
               "the training images, its schedule compressed to that run); only the best third of a rung goes "
               "on. One panel per rung, each on its own axis: a score there says nothing next to a full "
               "training's. Filled: promoted; open: stopped there.",
               lambda: figures.rungs_figure(records),
               None if any(r.rungs for r in records) else "this study trains every candidate at full fidelity"),
        _guard("Parameter importances",
               "How much each sampled choice explains the validation accuracy of complete trials (Optuna's "
               "default PED-ANOVA). Choices that only exist in some candidates (a third stage, an optimizer's "
               "learning rate) are judged on those. Rejected candidates play no part, and with fewer than about "
               "20 complete trials the ranking is mostly noise.",
               lambda: choices.importances_figure(complete), few),
        _guard("Parallel coordinates",
               f"Complete trials across the {PARALLEL_PARAMS} most important choices, coloured by "
               "validation accuracy (log scale of the error, as on the first axis; the best drawn on top). "
               "'None' on an axis: the choice does not exist in that trial (the SGD learning rate of an AdamW "
               "trial, the widths of a stage it does not have).",
               lambda: choices.parallel_figure(complete, top[:PARALLEL_PARAMS]), few),
        _guard("Slices of the most important choices",
               "Validation accuracy of complete trials (log scale of the error) against each of the most "
               "important choices, most important first, coloured by trial number: early trials dark, late "
               "ones light. Log x axes where the space samples on a log scale (learning rates, weight decay).",
               lambda: choices.slice_figure(complete, top[:SLICE_PARAMS]), none_complete),
        _guard("Timeline",
               "When each trial ran, coloured by what happened to it. Rejections take about 0.1 s, so they are "
               "drawn as markers at the moment they happened. Light blue: the finalists' trainings with new "
               "seeds, after the search, in their trial's row (one thin lane per seed).",
               lambda: figures.timeline_figure(records, now, trials.finalist_runs),
               None if records else "no trials yet"),
    ]
