"""The report's own plotly figures, drawn from `TrialRecord`s and made readable for this search
(Optuna's figures of the sampled choices are in nas.report.choices).

Accuracy axes are log-spaced in the error (100 - accuracy) and labelled in accuracy: on a linear
0-100 % axis one early 10 % trial squeezes 98.9 % and 99.4 % into the same pixel row. Every colour
scale used for trials starts and ends in a colour that shows on white, and no range ends exactly
at a point, so markers at the extremes show in full.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import replace

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..cost import FLOAT32, INT8, flash_int8, peak_ram
from ..errors import SpecError
from ..spec import Spec
from ..store.record import FinalistRun, Outcome, TrialRecord

FINALIST_COLOR = "#17becf"  # the finalists' trainings with new seeds (not trials: no outcome of their own)
COLORS = {Outcome.COMPLETE: "#1f77b4", Outcome.PRUNED: "#8c8c8c", Outcome.REJECTED: "#d62728",
          Outcome.DIVERGED: "#9467bd", Outcome.FAILED: "#111111", Outcome.INTERRUPTED: "#8c564b",
          Outcome.RUNNING: "#2ca02c", Outcome.QUEUED: "#98df8a", Outcome.SCREENED: "#bcbd22"}
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
        Outcome.RUNNING: "running, no epoch yet", Outcome.QUEUED: "queued: not started yet",
        Outcome.PRUNED: "pruned, no epoch",
        Outcome.SCREENED: "screened out at a cheap rung: no full-fidelity accuracy",
        Outcome.COMPLETE: "complete, no epoch"}


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The (cost, accuracy, trial number) points no other point beats: cheaper-or-equal and more accurate."""
    front: list[tuple[float, float, int]] = []
    for cost, acc, number in sorted(points, key=lambda p: (p[0], -p[1], p[2])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc, number))
    return front


def tradeoff_figure(records: list[TrialRecord], cost: str, cost_title: str, budget: int | None) -> go.Figure:
    """Validation accuracy versus a cost (`params`, `macs`, `ram_int8`, `flash_int8` of the records) for every
    candidate.

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


# the device costs drawn against accuracy: (the record's field, the axis title, the study setting of its budget)
DEVICE_COSTS = (("ram_int8", "peak RAM of one inference at int8 (bytes)", "max_ram"),
                ("flash_int8", "flash of the int8 model (bytes)", "max_flash"))


def with_device_costs(records: list[TrialRecord]) -> list[TrialRecord]:
    """The records, those of trials made before device costs were recorded given theirs, computed from their spec
    (the formulas the gate uses: nas.cost), so that a continued older study shows every trial."""
    filled = []
    for r in records:
        if r.ram_int8 is None and r.spec is not None:
            try:
                spec = Spec.from_dict(r.spec)
                r = replace(r, ram_int8=peak_ram(spec, INT8), ram_float32=peak_ram(spec, FLOAT32),
                            flash_int8=flash_int8(spec))
            except (SpecError, TypeError):  # a spec this version cannot read: drawn nowhere, as one without a count
                pass
        filled.append(r)
    return filled


def device_cost_figure(records: list[TrialRecord], cost: str, cost_title: str, limit: int | None) -> go.Figure:
    """Validation accuracy versus peak RAM or flash (`cost`: a field of DEVICE_COSTS) for every candidate, rejected
    ones in the lane below, with the Pareto front of the complete ones and the budget (`limit`, a maximum) if any."""
    return tradeoff_figure(with_device_costs(records), cost, cost_title, limit)


def rungs_figure(records: list[TrialRecord]) -> go.Figure:
    """One panel per cheap rung: each candidate's score there against its parameters, promoted or not.

    Panels share no accuracy axis: a score is comparable only with the other scores of its rung.
    """
    rungs = sorted({s.fidelity for r in records for s in r.rungs}, key=lambda f: f.cost)
    fig = make_subplots(rows=1, cols=len(rungs), subplot_titles=[f"rung {k + 1}: {f}" for k, f in enumerate(rungs)],
                        horizontal_spacing=0.08)
    late = {r.promoted_from for r in records if r.promoted_from is not None}  # screened, promoted later
    for col, rung in enumerate(rungs, 1):
        went_on: list[tuple[int, float, int]] = []
        stopped: list[tuple[int, float, int]] = []
        for r in records:
            k = next((i for i, s in enumerate(r.rungs) if s.fidelity == rung), None)
            if k is None or r.params is None:
                continue
            # promoted: it has a score at a later rung, reached the full training, or was promoted late from here
            on = (k + 1 < len(r.rungs) or bool(r.curve) or r.outcome == Outcome.COMPLETE
                  or (r.number in late and k + 1 == len(r.rungs)))
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


def timeline_figure(records: list[TrialRecord], now: datetime.datetime,
                    finalist_runs: list[FinalistRun] = ()) -> go.Figure:
    """When each trial ran, coloured by its outcome (not by Optuna's state, which files a rejection
    under PRUNED). A rejection's ~0.1 s bar cannot be seen, so rejections are markers. The finalists'
    trainings are bars in their trial's row, one thin lane per seed (workers may train two at once)."""
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
    if finalist_runs:
        fig.add_trace(_finalist_bars(finalist_runs))
    fig.update_xaxes(type="date", title_text="time")
    fig.update_yaxes(title_text="trial number", autorange="reversed",  # the first trial on top, as in a Gantt chart
                     dtick=1 if len(records) <= 40 else None)  # whole trials, not the finalists' lanes
    fig.update_layout(height=min(1400, max(360, 14 * len(records) + 140)), barmode="overlay", margin=dict(t=40),
                      legend=dict(orientation="h", x=0, y=1, yanchor="bottom"))  # above: clear of the time axis
    return fig


def _finalist_bars(runs: list[FinalistRun]) -> go.Bar:
    seeds: dict[int, list[int]] = {}
    for r in runs:
        seeds.setdefault(r.trial, []).append(r.seed)
    lane = {(t, seed): (sorted(s).index(seed), len(s)) for t, s in seeds.items() for seed in s}
    y, width, text = [], [], []
    for r in runs:
        k, n = lane[(r.trial, r.seed)]
        y.append(r.trial - 0.4 + 0.8 * (k + 0.5) / n)
        width.append(0.8 / n)
        text.append(f"trial {r.trial}: finalist training, new seed {r.seed}" + (f" on {r.host}" if r.host else "")
                    + f"<br>{r.val_acc:.2f} % after the full training<br>{r.seconds:,.1f} s")
    return go.Bar(x=[r.seconds * 1000 for r in runs], y=y, base=[r.started.isoformat() for r in runs],
                  orientation="h", width=width, name="finalist (new seed)", text=text, textposition="none",
                  marker=dict(color=FINALIST_COLOR), hovertemplate="%{text}<extra></extra>")
