"""`nas report --study NAME`: write one HTML page that shows what a search tried,
what happened to each trial, and how accuracy relates to size and to the sampled choices.

study -> one read of its trials -> `TrialRecord`s and a snapshot of the complete trials -> figures
(`nas.report.figures`, `nas.report.choices`) -> <studies dir>/<study>/report.html, with plotly.min.js beside
it (one copy per folder, so the page works offline); `--csv`: the trials as a table too (`nas.report.trials_csv`).
Read-only on the study: it can run while the search is running.
"""

from __future__ import annotations

import argparse
import datetime
import html
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import plotly.graph_objects as go

from . import choices, figures, plotlyjs, trials_csv
from ..cli import add_study_args
from ..errors import DiskFull, UsageError, disk_full, first_line
from ..export import export_command, next_command
from ..files import check_replaceable, write_text
from ..progress import format_duration
from ..store.record import (FinalistRun, Outcome, Reevaluation, StudySettings, TrialRecord, read_finalist_runs,
                            read_reevaluations, read_settings, read_trial)
from ..store.storage import load_study, output_dir, studies_dir
from ..store.winner import finalists, select_winner

log = logging.getLogger(__name__)

TOP_TRIALS, SLICE_PARAMS, PARALLEL_PARAMS = 10, 6, 8


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


# ---------------------------------------------------------------- the tables


def summary_html(name: str, settings: dict[str, Any], trials: Trials, now: datetime.datetime,
                 winner: tuple[TrialRecord, Reevaluation | None] | None = None) -> str:
    records = trials.records
    counts = Counter(r.outcome for r in records)
    epochs = settings.get("epochs", "?")
    if "train_images" in settings:
        epochs = f"{epochs}, on {settings['train_images']:,} training images"
    rows = [("study", html.escape(name)), ("search space", html.escape(str(settings.get("space", "?")))),
            ("budget", f"fewer than {settings['budget']:,} parameters" if "budget" in settings else "?"),
            *[(what, f"at most {settings[key]:,}{unit}") for key, what, unit in (
                ("max_macs", "MACs budget", " MACs"), ("max_ram", "peak RAM budget", " bytes at int8"),
                ("max_flash", "flash budget", " bytes at int8")) if settings.get(key) is not None],
            ("epochs of a full training", html.escape(str(epochs))),
            ("cheap rungs", " → ".join(f"{e} x {n:,}" for e, n in settings["rungs"]) + " (epochs x images), "
                            "then the full training" if settings.get("rungs") else "none (full fidelity only)"),
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
        rows.append(("best trial", f"#{best.number}: {best.value:.2f} % validation accuracy, "
                                   f"{best.params or 0:,} parameters, {best.macs or 0:,} MACs — "
                                   f"<code>{html.escape(best.code or '?')}</code>"))
    if winner is not None and winner[1] is not None:
        record, again = winner
        rows.append(("winner", f"#{record.number}: {again.mean:.2f} ± {again.std:.2f} % (min "
                               f"{min(again.val_accs.values()):.2f} %) validation accuracy over "
                               f"{len(again.val_accs)} new seeds, the best mean of the top {settings.get('finalists')} "
                               "trials"))
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
    return (f'<table class="summary">{body}</table>'
            + (f'<p class="notice">{html.escape(notice.strip())}</p>' if notice else ""))


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
                   winner: tuple[TrialRecord, Reevaluation | None] | None) -> str:
    """The finalists: each one's validation accuracy with every new seed, their mean ± std and min, the
    winner marked."""
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
    for r in top:
        accs = again[r.number].val_accs
        cells = [f'<td title="seed {seed}">{accs[seed]:.2f}</td>' for seed in sorted(accs)]
        cells += ["<td>-</td>"] * (columns - len(accs))
        stats = (f"<td>{again[r.number].mean:.2f} ± {again[r.number].std:.2f}</td><td>{min(accs.values()):.2f}</td>"
                 if accs else "<td>-</td><td>-</td>")
        won = named and winner[0].number == r.number
        mark = ' class="winner"' if won else ""
        rows.append(f"<tr{mark}><td>{r.number}</td><td>{r.params or 0:,}</td><td>{r.value:.2f}</td>{''.join(cells)}"
                    f"{stats}<td>{'winner' if won else ''}</td><td><code>{html.escape(r.code or '?')}</code></td></tr>")
    head = "".join(f"<th>seed {k}</th>" for k in range(1, columns + 1))
    done, wanted = sum(len(a.val_accs) for a in again.values()), len(top) * seeds
    note = "" if named else (f'<p class="notice">{done} of {wanted} finalist trainings done: the winner is named '
                             "once every finalist has all its seeds; until then it is the best single run.</p>")
    return (f'<p class="caption">The top {len(top)} complete trials by their search run, each trained again at '
            f"full fidelity with {seeds} new seed(s) on the same split (validation accuracy, %; hover a value for "
            "its seed). The best mean wins: one run's score is partly luck.</p>"
            f'<table class="finalists"><tr><th>trial</th><th>parameters</th><th>search run</th>{head}'
            f"<th>mean ± std</th><th>min</th><th></th><th>code</th></tr>{''.join(rows)}</table>{note}")


def next_html(study_name: str, winner: object, best: Path | None, storage: str | None) -> str:
    """What to run next, as the search and `nas export` print it: the winner's retrain, from its best.json
    (absolute: the page is opened from anywhere), or its export first where no best.json is there."""
    if winner is None:
        return ""
    text = (next_command(best.resolve()) if best is not None and best.is_file()
            else export_command(study_name, storage))
    return f'<pre class="next">{html.escape(text)}</pre>'


# ---------------------------------------------------------------- the page

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
th, td {{ text-align: left; padding: .2em .8em .2em 0; border-bottom: 1px solid #eee; vertical-align: top; }}
table.top td:nth-child(-n+7), table.finalists td:nth-last-child(n+3) {{ text-align: right; }}
table.finalists th, table.finalists td:not(:last-child) {{ white-space: nowrap; }}
tr.winner td {{ font-weight: bold; }}
pre.next {{ background: #eef6ee; border-left: 4px solid #2ca02c; padding: .5em .8em; white-space: pre-wrap; }}
code {{ font-size: .92em; }}
.caption {{ color: #555; max-width: 60em; }}
.note, .notice {{ background: #fff6e0; border-left: 4px solid #f0b429; padding: .5em .8em; }}
section {{ margin-top: 2em; }}
</style></head><body>
<h1>{title}</h1>
{next}
<p class="caption">Made {made} from the study's storage. The search selects on the 5,000-image validation split;
no figure here uses the test set.</p>
{summary}
<h2>Finalists</h2>
{finalists}
<h2>Top trials</h2>
{top}
{sections}
</body></html>
"""


def build_report(study: optuna.Study, now: datetime.datetime | None = None, best: Path | None = None,
                 storage: str | None = None) -> str:
    """The report page of a study, as one HTML string that loads plotly.min.js from beside it
    (plotlyjs.write_bundle). `best`: the study's best.json, for the next command; `storage`: the URL it
    was read from, if not the default one."""
    now = now or datetime.datetime.now()
    settings = read_settings(study)
    trials = Trials.read(study)
    winner = select_winner(study, trials.records)
    parts, plotly_js = [], plotlyjs.INCLUDE
    limits = {key: settings.get(key) for key in StudySettings.DEVICE_BUDGETS}
    for s in sections(trials, settings.get("budget"), now, limits) if trials.records else []:
        key = re.sub(r"[^a-z]+", "-", s.title.lower()).strip("-")  # stable ids: links, diffs
        parts.append(f'<section id="{key}"><h2>{html.escape(s.title)}</h2>'
                     f'<p class="caption">{html.escape(s.caption)}</p>')
        if s.figure is not None:
            # the page loads plotly.js once, with the first figure, from the file beside it: offline, no CDN
            parts.append(s.figure.to_html(full_html=False, include_plotlyjs=plotly_js, div_id=f"fig-{key}",
                                          config={"displaylogo": False, "responsive": True}))
            plotly_js = False
        else:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        parts.append("</section>")
    return PAGE.format(title=html.escape(f"Search report: {study.study_name}"), made=f"{now:%Y-%m-%d %H:%M}",
                       next=next_html(study.study_name, winner, best, storage),
                       summary=summary_html(study.study_name, settings, trials, now, winner),
                       finalists=finalists_html(trials, settings, winner),
                       top=top_table_html(trials),
                       sections="\n".join(parts))


def write_report(study: optuna.Study, out_dir: Path, best: Path | None = None, storage: str | None = None) -> Path:
    """Write `report.html` into out_dir (made if missing), atomically, with plotly.min.js beside it; returns
    its path. `best`: the study's best.json (default: the one in out_dir). A full disk raises DiskFull naming
    the file (the half-written temporary file is removed; an earlier page stays)."""
    path = out_dir / "report.html"
    # before the disk is touched: reading the study is not writing
    page = build_report(study, best=out_dir / "best.json" if best is None else best, storage=storage)
    target = path
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plotlyjs.TAG in page:  # first: the page never points at a missing file
            target = out_dir / plotlyjs.BUNDLE
            plotlyjs.write_bundle(out_dir)
            target = path
        write_text(path, page)
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            raise
        raise DiskFull(str(target), full.reason) from exc  # the file, not the temporary file beside it
    return path


# ---------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_args(parser)
    parser.add_argument("--out", help="directory to write report.html (and plotly.min.js) into (default: the "
                                      "study's output folder, <studies dir>/<study>/ for a study in the default "
                                      "storage)")
    parser.add_argument("--csv", nargs="?", const="", metavar="PATH",
                        help="also write one row per trial as CSV to PATH (default: trials.csv beside report.html)")


def run(args: argparse.Namespace) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = studies_dir(args.studies_dir)
    study = load_study(args.study, args.storage, root)
    home = output_dir(root, args.study, args.storage)
    out = Path(args.out) if args.out else home
    check_replaceable(out / "report.html", "html")
    table = None if args.csv is None else Path(args.csv) if args.csv else out / trials_csv.DEFAULT_NAME
    if table is not None:
        check_replaceable(table, "csv", "--csv")
    try:
        path = write_report(study, out, home / "best.json", args.storage)
    except OSError as exc:  # --out is a file, or not writable
        raise UsageError(f"cannot write the report into {out}: {exc.strerror or first_line(exc)}") from None
    print(path)
    if table is not None:
        try:
            trials_csv.write_csv(study, table)
        except OSError as exc:
            full = disk_full(exc)
            if full is not None:
                raise DiskFull(str(table), full.reason) from exc
            raise UsageError(f"cannot write {table}: {exc.strerror or first_line(exc)}") from None
        print(table)
    return 0

