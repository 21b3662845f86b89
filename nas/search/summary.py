"""What a search prints when it ends, however it ended: the study's trials by outcome and fidelity,
the best ones, and how many candidates the budget gate rejected before any training."""

from __future__ import annotations

from collections import Counter

import optuna

from ..cost import BUDGETS
from ..store.record import Outcome, read_trials, trained_per_fidelity


def summary(study: optuna.Study, top: int = 10) -> str:
    records = read_trials(study)
    counts = {k: sum(r.outcome == k for r in records) for k in Outcome}
    rare = (Outcome.INTERRUPTED, Outcome.QUEUED)  # said only when there are some
    lines = [f"study {study.study_name}: {len(records)} trials: "
             + ", ".join(f"{n} {k.value}" for k, n in counts.items() if n or k not in rare)]
    if trained := trained_per_fidelity(records):
        lines.append("trained at each fidelity (epochs x images): "
                     + ", ".join(f"{f.epochs}x{f.train_images:,}: {n}" for f, n in trained.items()))
    queued = [r for r in records if r.outcome == Outcome.QUEUED]
    then = "not trained yet: continuing the study trains them first"
    if promotions := sum(r.promoted_from is not None for r in queued):
        lines.append(f"{promotions} late promotion(s) queued, {then}")
    if known := sum(r.warm_start is not None for r in queued):  # a warm start, a new best's neighbour or copy
        lines.append(f"{known} known design(s) queued, {then}")
    complete = sorted((r for r in records if r.outcome == Outcome.COMPLETE), key=lambda r: -r.value)[:top]
    if not complete:
        return "\n".join(lines + ["no trial completed yet"])
    # peak RAM and flash in bytes at int8 ('-' for trials of studies made before they were recorded)
    lines.append(f"{'trial':>5} {'params':>7} {'MACs':>10} {'RAM B':>7} {'flash B':>7} {'val acc':>8} "
                 f"{'epochs':>6}  code")
    for r in complete:
        ram, flash = (f"{x:,}" if x is not None else "-" for x in (r.ram_int8, r.flash_int8))
        lines.append(f"{r.number:>5} {r.params:>7,} {r.macs:>10,} {ram:>7} {flash:>7} {r.value:>7.2f}% "
                     f"{len(r.curve):>6}  {r.code}")
    return "\n".join(lines)


def rejection_report(study: optuna.Study, first: int = 20) -> str:
    records = [r for r in read_trials(study) if r.outcome not in (Outcome.RUNNING, Outcome.QUEUED)]
    rejected = [r.outcome == Outcome.REJECTED for r in records]
    text = f"rejected before training: {sum(rejected)} of {len(records)} candidates ({_percent(rejected)})"
    if len(records) > first:
        text += f"; after the first {first}: {_percent(rejected[first:])}"
    over = Counter(o.budget for r in records for o in r.over_budget)  # a candidate may be over several
    if over:
        text += "; over " + ", ".join(f"{name} {over[name]}" for name in BUDGETS if over[name])
    return text


def _percent(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f} %" if flags else "-"
