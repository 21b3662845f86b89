"""The report's tables: the study's summary, the finalists with their seeds, the top trials, and the next command."""

from __future__ import annotations

import datetime
import html
from collections import Counter
from pathlib import Path
from typing import Any

from . import figures
from .sections import Trials
from ..data import describe_data
from ..export import export_command, next_command
from ..fidelity import STEP_BATCH
from ..progress import format_duration
from ..store.record import Outcome, Reevaluation, TrialRecord
from ..store.settings import data_of
from ..store.winner import Lead, finalists

TOP_TRIALS = 10


def summary_html(name: str, settings: dict[str, Any], trials: Trials, now: datetime.datetime,
                 winner: tuple[TrialRecord, Reevaluation | None] | None = None) -> str:
    records = trials.records
    counts = Counter(r.outcome for r in records)
    epochs = settings.get("epochs", "?")
    if "train_images" in settings:
        epochs = f"{epochs}, on {settings['train_images']:,} training images"
    rows = [("study", html.escape(name)), *data_rows(settings),
            ("search space", html.escape(str(settings.get("space", "?")))),
            ("budget", f"fewer than {settings['budget']:,} parameters" if "budget" in settings else "?"),
            *[(what, f"at most {settings[key]:,}{unit}") for key, what, unit in (
                ("max_macs", "MACs budget", " MACs"), ("max_ram", "peak RAM budget", " bytes at int8"),
                ("max_flash", "flash budget", " bytes at int8")) if settings.get(key) is not None],
            ("epochs of a full training", html.escape(str(epochs))),
            ("cheap rungs", " → ".join(f"{e} x {n:,}" for e, n in settings["rungs"]) + " (epochs x images"
                            + (f", counted in optimiser steps: the images of a batch of {STEP_BATCH}"
                               if settings.get("rung_unit") == "steps" else "") + "), then the full training"
                            if settings.get("rungs") else "none (full fidelity only)"),
            *([("widths", "filled: every candidate trained as its widest copy within the budgets (--widths "
                          "filled); the widths drawn are proportions")] if settings.get("widths") == "filled" else []),
            ("trials", f"{len(records)}: " + ", ".join(f"{counts[k]} {k.value}" for k in Outcome))]
    spans = [(r.started, r.finished or now) for r in records if r.started]
    spans += [(f.started, f.finished) for f in trials.finalist_runs]
    if spans:
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        busy = sum((e - s).total_seconds() for s, e in spans)
        rows.append(("wall time", f"{format_duration((last - first).total_seconds())} "
                                  f"(from {first:%Y-%m-%d %H:%M}; trials" + (" and finalists" if trials.finalist_runs
                                  else "") + f" busy {format_duration(busy)})"))
    complete = trials.of(Outcome.COMPLETE)
    if complete:
        best = max(complete, key=lambda r: r.value)
        rows.append(("best trial", f"#{best.number}: {best.value:.2f} % validation accuracy, {costs_text(best)} — "
                                   f"<code>{html.escape(best.code or '?')}</code>"))
    if winner is not None and winner[1] is not None:
        record, again = winner
        rows.append(("winner", f"#{record.number}: {again.mean:.2f} ± {again.std:.2f} % (min "
                               f"{min(again.val_accs.values()):.2f} %) validation accuracy over "
                               f"{len(again.val_accs)} new seeds, the best mean of the top {settings.get('finalists')} "
                               f"trials; {costs_text(record)} — <code>{html.escape(record.code or '?')}</code>"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    notice = ""
    if not records:
        notice = "This study has no trials yet."
    elif not complete:
        rejected = counts[Outcome.REJECTED]
        notice = ("No trial has completed yet" + (f" ({rejected} rejected by the budget gate)" if rejected else "")
                  + ": there is no accuracy to show, and the accuracy figures are empty or left out.")
    if counts[Outcome.INTERRUPTED]:
        notice += (f" {counts[Outcome.INTERRUPTED]} trial(s) interrupted (stopped by a signal, or their worker "
                   "died): their accuracy, if any, is that of their last epoch.")
    if counts[Outcome.RUNNING]:
        notice += (f" {counts[Outcome.RUNNING]} trial(s) marked running: still training, or left so by a search "
                   "that was stopped (their time counts up to now).")
    if counts[Outcome.QUEUED]:
        notice += (f" {counts[Outcome.QUEUED]} trial(s) queued, not started yet (warm starts, late promotions or the "
                   "retries of dead workers' trials): continuing the study trains them first.")
    return (f'<table class="summary">{body}</table>'
            + (f'<p class="notice">{html.escape(notice.strip())}</p>' if notice else ""))


def costs_text(record: TrialRecord) -> str:
    """A trial's four costs in words: parameters, MACs, and peak RAM and flash at int8 (for a trial of a study made
    before they were recorded: computed from its spec)."""
    r = figures.with_device_costs([record])[0]
    device = ("" if r.ram_int8 is None or r.flash_int8 is None
              else f", {r.ram_int8:,} B peak RAM and {r.flash_int8:,} B flash at int8")
    return f"{r.params or 0:,} parameters, {r.macs or 0:,} MACs{device}"


def data_rows(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """What the study's images are: their name (a folder or .npz: its classes, images per class and content hash)
    and their shape, classes and normalisation. A study made before the data was recorded ran on MNIST."""
    data, preprocessing = data_of(settings)
    said = html.escape(describe_data(data))
    per_class = [n for n in (data.get("images_per_class") or {}).values() if isinstance(n, int)]
    if per_class:
        low, high = min(per_class), max(per_class)
        said += f"; {low:,}{'' if low == high else f' to {high:,}'} images per class"
    if "data" not in settings:
        said += " (assumed: a study made before the data was recorded ran on MNIST)"
    rows = [("data", said)]
    if preprocessing:
        size, labels = preprocessing.get("input_size", "?"), preprocessing.get("class_labels") or []
        shown = ", ".join(map(str, labels[:12])) + (", …" if len(labels) > 12 else "")
        numbers = lambda v: ", ".join(f"{x:.4g}" for x in (v if isinstance(v, list) else [v]))  # noqa: E731
        images = (f"{preprocessing.get('channels', '?')} x {size} x {size}"
                  + (f", {len(labels)} classes ({shown})" if labels else "")
                  + f"; normalised by mean {numbers(preprocessing.get('mean'))} / std "
                    f"{numbers(preprocessing.get('std'))}"
                  + (f"; {preprocessing['resize']}" if preprocessing.get("resize") else ""))
        rows.append(("images", html.escape(images)))
    return rows


def top_table_html(trials: Trials, top: int = TOP_TRIALS) -> str:
    best = sorted(trials.of(Outcome.COMPLETE), key=lambda r: (-r.value, r.number))[:top]
    if not best:
        return "<p>No complete trials yet.</p>"
    rows = []
    for rank, r in enumerate(figures.with_device_costs(best), 1):
        per_epoch = f"{r.seconds_per_epoch:.1f}" if r.seconds_per_epoch is not None else "-"
        ram, flash = (f"{x:,}" if x is not None else "-" for x in (r.ram_int8, r.flash_int8))
        rows.append(f"<tr><td>{rank}</td><td>{r.number}</td><td>{r.value:.2f}</td><td>{r.params or 0:,}</td>"
                    f"<td>{r.macs or 0:,}</td><td>{ram}</td><td>{flash}</td><td>{len(r.curve)}</td><td>{per_epoch}</td>"
                    f"<td><code>{html.escape(r.code or '?')}</code></td></tr>")
    return ('<table class="top"><tr><th>#</th><th>trial</th><th>val acc (%)</th><th>parameters</th>'
            '<th>MACs</th><th>peak RAM (B, int8)</th><th>flash (B, int8)</th><th>epochs</th><th>s / epoch</th>'
            '<th>code</th></tr>' + "".join(rows) + "</table>")


def finalists_html(trials: Trials, settings: dict[str, Any],
                   winner: tuple[TrialRecord, Reevaluation | None] | None, lead: Lead | None = None) -> str:
    """The finalists: each one's validation accuracy with every new seed, their mean ± std and min, the
    winner marked, and whether its lead over the next is more than the seeds' noise."""
    count, seeds = settings.get("finalists") or 0, settings.get("finalist_seeds") or 0
    if not count:
        return "<p>Finalists off (<code>--finalists 0</code>): the best single run is the winner.</p>"
    top = finalists(trials.records, count)
    if not top:
        return "<p>No complete trials yet: no finalists.</p>"
    again = {r.number: trials.reevaluations.get(r.number, Reevaluation(r.number, {})) for r in top}
    columns = max([seeds, *(len(a.val_accs) for a in again.values())])
    named = winner is not None and winner[1] is not None
    rows = []
    for r in figures.with_device_costs(top):
        accs = again[r.number].val_accs
        cells = [f'<td title="seed {seed}">{accs[seed]:.2f}</td>' for seed in sorted(accs)]
        cells += ["<td>-</td>"] * (columns - len(accs))
        stats = (f"<td>{again[r.number].mean:.2f} ± {again[r.number].std:.2f}</td><td>{min(accs.values()):.2f}</td>"
                 if accs else "<td>-</td><td>-</td>")
        won = named and winner[0].number == r.number
        mark = ' class="winner"' if won else ""
        ram, flash = (f"{x:,}" if x is not None else "-" for x in (r.ram_int8, r.flash_int8))
        rows.append(f"<tr{mark}><td>{r.number}</td><td>{r.params or 0:,}</td><td>{r.macs or 0:,}</td><td>{ram}</td>"
                    f"<td>{flash}</td><td>{r.value:.2f}</td>{''.join(cells)}"
                    f"{stats}<td>{'winner' if won else ''}</td><td><code>{html.escape(r.code or '?')}</code></td></tr>")
    head = "".join(f"<th>seed {k}</th>" for k in range(1, columns + 1))
    done, wanted = sum(len(a.val_accs) for a in again.values()), len(top) * seeds
    note = (f'<p class="notice">{done} of {wanted} finalist trainings done: the winner is named once every '
            "finalist has all its seeds; until then it is the best single run.</p>" if not named else
            f'<p class="{"caption" if lead.settled else "notice"}">{html.escape(lead.sentence())}</p>' if lead else "")
    return (f'<p class="caption">The top {len(top)} complete trials by their search run, each trained again at '
            f"full fidelity with {seeds} new seed(s) on the same split (validation accuracy, %; hover a value for "
            "its seed). The best mean wins: one run's score is partly luck.</p>"
            f'<table class="finalists"><tr><th>trial</th><th>parameters</th><th>MACs</th><th>peak RAM (B, int8)</th>'
            f"<th>flash (B, int8)</th><th>search run</th>{head}"
            f"<th>mean ± std</th><th>min</th><th></th><th>code</th></tr>{''.join(rows)}</table>{note}")


def next_html(study_name: str, winner: object, best: Path | None, storage: str | None) -> str:
    """What to run next, as the search and `nas export` print it: the winner's retrain, from its best.json
    (absolute: the page is opened from anywhere), or its export first where no best.json is there."""
    if winner is None:
        return ""
    text = (next_command(best.resolve()) if best is not None and best.is_file()
            else export_command(study_name, storage))
    return f'<pre class="next">{html.escape(text)}</pre>'
