"""Optuna's own figures of the sampled choices (parameter importances, parallel coordinates, slices),
drawn from a snapshot of the complete trials and made to read like the report's other figures."""

from __future__ import annotations

import contextlib
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

from .figures import SCALE, acc_axis, acc_ticks, error


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
