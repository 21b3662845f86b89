"""The report's plotly figures, drawn from `TrialRecord`s (and, for Optuna's own plot functions, a
snapshot of the complete trials), made readable for this search.

Accuracy axes are log-spaced in the error (100 - accuracy) and labelled in accuracy: on a linear
0-100 % axis one early 10 % trial squeezes 98.9 % and 99.4 % into the same pixel row. Every colour
scale used for trials starts and ends in a colour that shows on white, and no range ends exactly
at a point, so markers at the extremes show in full.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import optuna
import optuna.visualization as ov
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.subplots import make_subplots

from .record import Outcome, TrialRecord, pareto_front

COLORS = {Outcome.COMPLETE: "#1f77b4", Outcome.PRUNED: "#8c8c8c", Outcome.REJECTED: "#d62728",
          Outcome.DIVERGED: "#9467bd", Outcome.FAILED: "#111111", Outcome.INTERRUPTED: "#8c564b",
          Outcome.RUNNING: "#2ca02c", Outcome.SCREENED: "#bcbd22"}
PARETO_COLOR = "#ff7f0e"
# Learning curves: each outcome keeps its colour family, and each trial gets its own shade in it,
# so one curve can be followed through the others.
# Drawn in this order: complete trials last, on top.
SHADES = {Outcome.PRUNED: ["#b4b4b4", "#5a5a5a"], Outcome.DIVERGED: ["#c39be6", "#5e2a8c"],
          Outcome.INTERRUPTED: ["#c49c94", "#5c3327"], Outcome.RUNNING: ["#7fd17f", "#1b6e1b"],
          Outcome.COMPLETE: ["#12b5cb", "#1f77b4", "#253494"]}
DASHES = ("solid", "dash", "dot", "dashdot")  # complete curves also cycle these: shades alone blur past ~5
# Trials coloured by a number (trial number, accuracy): viridis without its pale yellow end, so
# both ends read on white (Optuna's own "Blues" starts at white: early or poor trials vanished).
SCALE = plotly.colors.sequential.Viridis[:8]

# ---------------------------------------------------------------- accuracy axes

MIN_ERROR = 0.01  # a 100 % accuracy (possible on a tiny validation split) has no log
def _roundness(acc: float) -> tuple[int, bool]:
    """Fewer digits first, then those ending in 5: 10 before 15 before 14."""
    text = f"{acc:g}".replace(".", "").rstrip("0") or "0"
    return len(text), not text.endswith("5")


ACC_TICK_LEVELS = (  # roundest first; the finest only where the others give fewer than MIN_TICKS
    (0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.99),
    (10, 20, 30, 40, 60, 70, 85, 92, 94, 96, 97, 98.5, 99.2, 99.4, 99.6, 99.7),
    tuple(sorted([*range(95), *(round(95 + i / 10, 1) for i in range(49)),
                  *(round(99.9 + i / 100, 2) for i in range(1, 10))], key=_roundness)),
)
ACC_TITLE = "validation accuracy (%), log scale of the error"
MIN_TICKS, MAX_TICKS = 4, 9


def error(acc: float) -> float:
    return max(100.0 - acc, MIN_ERROR)


def acc_ticks(lo: float, hi: float) -> list[float]:
    """Accuracies to label an error range [lo, hi] with: the roundest first, none closer to another
    than 1/MAX_TICKS of the (log) axis, so labels never crowd."""
    gap = math.log10(hi / lo) / MAX_TICKS
    chosen: list[float] = []
    for level in ACC_TICK_LEVELS:
        if level is ACC_TICK_LEVELS[-1] and len(chosen) >= MIN_TICKS:
            break  # the finest level only fills in a short axis: no 68 beside 60 and 80
        for acc in level:
            e = error(acc)
            if lo <= e <= hi and all(abs(math.log10(e / error(c))) >= gap for c in chosen):
                chosen.append(acc)
    return sorted(chosen)


def acc_axis(errors: list[float]) -> dict:
    """Plotly axis settings: log of the error, reversed (better is up), ticks labelled in accuracy.

    An explicit range (plotly's autorange of one point on a log axis is a sliver), padded by a
    tenth of a decade or 8 % of the span so that markers at either end are drawn in full; below
    0 % accuracy (an error over 100), only the room a marker needs.
    """
    lo, hi = (min(errors), max(errors)) if errors else (0.1, 100.0)
    pad = 10 ** max(0.1, 0.08 * math.log10(hi / lo))
    lo, hi = lo / pad, min(hi * pad, max(hi, 100.0) * pad ** 0.25)
    ticks = acc_ticks(lo, hi)
    return dict(type="log", range=[math.log10(hi), math.log10(lo)], tickvals=[error(a) for a in ticks],
                ticktext=[f"{a:g}" for a in ticks])


# ---------------------------------------------------------------- accuracy versus a cost

PLACED = {  # outcome -> (legend, marker) for candidates drawn at an accuracy
    Outcome.COMPLETE: ("complete (final-epoch accuracy)", dict(symbol="circle", size=9)),
    Outcome.PRUNED: ("pruned (accuracy when stopped — not final)", dict(symbol="circle-open", size=8)),
    Outcome.INTERRUPTED: ("interrupted (last epoch — not final)", dict(symbol="triangle-up-open", size=9)),
    Outcome.RUNNING: ("running (latest epoch — not final)", dict(symbol="diamond-open", size=9)),
}
LANE = {Outcome.REJECTED: "rejected: ≥ budget, never trained", Outcome.DIVERGED: "diverged",
        Outcome.FAILED: "failed", Outcome.INTERRUPTED: "interrupted, no epoch",
        Outcome.RUNNING: "running, no epoch yet", Outcome.PRUNED: "pruned, no epoch",
        Outcome.SCREENED: "screened out at a cheap rung: no full-fidelity accuracy",
        Outcome.COMPLETE: "complete, no epoch"}


def tradeoff_figure(records: list[TrialRecord], cost: str, cost_title: str, budget: int | None) -> go.Figure:
    """Validation accuracy versus a cost (`params` or `macs` of the records) for every candidate.

    Candidates without an accuracy (rejected by the gate, diverged, failed, or not yet through an
    epoch) sit at their measured cost in a lane below, so none is hidden.
    """
    placed: dict[Outcome, list[tuple[int, float, int, int]]] = {k: [] for k in Outcome}
    lane: dict[Outcome, list[tuple[int, int]]] = {k: [] for k in Outcome}
    for r in records:
        x = getattr(r, cost)
        if x is None:
            continue  # failed before the count: no size to draw it at (the summary counts it)
        if r.accuracy is None:
            lane[r.outcome].append((x, r.number))
        else:
            placed[r.outcome].append((x, *r.accuracy, r.number))

    lanes = sum(bool(pts) for pts in lane.values())
    # the lane is a second row only when it holds someone: an empty one hid the cost axis
    rows = 2 if lanes else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[1 - 0.07 * max(2, lanes), 0.07 * max(2, lanes)] if lanes else None)
    x_hover = f"{cost_title}: %{{x:,}}"
    for kind in (Outcome.PRUNED, Outcome.INTERRUPTED, Outcome.RUNNING, Outcome.COMPLETE):  # complete on top
        if pts := placed[kind]:
            name, marker = PLACED[kind]
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[error(p[1]) for p in pts], mode="markers", name=name,
                marker=dict(color=COLORS[kind], **marker), customdata=[[p[1], p[2], p[3]] for p in pts],
                hovertemplate=f"trial %{{customdata[2]}} ({kind.value})<br>{x_hover}<br>"
                              "accuracy %{customdata[0]:.2f} % after %{customdata[1]} epochs<extra></extra>"),
                row=1, col=1)
    front = pareto_front([(p[0], p[1], p[3]) for p in placed[Outcome.COMPLETE]])
    if front:
        fig.add_trace(go.Scatter(
            x=[p[0] for p in front], y=[error(p[1]) for p in front], mode="lines+markers",
            line=dict(shape="hv", color=PARETO_COLOR, width=2), name="Pareto front (complete trials)",
            marker=dict(symbol="circle-open", size=15, line=dict(width=2), color=PARETO_COLOR),
            customdata=[[p[1], p[2]] for p in front],
            hovertemplate=f"Pareto: trial %{{customdata[1]}}<br>{x_hover}<br>"
                          "accuracy %{customdata[0]:.2f} %<extra></extra>"), row=1, col=1)
    for kind, pts in lane.items():
        if pts:
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[LANE[kind]] * len(pts), mode="markers", name=LANE[kind],
                marker=dict(symbol="x-thin-open" if kind == Outcome.REJECTED else "square-open", size=10,
                            color=COLORS[kind], line=dict(width=2)),
                customdata=[p[1] for p in pts],
                hovertemplate=f"trial %{{customdata}} ({kind.value})<br>{x_hover}<extra></extra>"), row=2, col=1)

    if budget is not None:
        fig.add_vline(x=budget, line=dict(color=COLORS[Outcome.REJECTED], dash="dash", width=2), row="all", col=1)
        fig.add_annotation(x=budget, y=1.0, yref="paper", xref="x", text=f"budget {budget:,}", showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color=COLORS[Outcome.REJECTED]))
    fig.update_yaxes(title_text=ACC_TITLE, row=1, col=1,
                     **acc_axis([error(p[1]) for pts in placed.values() for p in pts]))
    if lanes:
        fig.update_yaxes(type="category", row=2, col=1, automargin=True)
    # linear from 0: the budget is a hard linear cut, and distances to it should read true;
    # SI ticks (20k, 1.2M): full MAC counts crowd each other
    fig.update_xaxes(rangemode="tozero", tickformat="~s")
    fig.update_xaxes(title_text=cost_title, row=rows, col=1)
    fig.update_layout(height=560 + 22 * lanes, legend=dict(orientation="h", y=-0.2), margin=dict(t=40))
    return fig


def rungs_figure(records: list[TrialRecord]) -> go.Figure:
    """One panel per cheap rung: each candidate's score there against its parameters, promoted or not.

    Panels share no accuracy axis: a score is comparable only with the other scores of its rung.
    """
    rungs = sorted({s.fidelity for r in records for s in r.rungs}, key=lambda f: f.cost)
    fig = make_subplots(rows=1, cols=len(rungs), subplot_titles=[f"rung {k + 1}: {f}" for k, f in enumerate(rungs)],
                        horizontal_spacing=0.08)
    for col, rung in enumerate(rungs, 1):
        went_on: list[tuple[int, float, int]] = []
        stopped: list[tuple[int, float, int]] = []
        for r in records:
            k = next((i for i, s in enumerate(r.rungs) if s.fidelity == rung), None)
            if k is None or r.params is None:
                continue
            # promoted: it has a score at a later rung, or reached the full training
            on = k + 1 < len(r.rungs) or bool(r.curve) or r.outcome == Outcome.COMPLETE
            (went_on if on else stopped).append((r.params, r.rungs[k].val_acc, r.number))
        for pts, name, color in ((stopped, "not promoted", COLORS[Outcome.SCREENED]),
                                 (went_on, "promoted to the next rung", COLORS[Outcome.COMPLETE])):
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[error(p[1]) for p in pts], mode="markers", name=name,
                legendgroup=name, showlegend=col == 1, customdata=[[p[1], p[2]] for p in pts],
                marker=dict(color=color, size=8, symbol="circle" if pts is went_on else "circle-open"),
                hovertemplate=f"trial %{{customdata[1]}}<br>parameters %{{x:,}}<br>{rung}: "
                              "%{customdata[0]:.2f} %<extra></extra>"), row=1, col=col)
        scores = [error(s.val_acc) for r in records for s in r.rungs if s.fidelity == rung]
        fig.update_yaxes(row=1, col=col, **acc_axis(scores))
    fig.update_yaxes(title_text=ACC_TITLE, row=1, col=1)
    fig.update_xaxes(title_text="parameters (fvcore count)", tickformat="~s")
    fig.update_layout(height=460, margin=dict(t=50), legend=dict(orientation="h", y=-0.25))
    return fig


# ---------------------------------------------------------------- by trial, by epoch, in time


def history_figure(records: list[TrialRecord]) -> go.Figure:
    """Final-epoch accuracy of each complete trial and the best so far, by trial number."""
    done = sorted((r for r in records if r.outcome == Outcome.COMPLETE), key=lambda r: r.number)
    best: list[float] = []
    for r in done:
        best.append(max(r.value, best[-1]) if best else r.value)
    numbers = [r.number for r in done]
    fig = go.Figure([
        go.Scatter(x=numbers, y=[error(r.value) for r in done], mode="markers", name="final-epoch accuracy",
                   marker=dict(color=COLORS[Outcome.COMPLETE], size=8), customdata=[r.value for r in done],
                   hovertemplate="trial %{x}: %{customdata:.2f} %<extra></extra>"),
        go.Scatter(x=numbers, y=[error(b) for b in best], mode="lines", name="best so far", customdata=best,
                   line=dict(shape="hv", color=PARETO_COLOR, width=2),
                   hovertemplate="best after trial %{x}: %{customdata:.2f} %<extra></extra>"),
    ])
    # every trial number has its place, so the gaps (rejected, pruned, ... trials) read as such
    last = max(r.number for r in records)
    pad = max(1.0, 0.02 * last)
    fig.update_xaxes(range=[-pad, last + pad], title_text="trial number (gaps: trials with no final accuracy)")
    fig.update_yaxes(title_text=ACC_TITLE, **acc_axis([error(r.value) for r in done]))
    fig.update_layout(height=440, legend=dict(orientation="h", y=-0.2), margin=dict(t=30))
    return fig


def _spread(n: int) -> list[float]:
    """n positions in [0, 1] in which neighbours are far apart (golden-ratio steps)."""
    return [0.5] if n == 1 else [(i * 0.618034) % 1 for i in range(n)]


def learning_curves_figure(records: list[TrialRecord]) -> go.Figure:
    """Validation accuracy after every epoch of every trained trial, one shade per trial.

    Each complete trial has its own legend entry (best first: a click hides it, a double click shows
    it alone); the other outcomes have one entry per family.
    """
    fig = go.Figure()
    errors: list[float] = []
    for kind, shades in SHADES.items():
        trained = [r for r in records if r.outcome == kind and r.curve]
        colors = plotly.colors.sample_colorscale(shades, _spread(len(trained)))
        best_first = sorted(trained, key=lambda r: -(r.value or 0))
        for i, (r, color) in enumerate(zip(trained, colors)):
            accs = list(r.curve.values())
            errors += [error(a) for a in accs]
            if kind == Outcome.COMPLETE:  # its own legend entry, ranked by accuracy
                legend = dict(name=f"#{r.number}: {r.value:.2f} %", legendgroup=f"trial {r.number}",
                              legendrank=best_first.index(r), showlegend=True)
            else:  # one entry for the family
                legend = dict(name=kind.value, legendgroup=kind.value, legendrank=1000, showlegend=i == 0)
            dash = DASHES[i % len(DASHES)] if kind == Outcome.COMPLETE else "solid"
            fig.add_trace(go.Scatter(
                x=list(r.curve), y=[error(a) for a in accs], mode="lines+markers", customdata=accs, opacity=0.9,
                meta={"trial": r.number, "outcome": kind.value}, line=dict(color=color, width=1.8, dash=dash),
                marker=dict(color=color, size=4), **legend,
                hovertemplate=f"trial {r.number} ({kind.value}), epoch %{{x}}: %{{customdata:.2f}} %<extra></extra>"))
    last = max((e for r in records for e in r.curve), default=1)
    fig.update_xaxes(title_text="epoch", range=[0.7, last + 0.3], dtick=1 if last <= 20 else None)
    fig.update_yaxes(title_text=ACC_TITLE, **acc_axis(errors))
    fig.update_layout(height=520, margin=dict(t=30), legend=dict(title_text="complete: final accuracy"))
    return fig


def timeline_figure(records: list[TrialRecord], now: datetime.datetime) -> go.Figure:
    """When each trial ran, coloured by its outcome (not by Optuna's state, which files a rejection
    under PRUNED). A rejection's ~0.1 s bar cannot be seen, so rejections are markers."""
    fig = go.Figure()
    for kind in Outcome:
        rs = [r for r in records if r.outcome == kind and r.started]
        if not rs:
            continue
        text = []
        for r in rs:
            seconds = ((r.finished or now) - r.started).total_seconds()
            lines = [f"trial {r.number}: {kind.value}"] + ([f"{r.params:,} parameters"] if r.params else [])
            if r.accuracy:
                lines.append(f"{r.accuracy[0]:.2f} % after {r.accuracy[1]} epochs")
            text.append("<br>".join(lines + [f"{seconds:,.1f} s"]))
        if kind == Outcome.REJECTED:
            fig.add_trace(go.Scatter(
                x=[r.started for r in rs], y=[r.number for r in rs], mode="markers", text=text,
                name="rejected (over budget, not trained)", hovertemplate="%{text}<extra></extra>",
                marker=dict(symbol="x-thin-open", size=9, color=COLORS[kind], line=dict(width=2))))
        else:
            # one trial per row: plotly's default width spans the gap between a trace's own bars
            fig.add_trace(go.Bar(
                x=[((r.finished or now) - r.started).total_seconds() * 1000 for r in rs], y=[r.number for r in rs],
                base=[r.started.isoformat() for r in rs], orientation="h", name=kind.value, width=0.8, text=text,
                textposition="none", marker=dict(color=COLORS[kind]), hovertemplate="%{text}<extra></extra>"))
    fig.update_xaxes(type="date", title_text="time")
    fig.update_yaxes(title_text="trial number", autorange="reversed")  # the first trial on top, as in a Gantt chart
    fig.update_layout(height=min(1400, max(360, 14 * len(records) + 140)), barmode="overlay", margin=dict(t=40),
                      legend=dict(orientation="h", x=0, y=1, yanchor="bottom"))  # above: clear of the time axis
    return fig


# ---------------------------------------------------------------- Optuna's figures of the sampled choices


@dataclass(frozen=True)
class Snapshot:
    """Complete trials in an in-memory study, for Optuna's plot functions (all of them judge complete
    trials only; and the search space Optuna's importances read would also count running trials).

    `add_trials` numbers the copies 0, 1, ...: `numbers[i]` is the real number of copy i.
    """

    study: optuna.Study
    numbers: tuple[int, ...]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Optuna's log lines and warnings ("new study created", "no trials", PED-ANOVA's "few trials")
    go nowhere: the page says what matters, and a quiet search's stderr stays empty."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def snapshot(trials: list[FrozenTrial]) -> Snapshot:
    with quiet():
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    study.add_trials(trials)
    return Snapshot(study, tuple(t.number for t in trials))


def importances_figure(complete: Snapshot) -> go.Figure:
    fig = ov.plot_param_importances(complete.study)
    fig.update_layout(title=None, height=max(320, 26 * len(fig.data[0].y) + 120), margin=dict(t=30),
                      xaxis_title=f"importance for validation accuracy (PED-ANOVA, {len(complete.numbers)} "
                                  "complete trials)")
    fig.update_yaxes(automargin=True)
    return fig


def parallel_figure(complete: Snapshot, params: list[str]) -> go.Figure:
    """Optuna's parallel coordinates, with the accuracy axis and the line colours on the log-error
    scale (Optuna's are linear, and its palest lines were white)."""
    acc_name = "val acc (%)"
    fig = ov.plot_parallel_coordinate(complete.study, params=params, target_name=acc_name)
    values = [t.value for t in complete.study.trials if math.isfinite(t.value)]  # the trials Optuna drew
    lo, hi = error(max(values)), error(min(values))

    def position(acc: float) -> float:  # 0: the worst trial, 1: the best, log-spaced in the error
        return 0.5 if lo == hi else math.log10(hi / error(acc)) / math.log10(hi / lo)

    lines = []
    for trace in fig.data:
        if trace.mode != "lines" or trace.customdata is None:
            continue  # the Feasible/Infeasible legend says nothing here (complete trials fit the budget)
        # Optuna places the accuracy axis (x = 0) linearly between the lowest and highest value
        acc = min(values) + trace.y[0] * (max(values) - min(values))
        at = position(acc)
        trace.update(y=(at, *trace.y[1:]), customdata=[[acc_name, f"{acc:.2f}"], *trace.customdata[1:]],
                     opacity=0.85, line=dict(color=plotly.colors.sample_colorscale(SCALE, at)[0], width=1.8))
        lines.append((at, trace))
    ticks = acc_ticks(lo, hi) if lo < hi else [max(values)]
    scale = go.Scatter(x=[None, None], y=[None, None], mode="markers", showlegend=False, hoverinfo="skip",
                       marker=dict(color=[0, 1], cmin=0, cmax=1, colorscale=SCALE, showscale=True,
                                   colorbar=dict(title=acc_name, tickvals=[position(a) for a in ticks],
                                                 ticktext=[f"{a:g}" for a in ticks])))
    fig = go.Figure([trace for _, trace in sorted(lines, key=lambda p: p[0])] + [scale], fig.layout)  # best on top
    labels = [go.layout.Annotation(x=0, y=position(a), text=f"{a:g}", showarrow=False, xanchor="right", xshift=-4,
                                   font=dict(size=10, color="#555")) for a in ticks]
    for label in fig.layout.annotations:  # Optuna's, in its order of preference; it prints 0.0112 over 0.01
        if label.x != 0 and all(other.x != label.x or abs(other.y - label.y) > 0.07 for other in labels):
            labels.append(label)
    fig.layout.annotations = labels
    fig.update_layout(title=None, height=480, margin=dict(t=40))
    return fig


def log_ticks(lo: float, hi: float) -> list[float]:
    """2 to 6 ticks for a log axis over [lo, hi]: 1-2-5, else decades, else digits (plotly's own labels
    a short log axis with every digit, and switches between 0.001 and 100µ)."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1,), range(1, 10)):
        ticks = [float(f"{m * 10.0 ** e:.1g}") for e in decades for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if 2 <= len(ticks) <= 6:
            return ticks
    # a range within one digit step: four even log steps, to 2 significant digits
    return sorted({float(f"{lo * (hi / lo) ** (i / 3):.2g}") for i in range(4)})


def _plain(label: object) -> object:
    """Optuna labels categorical choices with repr(): 'sgd' in quotes."""
    return label[1:-1] if isinstance(label, str) and len(label) > 1 and label[0] == label[-1] == "'" else label


def slice_figure(complete: Snapshot, params: list[str], cols: int = 3) -> go.Figure:
    """Accuracy against each choice, in a grid (in one row, six choices crowd their labels), points
    coloured by trial number on a scale whose first trials show (Optuna's start at white)."""
    rows = math.ceil(len(params) / cols)
    fig = make_subplots(rows=rows, cols=min(cols, len(params)), shared_yaxes=True, horizontal_spacing=0.05,
                        vertical_spacing=0.32 / rows)
    errors: list[float] = []
    for i, name in enumerate(params):
        one = ov.plot_slice(complete.study, params=[name])
        row, col = divmod(i, cols)
        for trace in one.data:
            numbers = [complete.numbers[int(n)] for n in trace.marker.color]
            accs = list(trace.y)
            errors += [error(a) for a in accs]
            fig.add_trace(go.Scatter(
                x=[_plain(x) for x in trace.x], y=[error(a) for a in accs], mode="markers", showlegend=False,
                customdata=list(zip(accs, numbers)),
                marker=dict(color=numbers, coloraxis="coloraxis", size=9, line=dict(width=0.5, color="#444")),
                hovertemplate=f"trial %{{customdata[1]}}: {name} = %{{x}}, %{{customdata[0]:.2f}} %<extra></extra>"),
                row=row + 1, col=col + 1)
        axis, where = one.layout.xaxis, dict(row=row + 1, col=col + 1)
        fig.update_xaxes(title_text=name, type=axis.type, **where)
        if axis.categoryarray:
            fig.update_xaxes(categoryorder="array", categoryarray=[_plain(c) for c in axis.categoryarray], **where)
        elif axis.type == "log":
            ticks = log_ticks(min(x for t in one.data for x in t.x), max(x for t in one.data for x in t.x))
            fig.update_xaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], **where)
    fig.update_yaxes(**acc_axis(errors))
    fig.update_yaxes(title_text="val acc (%)", col=1)
    fig.update_layout(height=80 + 300 * rows, margin=dict(t=30), coloraxis=dict(
        colorscale=SCALE, cmin=min(complete.numbers), cmax=max(complete.numbers), colorbar=dict(title="trial")))
    return fig
