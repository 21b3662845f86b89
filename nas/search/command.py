"""`nas search --budget 8000`: search a space for the most accurate network under a parameter budget (and,
with --max-macs, --max-ram and --max-flash, under a device's budgets).

trial -> spec (space.sample) -> module (build) -> costs -> gate -> train (per-epoch
validation accuracy, pruning) -> trial record; the trial's value is the final-epoch validation accuracy.
`--jobs N` runs N worker processes on one study; the same command with the same `--storage` on
another machine joins it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import warnings
from pathlib import Path

import optuna

from ..bundled import DEFAULT_SPACE
from ..cli import (add_device_args, add_device_budget_args, add_study_args, non_negative_int, positive_float,
                   positive_int)
from ..data import describe_data, load_search_data, source_from_args, study_data, study_preprocessing
from ..device import describe
from ..errors import DiskFull, UsageError, cause_line, disk_full
from ..export import next_command
from ..fidelity import DEFAULT_RUNG_UNIT, REDUCTION_FACTOR, RUNG_UNITS, STEP_BATCH, Fidelity
from ..progress import format_duration
from ..store.credentials import redact
from ..store.settings import StudySettings, read_settings, stored_space_file, write_settings
from ..store.storage import create_or_load, open_storage, retry_seconds, storage_failed, with_retry
from ..store.winner import write_best
from .finalists import table
from .header import run_header, space_changed
from .neighbours import NEIGHBOURS
from .objective import DRAWN, WIDTHS
from .plan import MAX_SEED, Plan, budgets_of, default_study_name, make_plan  # noqa: F401  (default_study_name: tests)
from .pruner import hold_scores
from .sampler import SAMPLERS, TPE_STARTUP_TRIALS
from .signals import interruptible
from .summary import rejection_report, summary
from .warm_start import enqueue
from .workers import Job, reevaluate_finalists, run_workers, stopped, work

METRIC_NAME = "validation accuracy (%)"  # a trial's value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=positive_int, required=True, help="parameters allowed; a model needs fewer")
    add_device_budget_args(p, "a candidate above is rejected before any training")
    p.add_argument("--space", default=DEFAULT_SPACE,
                   help="search-space YAML file, or the name of a bundled space (mnist, mnist_classic, mnist_small, "
                        "mnist_tiny, colour32: see nas list)")
    add_study_args(p, required=False)
    p.add_argument("--trials", type=non_negative_int,
                   help="trials this command runs, all workers together (default: 50, or unlimited with --timeout); "
                        "0: none, only finish what a stopped run left (its finalists, --retrain)")
    p.add_argument("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs of the full training (the top rung)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samplers and of the trials' training")
    p.add_argument("--subset", type=positive_int, help="train on only this many training images (smoke runs)")
    p.add_argument("--rungs", nargs="+", metavar="EPOCHSxIMAGES",
                   help="the cheap rungs every candidate climbs before its full training, cheapest first, e.g. "
                        "2x11000 4x27500; 'none': every candidate trains at full fidelity (median stopping only). "
                        "Default: 2/15 of --epochs on 1/5 of the training images, then 4/15 on half (2x11000 "
                        "4x27500 for 15 epochs on 55,000); a study keeps the rungs it was created with")
    p.add_argument("--rungs-in", choices=RUNG_UNITS,
                   help="what a cheap rung counts: images (every candidate trains on the same images) or "
                        f"steps (the rung's images are for a batch of {STEP_BATCH}; a candidate of batch b trains "
                        f"on b/{STEP_BATCH} of them, so each takes the same optimiser steps). Default: "
                        f"{DEFAULT_RUNG_UNIT}; a study keeps what it was created with")
    p.add_argument("--widths", choices=WIDTHS,
                   help="what a candidate's widths are: drawn (as the sampler draws them) or filled (every width "
                        "scaled by one factor to the widest copy within the budgets, a copy over them narrowed: "
                        "every candidate uses its budget, the widths drawn are proportions). Default: "
                        f"{DRAWN}; a study keeps what it was created with")
    p.add_argument("--eta", type=positive_float, default=REDUCTION_FACTOR,
                   help="promote the best 1/ETA of the candidates at each cheap rung (must be > 1)")
    p.add_argument("--promote-after", type=positive_int, metavar="N",
                   help="a cheap rung promotes nobody until it holds N scores, then its best 1/ETA go on, and later "
                        "ones as they rank (default: ETA's own, 3): more waits longer for the first full training "
                        "and starts it on the best of more candidates; a run's choice. A run of fewer --trials than "
                        "N x ETA^rungs (81 for 9) waits for ETA's own")
    p.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0],
                   help="how candidates are drawn: tpe (learns from every trial, screens its proposals with the "
                        "budgets) or random (random search: the baseline); a run's choice, workers may differ")
    p.add_argument("--startup-trials", type=non_negative_int, metavar="N",
                   help=f"TPE's random draws (trained or rejected) before it models the study (default "
                        f"{TPE_STARTUP_TRIALS}); a run's choice")
    p.add_argument("--finalists", type=non_negative_int, default=3,
                   help="before naming the winner, train the best N trials again with new seeds at full fidelity "
                        "(validation split only) and pick the best mean; 0: the best single run wins")
    p.add_argument("--finalist-seeds", type=positive_int, default=3, help="new seeds per finalist")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes sharing the study (each with its own CPU threads or CUDA context)")
    p.add_argument("--warm-start", nargs="+", metavar="SPEC",
                   help="spec files, or bundled specs' names (found/b4000, reference/4_final), to enqueue as the "
                        "first trials, after the hand-made references that fit")
    p.add_argument("--no-warm-start", action="store_true",
                   help="do not enqueue the hand-made references (search_spaces/reference/) that fit the budget "
                        "and the space")
    p.add_argument("--widen-best", action="store_true",
                   help="when a full training becomes the study's best with room left in the budgets, queue its "
                        "widest copy within them as the next trial (every width scaled by one factor, as a warm "
                        "start's widening); a run's choice")
    p.add_argument("--neighbours", type=non_negative_int, metavar="N",
                   help="when a full training becomes the study's best, queue N of its neighbours (the same "
                        "candidate with one sampled parameter moved one step) as the next trials; 0: none "
                        f"(default: {NEIGHBOURS} where the search has a warm start, else 0)")
    p.add_argument("--retrain", type=positive_int, metavar="K",
                   help="after the search, retrain the winner on all 60,000 training images with K seeds and "
                        "print its final-epoch test accuracy (as nas retrain; --subset trims it too)")
    p.add_argument("--space-changed", action="store_true",
                   help="continue a study although its space (same name) now draws other values than when the "
                        "study last ran: its earlier trials stay, drawn from the earlier content; the header "
                        "and the summary say so")
    p.add_argument("-q", "--quiet", action="store_true", help="no header or live progress, only the summary")
    p.add_argument("--no-report", action="store_true", help="do not write the study's report.html at the end")
    add_device_args(p)


def check_settings(study_name: str, stored: dict, settings: StudySettings, space_changed: bool = False) -> None:
    """Refuse to continue a study with settings that would make its trials incomparable (another content
    of its space only with `space_changed`: --space-changed)."""
    for key in StudySettings.DEVICE_BUDGETS:  # None (no such budget) counts: studies made before have none
        if stored and stored.get(key) != getattr(settings, key):
            flag = key.replace("_", "-")
            said = lambda value: "none" if value is None else f"{value:,}"  # noqa: E731
            raise UsageError(f"study {study_name!r} was run with --{flag} {said(stored.get(key))}, not "
                             f"{said(getattr(settings, key))}: pick another --study, or continue it with the same "
                             "budgets")
    for key, value in sorted(vars(settings).items(), key=lambda item: item[0] != "data"):  # other data: said first
        if key in StudySettings.CHANGEABLE or value is None or key not in stored or stored[key] == value:
            continue
        if key == "space_hash":
            if space_changed:
                continue
            raise UsageError(f"study {study_name!r} was run with space {settings.space} as "
                             f"{stored.get('space_file', 'its file then')} held it, and {settings.space_file} "
                             "draws other values under that name: pass --space-changed to continue the study "
                             "with it, or pick another --study")
        if key == "data":
            raise UsageError(f"study {study_name!r} was run on data {describe_data(stored[key])}, not "
                             f"{describe_data(value)}: pick another --study, or continue it on the same data")
        if key == "preprocessing":
            shown = lambda p: (f"{p.get('channels')}x{p.get('input_size')}x{p.get('input_size')} images"  # noqa: E731
                               + (f", {p['resize']}" if p.get("resize") else "") if isinstance(p, dict) else str(p))
            raise UsageError(f"study {study_name!r} was run on {shown(stored[key])}, not {shown(value)}: pass the "
                             "same --image-size and --channels, or pick another --study")
        if key == "rungs":
            shown = lambda rungs: " ".join(f"{e}x{n}" for e, n in rungs) or "none"  # noqa: E731
            raise UsageError(f"study {study_name!r} was run with --rungs {shown(stored[key])}, not {shown(value)}: "
                             "pick another --study, or continue it with the same rungs")
        if key in ("rung_unit", "widths"):
            flag = "--rungs-in" if key == "rung_unit" else "--widths"
            raise UsageError(f"study {study_name!r} was run with {flag} {stored[key]}, not {value}: pick "
                             f"another --study, or continue it with the same {flag}")
        raise UsageError(f"study {study_name!r} was run with {key} {stored[key]}, not {value}: "
                         "pick another --study, or continue it with the same settings")


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    study, n_before, cheap, rung_unit, widths, started, space_before = _open_study(plan, args)
    if not args.quiet:
        print(run_header(plan, args, budgets_of(args), n_before, cheap, started, space_before, rung_unit, widths),
              file=sys.stderr)
    job = Job(space=plan.space.path, budget=args.budget, study=plan.study_name, storage=plan.url, epochs=args.epochs,
              seed=args.seed, subset=args.subset, data_dir=str(plan.data_dir), device=plan.device.type,
              trials=plan.trials, timeout=args.timeout, quiet=args.quiet, out=str(plan.out),
              rungs=tuple((r.epochs, r.train_images) for r in cheap), rung_unit=rung_unit, eta=args.eta,
              hold=hold_scores(plan.trials, len(cheap), args.eta, args.promote_after), sampler=args.sampler,
              startup=args.startup_trials,
              finalists=args.finalists, finalist_seeds=args.finalist_seeds, max_macs=args.max_macs,
              max_ram=args.max_ram, max_flash=args.max_flash, source=plan.source, widen_best=args.widen_best,
              neighbours=plan.neighbours, widths=widths)
    start = time.perf_counter()
    data = None
    if plan.trials == 0:  # --trials 0: straight to the finalists and the retrain a stopped run did not finish
        code = 0
    elif args.jobs == 1:
        def here() -> int:
            nonlocal data
            data = load_search_data(plan.source, plan.device, args.subset)
            return work(job, data)
        code = interruptible(here)
    else:
        code = run_workers(job, args.jobs)
    searched = code  # 0: the trials are done, and a signal from here on stops the finalists

    # the end, however the run ended: what the storage holds now, if it answers (a worker that lost it
    # waited as long as workers wait: a short look), and the outputs, if the disk takes them
    study = _read_study(plan, seconds=min(retry_seconds(), 10.0) if code == 3 else None)
    if study is not None and code == 0 and args.finalists:
        try:
            code = reevaluate_finalists(study, job, args.jobs, data)
        except Exception as exc:  # in this process: its storage gone (3) or its disk full (4), said in one line
            code = stopped(job, "", exc)
            if code is None:
                raise
    if study is not None:
        try:
            print(summary(study))
            if args.finalists:
                print(table(study, args.finalists))
            print(rejection_report(study))
            ran = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)[n_before:])
            print(f"this run: {ran} trials in "
                  f"{format_duration(time.perf_counter() - start)} on {describe(plan.device)}, "
                  f"{args.jobs} worker process(es)")
            if space_before is not None:
                print(space_changed(plan, n_before, space_before))
        except Exception as exc:
            if not storage_failed(exc):
                raise
            print(f"summary: not complete: the storage stopped answering ({cause_line(exc)})")
            study = None
    if study is not None:
        code = _write_outputs(study, plan.out, not args.no_report, code)
        if code == 0 and not args.retrain and (plan.out / "best.json").is_file():
            print(next_command(plan.out / "best.json"))  # as nas export and the report say it
    if args.retrain and code == 0:
        # its own handler: the workers' one forwards to processes no longer there
        code = interruptible(lambda: _retrain_winner(args, plan.out))
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            print(f"nas search: interrupted by {signal.Signals(code - 128).name}: the study is unchanged, the "
                  "winner's retrain unfinished; run the same command with --trials 0 to finish it", file=sys.stderr)
            return code
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        name = signal.Signals(code - 128).name
        if searched == 0:  # only the finalists (and the retrain) are left: the same command would run more trials
            print(f"nas search: interrupted by {name} during the finalists: the trials and the finalists' finished "
                  "trainings are kept; summary and report written; run the same command with --trials 0 to finish "
                  "the finalists" + (" and the retrain" if args.retrain else ""), file=sys.stderr)
        else:
            print(f"nas search: interrupted by {name}: the running trial(s) stored as failed (interrupted); "
                  "summary and report written; run the same command to continue", file=sys.stderr)
    return code


def _read_study(plan: Plan, seconds: float | None) -> optuna.Study | None:
    """The study as the storage holds it now; None, said on stdout where the summary goes, if the storage
    does not answer within `seconds` (None: the retry window in force)."""
    try:
        return with_retry(lambda: optuna.load_study(study_name=plan.study_name, storage=open_storage(plan.url)),
                          "reading the study", seconds)
    except Exception as exc:
        if not storage_failed(exc):
            raise
        print(f"summary: could not be read: {redact(plan.url)} did not answer ({cause_line(exc)}); "
              "the same command shows it once it is back")
        return None


def _write_outputs(study: optuna.Study, out: Path, report: bool, code: int) -> int:
    """best.json and (if `report`) report.html; returns the exit status: `code`, or 4 if the disk is full
    (said in one line on stderr, or on stdout when a worker has said so already)."""
    from ..report.command import write_report  # plotly and Optuna's figures: only now, not before the header

    for name, write in (("best.json", lambda: write_best(study, out)),
                        ("report.html", lambda: write_report(study, out) if report else None)):
        try:
            written = write()
        except Exception as exc:
            full = disk_full(exc)
            if full is None:
                raise
            full = DiskFull(str(out / name), full.reason)  # the file, not the temporary one beside it
            if code == 4:  # a worker's line said it already
                print(f"{name}: not written: {full}")
            else:
                print(f"nas search: error: {full}; free some space, then rerun the same command (it writes the "
                      "summary, best.json and the report again)", file=sys.stderr)
                code = 4
            continue
        if written is not None:
            print(f"best architecture: {out / 'best.json'}" if name == "best.json" else f"report: {written}")
    return code


def _open_study(plan: Plan, args: argparse.Namespace
                ) -> tuple[optuna.Study, int, tuple[Fidelity, ...], str, str, list[str], str | None]:
    """Create or continue the study (refusing other settings than it was made with) and queue the warm
    starts. Returns the study, its trial count before this run, its cheap rungs and what they count, its
    --widths, what was queued and, where --space-changed let another content of the space in, the file the
    study's space came from."""
    storage = open_storage(plan.url, plan.root)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        existing = optuna.load_study(study_name=plan.study_name, storage=storage)
    except KeyError:
        existing = None
    stored = read_settings(existing) if existing is not None else {}
    if existing is not None and "rungs" not in stored and existing.get_trials(deepcopy=False):
        stored["rungs"] = []  # a study made before rungs: every trial at full fidelity
    if existing is not None and "rung_unit" not in stored and existing.get_trials(deepcopy=False):
        stored["rung_unit"] = "images"  # a study made before --rungs-in: its rungs counted images
    if existing is not None and "widths" not in stored and existing.get_trials(deepcopy=False):
        stored["widths"] = DRAWN  # a study made before --widths: trained as drawn
    if existing is not None and "data" not in stored and existing.get_trials(deepcopy=False):
        stored["data"] = {"name": "mnist"}  # a study made before other data: MNIST
    cheap = plan.cheap
    if plan.asked_rungs is None and "rungs" in stored:  # continuing without --rungs: the study's own ladder
        cheap = tuple(Fidelity(*r) for r in stored["rungs"])
    rung_unit = args.rungs_in or stored.get("rung_unit") or DEFAULT_RUNG_UNIT  # without --rungs-in: the study's own
    widths = args.widths or stored.get("widths") or DRAWN  # the same for --widths
    settings = StudySettings(budget=args.budget, space=plan.space.name, space_file=stored_space_file(plan.space.path),
                             epochs=args.epochs, train_images=plan.full.train_images,
                             rungs=[[r.epochs, r.train_images] for r in cheap], rung_unit=rung_unit,
                             widths=widths, finalists=args.finalists,
                             finalist_seeds=args.finalist_seeds, space_hash=plan.space.content_hash,
                             max_macs=args.max_macs, max_ram=args.max_ram, max_flash=args.max_flash,
                             data=study_data(plan.source, plan.data), preprocessing=study_preprocessing(plan.data))
    check_settings(plan.study_name, stored, settings, args.space_changed)
    # a study made before space_hash was recorded: accepted, and its hash recorded from now on
    space_before = (str(stored.get("space_file", "its earlier file"))
                    if stored.get("space_hash", settings.space_hash) != settings.space_hash else None)
    study = create_or_load(plan.study_name, storage, direction="maximize")  # the schema and the study: once, here
    if study.metric_names is None:  # the objective's name in optuna-dashboard and Optuna's figures
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    n_before = len(study.trials)
    if plan.trials is not None and args.seed + n_before + plan.trials > MAX_SEED:
        raise UsageError(f"--seed {args.seed} plus the study's {n_before + plan.trials:,} trials passes {MAX_SEED} "
                         "(trial seeds are --seed + trial number): use a smaller --seed")
    write_settings(study, settings)
    return study, n_before, cheap, rung_unit, widths, enqueue(study, plan.starts, storage, plan.url), space_before


def _retrain_winner(args: argparse.Namespace, out: Path) -> int:
    """The retrain of the study's best.json into `<outputs>/trial<N>_retrain/`: the test set is read only now."""
    from ..retrain import METRICS_FILE, retrain  # the checkpoint and export code: only when asked for

    best = out / "best.json"
    if not best.is_file():
        print("nas search: no trial completed: nothing to retrain", file=sys.stderr)
        return 1
    target = out / f"trial{json.loads(best.read_text())['trial']}_retrain"
    if (target / METRICS_FILE).is_file():  # this winner was retrained by an earlier run: keep its results
        print(f"the winner was retrained before: {target / METRICS_FILE}")
        return 0
    # checkpoints without metrics: a retrain of ours that was stopped; the seeds it finished as this run trains
    # them are kept, the others trained again
    unfinished = target.is_dir() and any(target.iterdir())
    print(f"retraining the winner, {args.retrain} seed(s) x {args.epochs} epochs, into {target}"
          + (" (an earlier retrain there did not finish: continued)" if unfinished else ""), flush=True)
    return retrain(best, target, epochs=args.epochs, seeds=args.retrain, subset=args.subset, budget=args.budget,
                   max_macs=args.max_macs, max_ram=args.max_ram, max_flash=args.max_flash, overwrite=unfinished,
                   resume=unfinished, quiet=args.quiet, device=args.device, data_dir=args.data_dir,
                   data=source_from_args(args))


