"""`python -m nas.report --study NAME`: one self-contained HTML page to look at a search.

study -> one snapshot of its trials -> Optuna's plotly figures (made honest for this search) and
our own accuracy-versus-size figures -> studies/<study>/report.html, with plotly.js embedded once,
so the page works offline. Read-only on the study: it can run while the search is running.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import html
import json
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Iterator

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from .cli import Parser, UsageError, format_duration, run_main
from .study import load_study, study_dir

OUTCOMES = ("complete", "pruned", "rejected", "diverged", "failed", "running")
COLORS = {"complete": "#1f77b4", "pruned": "#8c8c8c", "rejected": "#d62728", "diverged": "#9467bd",
          "failed": "#111111", "running": "#2ca02c", "pareto": "#ff7f0e"}
TOP_TRIALS, SLICE_PARAMS, PARALLEL_PARAMS = 10, 6, 8

# Accuracy axes are log-spaced in the error (100 - accuracy), labelled in accuracy: on a linear
# 0-100 % axis one early 10 % trial squeezes 98.9 % and 99.4 % into the same pixel row.
MIN_ERROR = 0.01  # a 100 % accuracy (possible on a tiny validation split) has no log
ACC_TICK_LEVELS = (  # coarse to fine: the first with 3 ticks inside the data's range labels the axis
    (0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.99),
    (0, 20, 40, 60, 70, 80, 85, 90, 92, 94, 95, 96, 97, 98, 98.5, 99, 99.2, 99.4, 99.5, 99.6, 99.7, 99.8, 99.9,
     99.95, 99.99),
    tuple(range(100)) + tuple(99 + i / 10 for i in range(1, 10)) + tuple(99.9 + i / 100 for i in range(1, 10)),
)
ACC_TITLE = "validation accuracy (%) — log scale of the error"


def outcome(trial: FrozenTrial) -> str:
    """What happened to a trial, in the search's words (its state alone calls a rejection 'pruned')."""
    if trial.state == TrialState.FAIL:
        return "failed"
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return "running"  # or a search that was killed: its trial stays RUNNING in the storage
    if trial.state == TrialState.COMPLETE:
        return "complete"
    told = trial.user_attrs.get("outcome")
    return told if told in ("rejected", "diverged") else "pruned"


def accuracy(trial: FrozenTrial) -> tuple[float, int] | None:
    """(validation accuracy, epochs it took) to place a trial on an accuracy axis, if it has one.

    Complete: the final-epoch value. Pruned or running: the last epoch reported, which is NOT a
    final accuracy: the figures draw those apart and keep them off the Pareto front.
    """
    kind = outcome(trial)
    if kind == "complete":
        return float(trial.value), len(trial.intermediate_values)
    if kind in ("pruned", "running") and trial.intermediate_values:
        last = max(trial.intermediate_values)
        return float(trial.intermediate_values[last]), last
    return None


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The (cost, accuracy, trial number) points no other point beats: cheaper-or-equal and more accurate."""
    front: list[tuple[float, float, int]] = []
    for cost, acc, number in sorted(points, key=lambda p: (p[0], -p[1], p[2])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc, number))
    return front


class _Snapshot(optuna.Study):
    """A study's trials read once, optionally filtered, for Optuna's plot functions.

    One snapshot makes the counts and every figure agree while a search is still adding trials;
    a filtered one keeps rejected candidates (never trained, but PRUNED to Optuna) out of figures
    about training.
    """

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]):
        super().__init__(study.study_name, study._storage)  # noqa: SLF001 (read-only: directions)
        self._frozen = trials

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                   ) -> list[FrozenTrial]:
        chosen = [t for t in self._frozen if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        return self.get_trials(deepcopy, states)


@dataclass
class Section:
    title: str
    caption: str
    figure: go.Figure | None = None
    note: str = ""  # shown instead of a figure that cannot be drawn


# ---------------------------------------------------------------- accuracy axes


def _error(acc: float) -> float:
    return max(100.0 - acc, MIN_ERROR)


def acc_axis(errors: list[float]) -> dict:
    """Plotly y-axis settings: log of the error, reversed (better is up), ticks labelled in accuracy."""
    lo, hi = (min(errors) / 1.3, min(max(errors) * 1.3, 100.0)) if errors else (0.1, 100.0)
    ticks: list[float] = []
    for level in ACC_TICK_LEVELS:
        ticks = [a for a in level if lo <= _error(a) <= hi]
        if len(ticks) >= 3:
            break
    ticks = ticks[::math.ceil(len(ticks) / 10)] if ticks else ticks  # at most 10 labels
    # an explicit range: plotly's autorange of one point on a log axis is a sliver
    return dict(type="log", range=[math.log10(hi), math.log10(lo)], tickvals=[_error(a) for a in ticks],
                ticktext=[f"{a:g}" for a in ticks])


def _to_error_axis(fig: go.Figure, hover: Callable[[go.BaseTraceType], str]) -> None:
    """Redraw an Optuna figure's accuracy y values on the log-error axis, hover still in accuracy."""
    errors: list[float] = []
    for trace in fig.data:
        if trace.type != "scatter" or trace.y is None:
            continue
        accs = [float(v) if v is not None and math.isfinite(float(v)) else None for v in trace.y]
        trace.update(y=[None if a is None else _error(a) for a in accs], customdata=accs,
                     hovertemplate=hover(trace) + "<extra></extra>")
        errors += [_error(a) for a in accs if a is not None]
    fig.update_yaxes(**acc_axis(errors))


# ---------------------------------------------------------------- our figures


def tradeoff_figure(trials: list[FrozenTrial], cost: str, cost_title: str, budget: int | None) -> go.Figure:
    """Validation accuracy versus a cost (user attr `params` or `macs`) for every candidate.

    Candidates without an accuracy (rejected by the gate, diverged, failed, or not yet through an
    epoch) sit at their measured cost in a lane below, so none is hidden.
    """
    placed: dict[str, list[tuple[float, float, int, int]]] = {k: [] for k in OUTCOMES}
    lane: dict[str, list[tuple[float, int]]] = {k: [] for k in OUTCOMES}
    for t in trials:
        if cost not in t.user_attrs:
            continue  # failed before the count: no size to draw it at (the summary counts it)
        kind, acc = outcome(t), accuracy(t)
        if acc is None:
            lane[kind].append((t.user_attrs[cost], t.number))
        else:
            placed[kind].append((t.user_attrs[cost], acc[0], acc[1], t.number))

    lanes = sum(bool(pts) for pts in lane.values())
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[1 - 0.06 * max(2, lanes), 0.06 * max(2, lanes)])
    style = {"complete": dict(symbol="circle", size=9),
             "pruned": dict(symbol="circle-open", size=8),
             "running": dict(symbol="diamond-open", size=9)}
    label = {"complete": "complete (final-epoch accuracy)",
             "pruned": "pruned (accuracy when stopped — not final)",
             "running": "running (latest epoch — not final)"}
    for kind in ("pruned", "running", "complete"):
        pts = placed[kind]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[_error(p[1]) for p in pts], mode="markers", name=label[kind],
            marker=dict(color=COLORS[kind], **style[kind]), customdata=[[p[1], p[2], p[3]] for p in pts],
            hovertemplate=f"trial %{{customdata[2]}} ({kind})<br>{cost_title}: %{{x:,}}<br>"
                          "accuracy %{customdata[0]:.2f} % after %{customdata[1]} epochs<extra></extra>"),
            row=1, col=1)
    front = pareto_front([(p[0], p[1], p[3]) for p in placed["complete"]])
    if front:
        fig.add_trace(go.Scatter(
            x=[p[0] for p in front], y=[_error(p[1]) for p in front], mode="lines+markers",
            line=dict(shape="hv", color=COLORS["pareto"], width=2), name="Pareto front (complete trials)",
            marker=dict(symbol="circle-open", size=15, line=dict(width=2), color=COLORS["pareto"]),
            customdata=[[p[1], p[2]] for p in front],
            hovertemplate=f"Pareto: trial %{{customdata[1]}}<br>{cost_title}: %{{x:,}}<br>"
                          "accuracy %{customdata[0]:.2f} %<extra></extra>"), row=1, col=1)

    lane_label = {"rejected": "rejected: ≥ budget, never trained", "diverged": "diverged",
                  "failed": "failed", "running": "running, no epoch yet", "pruned": "pruned, no epoch",
                  "complete": "complete"}
    for kind, pts in lane.items():
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[lane_label[kind]] * len(pts), mode="markers", name=lane_label[kind],
            marker=dict(symbol="x-thin-open" if kind == "rejected" else "square-open", size=10,
                        color=COLORS[kind], line=dict(width=2)),
            customdata=[p[1] for p in pts],
            hovertemplate=f"trial %{{customdata}} ({kind})<br>{cost_title}: %{{x:,}}<extra></extra>"), row=2, col=1)

    if budget is not None:
        fig.add_vline(x=budget, line=dict(color=COLORS["rejected"], dash="dash", width=2), row="all", col=1)
        fig.add_annotation(x=budget, y=1.0, yref="paper", xref="x", text=f"budget {budget:,}", showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color=COLORS["rejected"]))
    errors = [_error(p[1]) for pts in placed.values() for p in pts]
    fig.update_yaxes(title_text=ACC_TITLE, row=1, col=1, **acc_axis(errors))
    fig.update_yaxes(type="category", row=2, col=1, automargin=True)
    # linear: the budget is a hard linear cut, and distances to it should read true
    fig.update_xaxes(rangemode="tozero", tickformat=",")
    fig.update_xaxes(title_text=cost_title, row=2, col=1)
    fig.update_layout(height=560 + 20 * lanes, legend=dict(orientation="h", y=-0.18), margin=dict(t=40))
    return fig


# ---------------------------------------------------------------- Optuna's figures, made honest


def _history(snapshot: optuna.Study, trained: set[int]) -> go.Figure:
    # Optuna indexes this plot by trial number, so it gets every trial; the "best so far" line then
    # steps through rejected candidates as if they were tries: it keeps only trained trials' points.
    fig = ov.plot_optimization_history(snapshot)
    fig.data = [t for t in fig.data if len(t.y or ())]  # drops the empty 'Infeasible' trace
    for trace in fig.data:
        if trace.name == "Best Value":
            kept = [(x, y) for x, y in zip(trace.x, trace.y) if x in trained and math.isfinite(y)]
            trace.update(x=[x for x, _ in kept], y=[y for _, y in kept], line_shape="hv")
    _to_error_axis(fig, lambda t: ("best after trial %{x}" if t.name == "Best Value" else "trial %{x}")
                   + ": %{customdata:.2f} %")
    for trace in fig.data:
        trace.name = "best so far" if trace.name == "Best Value" else "final-epoch accuracy"
    fig.update_layout(title=None, height=440, yaxis_title=ACC_TITLE,
                      xaxis_title="trial number (gaps: trials with no final accuracy)")
    return fig


def _learning_curves(trained: optuna.Study, kinds: dict[int, str]) -> go.Figure:
    fig = ov.plot_intermediate_values(trained)
    shown: set[str] = set()
    for trace in fig.data:
        number = int(trace.name.removeprefix("Trial"))
        kind = kinds.get(number, "pruned")
        trace.update(line=dict(color=COLORS[kind], width=1.5), opacity=0.85, legendgroup=kind,
                     name=kind, showlegend=kind not in shown, marker=dict(size=4, maxdisplayed=0))
        trace.meta = number
        shown.add(kind)
    _to_error_axis(fig, lambda t: f"trial {t.meta} ({t.name}), epoch %{{x}}: %{{customdata:.2f}} %")
    fig.update_layout(title=None, height=460, yaxis_title=ACC_TITLE, xaxis_title="epoch", showlegend=True,
                      xaxis=dict(tick0=1, dtick=1 if len({x for t in fig.data for x in t.x}) <= 20 else None))
    return fig


def _importances(complete: optuna.Study, n: int) -> go.Figure:
    fig = ov.plot_param_importances(complete)
    fig.update_layout(title=None, height=max(320, 26 * len(fig.data[0].y) + 120),
                      xaxis_title=f"importance for validation accuracy (PED-ANOVA, {n} complete trials)")
    return fig


def _parallel(complete: optuna.Study, params: list[str]) -> go.Figure:
    fig = ov.plot_parallel_coordinate(complete, params=params)
    # the Feasible/Infeasible legend says nothing here: every complete trial fits the budget
    fig.data = [t for t in fig.data if t.name not in ("Feasible", "Infeasible")]
    fig = go.Figure(json.loads(fig.to_json().replace('"Objective Value"', '"val acc (%)"')))
    fig.update_layout(title=None, height=480)
    return fig


def _slice(complete: optuna.Study, params: list[str]) -> go.Figure:
    fig = ov.plot_slice(complete, params=params)
    _to_error_axis(fig, lambda t: "%{x}: %{customdata:.2f} %")
    fig.update_yaxes(title_text=None)
    fig.update_layout(title=None, height=420, yaxis_title="val acc (%), log error", width=None)
    return fig


def _timeline(snapshot: optuna.Study, trials: list[FrozenTrial]) -> go.Figure:
    """Optuna's timeline with each bar named by what happened, not by Optuna's state.

    Optuna files a rejected candidate under PRUNED, beside the trials the pruner stopped after
    several epochs; and its ~0.1 s bar cannot be seen at all, so rejections become markers.
    """
    fig = ov.plot_timeline(snapshot)
    by_number = {t.number: t for t in trials}
    bars: dict[str, dict[str, list]] = {k: {"x": [], "y": [], "base": [], "text": []} for k in OUTCOMES}
    for trace in fig.data:
        for x, y, base in zip(trace.x, trace.y, trace.base):
            t = by_number[int(y)]
            kind = outcome(t)
            acc = accuracy(t)
            text = (f"trial {t.number}: {kind}<br>{t.user_attrs.get('params', '?'):,} parameters"
                    if isinstance(t.user_attrs.get("params"), int) else f"trial {t.number}: {kind}")
            if acc is not None:
                text += f"<br>{acc[0]:.2f} % after {acc[1]} epochs"
            text += f"<br>{x / 1000:,.1f} s"
            for key, value in (("x", x), ("y", y), ("base", base), ("text", text)):
                bars[kind][key].append(value)
    fig.data = []
    for kind, b in bars.items():
        if not b["y"]:
            continue
        if kind == "rejected":
            fig.add_trace(go.Scatter(
                x=b["base"], y=b["y"], mode="markers", name="rejected (over budget, not trained)",
                marker=dict(symbol="x-thin-open", size=9, color=COLORS[kind], line=dict(width=2)),
                text=b["text"], hovertemplate="%{text}<extra></extra>"))
        else:
            # one trial per row: plotly's default width spans the gap between a trace's own bars
            fig.add_trace(go.Bar(
                x=b["x"], y=b["y"], base=b["base"], orientation="h", name=kind, width=0.8, text=b["text"],
                textposition="none", marker=dict(color=COLORS[kind]), hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=None, height=max(360, 14 * len(trials) + 140), yaxis_title="trial number",
                      xaxis_title="time", barmode="overlay")
    return fig


# ---------------------------------------------------------------- the page


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's plot warnings ("no trials", PED-ANOVA's "few trials") go nowhere: the page says it."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _guard(title: str, caption: str, make: Callable[[], go.Figure], needs: str | None = None) -> Section:
    """A figure, or a note saying why there is none: a report never crashes on a young study."""
    if needs:
        return Section(title, caption, note=needs)
    try:
        with _quiet():
            return Section(title, caption, figure=make())
    except Exception as exc:  # Optuna raises on many thin studies (one trial, one value, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Section(title, caption, note=f"not drawn: {reason}")


def sections(study: optuna.Study, trials: list[FrozenTrial]) -> list[Section]:
    kinds = {t.number: outcome(t) for t in trials}
    complete_trials = [t for t in trials if kinds[t.number] == "complete"]
    trained_trials = [t for t in trials if kinds[t.number] != "rejected"]
    everything, trained = _Snapshot(study, trials), _Snapshot(study, trained_trials)
    complete = _Snapshot(study, complete_trials)
    budget = study.user_attrs.get("budget")
    n_complete = len(complete_trials)
    none_complete = "no trial has completed yet: nothing to draw" if not n_complete else None
    few = none_complete or ("needs at least 2 completed trials" if n_complete < 2 else None)

    top: list[str] = []
    if not few:
        try:  # the most important choices pick the axes of the parallel-coordinate and slice plots
            with _quiet():
                top = list(optuna.importance.get_param_importances(complete))
        except Exception:
            top = []
    top = top or sorted({p for t in complete_trials for p in t.params})

    has_size = any("params" in t.user_attrs for t in trials)
    has_curves = any(t.intermediate_values for t in trained_trials)
    return [
        _guard("Validation accuracy versus parameters",
               "Every candidate at its fvcore parameter count. Filled: complete trials at their final-epoch "
               "validation accuracy; open grey: pruned trials at the accuracy they had when stopped (not "
               "comparable with a final accuracy, so never on the front). The lane below holds candidates with "
               "no accuracy: rejected by the budget gate before any training, diverged or failed. Dashed: the "
               "budget (a model needs fewer parameters). Orange steps: the Pareto front — no complete trial is "
               "both smaller and more accurate.",
               lambda: tradeoff_figure(trials, "params", "parameters (fvcore count)", budget),
               None if has_size else "no trial has been counted yet"),
        _guard("Validation accuracy versus MACs",
               "The same candidates against multiply-accumulates per image (fvcore); the front is the MACs front.",
               lambda: tradeoff_figure(trials, "macs", "MACs per image (fvcore)", None),
               None if has_size else "no trial has been counted yet"),
        _guard("Optimization history",
               "Final-epoch validation accuracy of each complete trial, and the best so far, by trial number. "
               "Rejected candidates are left out (they never trained); their numbers are gaps on the axis.",
               lambda: _history(everything, {t.number for t in trained_trials}), none_complete),
        _guard("Learning curves",
               "Validation accuracy after every epoch of every trained trial, coloured by outcome: where the "
               "grey curves end is where the median pruner stopped them.",
               lambda: _learning_curves(trained, kinds), None if has_curves else "no trial has finished an epoch yet"),
        _guard("Parameter importances",
               "How much each sampled choice explains the validation accuracy of complete trials (Optuna's "
               "default PED-ANOVA). Choices that only exist in some candidates (a third stage, an optimizer's "
               "learning rate) are judged on those. Rejected candidates play no part, and with fewer than about "
               "20 complete trials the ranking is mostly noise.",
               lambda: _importances(complete, n_complete), few),
        _guard("Parallel coordinates",
               f"Complete trials across the {PARALLEL_PARAMS} most important choices, coloured by "
               "validation accuracy. 'None' on an axis: the choice does not exist in that trial (the SGD "
               "learning rate of an AdamW trial, the widths of a stage it does not have).",
               lambda: _parallel(complete, top[:PARALLEL_PARAMS]), few),
        _guard("Slices of the most important choices",
               "Validation accuracy of complete trials against each of the most important choices "
               "(log axes where the space samples on a log scale, e.g. learning rate and weight decay).",
               lambda: _slice(complete, top[:SLICE_PARAMS]), none_complete),
        _guard("Timeline",
               "When each trial ran, coloured by what happened to it. Rejections take about 0.1 s, so they are "
               "drawn as markers at the moment they happened.",
               lambda: _timeline(everything, trials), None if trials else "no trials yet"),
    ]


def summary_html(study: optuna.Study, trials: list[FrozenTrial], now: datetime.datetime) -> str:
    counts = Counter(outcome(t) for t in trials)
    attrs = study.user_attrs
    rows = [("study", study.study_name), ("search space", attrs.get("space", "?")),
            ("budget", f"fewer than {attrs['budget']:,} parameters" if "budget" in attrs else "?"),
            ("epochs per trial", attrs.get("epochs", "?")),
            ("trials", f"{len(trials)}: " + ", ".join(f"{counts[k]} {k}" for k in OUTCOMES))]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete or now for t in trials if t.datetime_start]
    if starts:
        busy = sum((e - s).total_seconds() for s, e in zip(starts, ends))
        rows.append(("wall time", f"{format_duration((max(ends) - min(starts)).total_seconds())} "
                                  f"(from {min(starts):%Y-%m-%d %H:%M}; trials busy {format_duration(busy)})"))
    complete = [t for t in trials if outcome(t) == "complete"]
    if complete:
        best = max(complete, key=lambda t: t.value)
        rows.append(("best trial", f"#{best.number}: {best.value:.2f} % validation accuracy, "
                                   f"{best.user_attrs.get('params', 0):,} parameters, "
                                   f"{best.user_attrs.get('macs', 0):,} MACs — <code>"
                                   f"{html.escape(str(best.user_attrs.get('code', '?')))}</code>"))
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v if k == 'best trial' else html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    notice = ""
    if not trials:
        notice = "This study has no trials yet."
    elif not complete:
        notice = ("No trial has completed yet" + (f" ({counts['rejected']} rejected by the budget gate)"
                                                  if counts["rejected"] else "")
                  + ": there is no accuracy to show, and the accuracy figures are empty or left out.")
    if counts["running"]:
        notice += (f" {counts['running']} trial(s) marked running: still training, or left so by a search that "
                   "was stopped (their time counts up to now).")
    return (f'<table class="summary">{body}</table>'
            + (f'<p class="notice">{html.escape(notice.strip())}</p>' if notice else ""))


def top_table_html(trials: list[FrozenTrial], top: int = TOP_TRIALS) -> str:
    complete = sorted((t for t in trials if outcome(t) == "complete"), key=lambda t: (-t.value, t.number))[:top]
    if not complete:
        return "<p>No complete trials yet.</p>"
    rows = []
    for rank, t in enumerate(complete, 1):
        secs = t.user_attrs.get("epoch_seconds") or []
        per_epoch = f"{sum(secs) / len(secs):.1f}" if secs else "-"
        rows.append(f"<tr><td>{rank}</td><td>{t.number}</td><td>{t.value:.2f}</td>"
                    f"<td>{t.user_attrs.get('params', 0):,}</td><td>{t.user_attrs.get('macs', 0):,}</td>"
                    f"<td>{len(t.intermediate_values)}</td><td>{per_epoch}</td>"
                    f"<td><code>{html.escape(str(t.user_attrs.get('code', '?')))}</code></td></tr>")
    return ('<table class="top"><tr><th>#</th><th>trial</th><th>val acc (%)</th><th>parameters</th>'
            '<th>MACs</th><th>epochs</th><th>s / epoch</th><th>code</th></tr>' + "".join(rows) + "</table>")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
th, td {{ text-align: left; padding: .2em .8em .2em 0; border-bottom: 1px solid #eee; vertical-align: top; }}
table.top td:nth-child(-n+7) {{ text-align: right; }}
code {{ font-size: .92em; }}
.caption {{ color: #555; max-width: 60em; }}
.note, .notice {{ background: #fff6e0; border-left: 4px solid #f0b429; padding: .5em .8em; }}
section {{ margin-top: 2em; }}
</style></head><body>
<h1>{title}</h1>
<p class="caption">Made {made} from the study's storage. The search selects on the 5,000-image validation split;
no figure here uses the test set.</p>
{summary}
<h2>Top trials</h2>
{top}
{sections}
</body></html>
"""


def build_report(study: optuna.Study, now: datetime.datetime | None = None) -> str:
    """The report page of a study, as one self-contained HTML string."""
    now = now or datetime.datetime.now()
    trials = study.get_trials(deepcopy=False)
    parts, plotly_js = [], True
    for s in sections(study, trials) if trials else []:
        key = re.sub(r"[^a-z]+", "-", s.title.lower()).strip("-")  # stable ids: links, diffs
        parts.append(f'<section id="{key}"><h2>{html.escape(s.title)}</h2>'
                     f'<p class="caption">{html.escape(s.caption)}</p>')
        if s.figure is not None:
            # plotly.js goes into the page once, with the first figure: offline, no CDN
            parts.append(s.figure.to_html(full_html=False, include_plotlyjs=plotly_js, div_id=f"fig-{key}",
                                          config={"displaylogo": False, "responsive": True}))
            plotly_js = False
        else:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        parts.append("</section>")
    return PAGE.format(title=html.escape(f"Search report: {study.study_name}"), made=f"{now:%Y-%m-%d %H:%M}",
                       summary=summary_html(study, trials, now), top=top_table_html(trials),
                       sections="\n".join(parts))


def write_report(study: optuna.Study, out_dir: Path | str | None = None) -> Path:
    """Write `report.html` into out_dir (default studies/<study>/) atomically; returns its path."""
    out_dir = Path(out_dir) if out_dir is not None else study_dir(study.study_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = build_report(study)
    path = out_dir / "report.html"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".report-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the page from a web server or a colleague
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.report", description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="study name, e.g. mnist-b8000")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)")
    p.add_argument("--out", help="directory to write report.html into (default: studies/<study>/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.study, args.storage)
    try:
        path = write_report(study, args.out)
    except OSError as exc:  # --out is a file, or not writable
        raise UsageError(f"cannot write the report into {args.out or study_dir(args.study)}: "
                         f"{exc.strerror or exc}") from None
    print(path)
    return 0


if __name__ == "__main__":
    run_main("nas.report", main)
