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
import re
from pathlib import Path

import optuna

from . import plotlyjs, trials_csv
from .sections import Section, Trials, sections  # noqa: F401  (imported from here by tests and callers)
from .tables import finalists_html, next_html, summary_html, top_table_html  # noqa: F401
from ..cli import add_study_args
from ..errors import DiskFull, UsageError, disk_full, first_line
from ..files import check_replaceable, write_text
from ..store.settings import StudySettings, read_settings
from ..store.storage import load_study, output_dir, studies_dir
from ..store.winner import lead_of, ranked_finalists


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
<p class="caption">Made {made} from the study's storage. The search selects on the validation split held out of the
training images (MNIST: 5,000 of them); no figure here uses the test set.</p>
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
    ranked = ranked_finalists(study, trials.records)  # one read: the winner marked and its lead agree
    winner, lead = None if ranked is None else ranked[0], lead_of(ranked)
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
                       finalists=finalists_html(trials, settings, winner, lead),
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

