"""`nas search --budget 8000`: search a space for the most accurate network under a parameter budget.

trial -> spec (space.sample) -> module (build) -> fvcore count -> gate -> train (per-epoch
validation accuracy, pruning) -> trial record; the trial's value is the final-epoch validation accuracy.
`--jobs N` runs N worker processes on one study; the same command with the same `--storage` on
another machine joins it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import torch

from . import retrain
from .bundled import DEFAULT_SPACE
from .cli import (add_device_args, add_study_args, format_duration, non_negative_int, positive_float, positive_int,
                  run_command)
from .finalists import MAX_SEEDS, pending, reevaluate, table
from .cost import count_macs, count_params
from .data import Split, Splits, check_data, load_search_data, resolve_data_dir, search_sizes
from .device import describe, resolve_device, usable_cores
from .errors import StorageError, UsageError
from .heartbeat import HOST, beating, heal
from .model import build
from .retrain import METRICS_FILE
from .fidelity import ETA, RungPruner, ladder, parse_rung
from .record import (Fidelity, Outcome, RungScore, StudySettings, read_settings, read_trial, read_trials,
                     record_candidate, record_epochs, record_fidelity, record_outcome, record_rungs,
                     trained_per_fidelity, write_best, write_settings)
from .report import write_report
from .sampler import BudgetAwareTPESampler
from .space import Space, load_space
from .study import (TRANSIENT, check_study_name, create_or_load, default_storage, open_storage, output_dir, redact,
                    studies_dir, with_retry)
from .train import EpochResult, TrainResult, train
from .warm_start import enqueue, warm_starts

MAX_BUDGET = 10**9  # storages keep 64-bit integers; no CNN here comes near this
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take 32-bit seeds
Trainer = Callable[..., TrainResult]  # nas.train.train's signature


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=positive_int, required=True, help="parameters allowed; a model needs fewer")
    p.add_argument("--space", default=DEFAULT_SPACE,
                   help="search-space YAML file, or the name of a bundled space (mnist, mnist_tiny)")
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
    p.add_argument("--eta", type=positive_float, default=ETA,
                   help="promote the best 1/ETA of the candidates at each cheap rung (must be > 1)")
    p.add_argument("--finalists", type=non_negative_int, default=3,
                   help="before naming the winner, train the best N trials again with new seeds at full fidelity "
                        "(validation split only) and pick the best mean; 0: the best single run wins")
    p.add_argument("--finalist-seeds", type=positive_int, default=3, help="new seeds per finalist")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes sharing the study (each with its own CPU threads or CUDA context)")
    p.add_argument("--warm-start", nargs="+", metavar="SPEC",
                   help="spec files to enqueue as the first trials, after the hand-made references that fit")
    p.add_argument("--no-warm-start", action="store_true",
                   help="do not enqueue the hand-made references (search_spaces/reference/) that fit the budget "
                        "and the space")
    p.add_argument("--retrain", type=positive_int, metavar="K",
                   help="after the search, retrain the winner on all 60,000 training images with K seeds and "
                        "print its final-epoch test accuracy (as nas retrain; --subset trims it too)")
    p.add_argument("-q", "--quiet", action="store_true", help="no header or live progress, only the summary")
    p.add_argument("--no-report", action="store_true", help="do not write the study's report.html at the end")
    add_device_args(p)


# ------------------------------------------------------------------ progress


@dataclass
class Progress:
    """Live progress on stderr: one line per epoch, rewritten in place on a terminal.

    Counters are of this worker's run; the best is the study's. The ETA comes from the measured
    seconds per epoch of this run times the epochs left: those of the running trial, plus those the
    trials still to start are expected to train (this run's mean epochs per finished trial:
    rejections train none, pruned trials few).
    """

    quiet: bool
    trials: int | None
    timeout: float | None
    epochs: int
    label: str = ""  # "w2/3 " when several workers share the terminal
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    rejected: int = 0
    best: str = "-"
    epochs_trained: int = 0  # by finished trials of this run
    epoch_seconds: float = 0.0  # wall seconds (training and validation) of every epoch of this run
    epochs_timed: int = 0
    running: dict[int, int] = field(default_factory=dict)  # trial number -> epochs it has trained
    storage_error: StorageError | None = None  # set when a trial gave up waiting for the storage
    _width: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def epoch_done(self, number: int, seconds: float) -> None:
        with self.lock:
            self.running[number] = self.running.get(number, 0) + 1
            self.epoch_seconds += seconds
            self.epochs_timed += 1

    def trial_done(self, number: int, rejected: bool) -> None:
        with self.lock:
            self.done += 1
            self.rejected += rejected
            self.epochs_trained += self.running.pop(number, 0)

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        left = []
        if self.trials is not None and self.epochs_timed:
            per_trial = self.epochs_trained / self.done if self.done else self.epochs
            to_start = max(0, self.trials - self.done - len(self.running))
            epochs_left = sum(self.epochs - e for e in self.running.values()) + to_start * per_trial
            left.append(self.epoch_seconds / self.epochs_timed * epochs_left)
        if self.timeout is not None:
            left.append(max(0.0, self.timeout - elapsed))
        return format_duration(min(left)) if left else "?"

    def show(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        with self.lock:
            line = (f"[{format_duration(time.perf_counter() - self.start)}] {self.label}this run: {self.done}/"
                    f"{self.trials or '?'} trials, {self.rejected} rejected | study best {self.best} | {text} "
                    f"| ETA {self.eta()}")
            if sys.stderr.isatty():
                print("\r" + line.ljust(self._width), end="\n" if final else "", file=sys.stderr, flush=True)
                self._width = 0 if final else len(line)
            else:
                print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the objective


def make_objective(space: Space, data: Splits, budget: int, epochs: int, seed: int, progress: Progress,
                   trainer: Trainer = train, in_flight: set[int] | None = None,
                   cheap_rungs: tuple[Fidelity, ...] = ()) -> Callable[[optuna.Trial], float]:
    """The objective: sample, count, gate, climb the cheap rungs, then train at full fidelity with
    `trainer` (nas.train.train's signature). The trial's value is the full training's final epoch.

    `cheap_rungs` (cheapest first; nas.fidelity.ladder) each train the candidate afresh on the first
    images of `data.train`; the study's pruner decides after each whether it goes on.
    `in_flight` collects the numbers of the trials this process is running (for heal()).
    """
    full = Fidelity(epochs, len(data.train))
    climb = (*cheap_rungs, full)
    rung_data = [Splits(Split(data.train.x[:r.train_images], data.train.y[:r.train_images]), data.held_out)
                 for r in cheap_rungs]  # views: the first images of the (already shuffled) search split
    in_flight = set() if in_flight is None else in_flight

    def objective(trial: optuna.Trial) -> float:
        in_flight.add(trial.number)
        try:
            with beating(trial):
                return _evaluate(trial)
        except optuna.TrialPruned:
            raise
        except StorageError as exc:  # the storage is gone: nothing can be recorded; the worker stops
            progress.storage_error = exc
            raise
        except KeyboardInterrupt:  # a signal: Optuna stores the trial as FAIL; say why
            _quietly(lambda: record_outcome(trial, Outcome.INTERRUPTED))
            raise
        except Exception:
            _quietly(lambda: record_outcome(trial, Outcome.FAILED))
            raise
        finally:
            in_flight.discard(trial.number)

    def _evaluate(trial: optuna.Trial) -> float:
        spec = space.sample(trial)
        module = build(spec)
        params = count_params(module)
        record_candidate(trial, spec, params, count_macs(module), climb[0], climb if cheap_rungs else ())
        # feasible when <= 0, i.e. params < budget; the sampler learns from the violation's size
        trial.set_constraint("params", params - budget + 1)
        if params >= budget:
            record_outcome(trial, Outcome.REJECTED)
            progress.show(f"trial {trial.number} rejected: {params:,} params >= {budget:,}", final=True)
            raise optuna.TrialPruned(f"{params} parameters >= budget {budget}")

        epoch_seconds: list[float] = []
        last = [time.perf_counter()]
        where = f"trial {trial.number} ({params:,} params)"

        def timed() -> None:  # wall time of the epoch, validation included, for the ETA
            now = time.perf_counter()
            progress.epoch_done(trial.number, now - last[0])
            last[0] = now

        def on_rung_epoch(r: EpochResult) -> None:
            timed()
            progress.show(f"{where} rung {len(scores) + 1}/{len(climb)} ({climb[len(scores)]}) epoch "
                          f"{r.epoch}/{r.epochs} loss {r.train_loss:.3f} val {r.eval_acc:.2f}%")

        def on_epoch(r: EpochResult) -> None:
            timed()
            epoch_seconds.append(r.seconds)
            # the storage may hiccup (a database restart): wait for it rather than lose the trial's epochs
            with_retry(lambda: record_epochs(trial, epoch_seconds), "recording an epoch")
            with_retry(lambda: trial.report(r.eval_acc, len(cheap_rungs) + r.epoch), "reporting an epoch")
            pruned = with_retry(trial.should_prune, "asking the pruner")
            rung = f"rung {len(climb)}/{len(climb)} ({full}) " if cheap_rungs else ""
            progress.show(f"{where} {rung}epoch {r.epoch}/{r.epochs} loss {r.train_loss:.3f} "
                          f"val {r.eval_acc:.2f}%{' pruned' if pruned else ''}", final=pruned or r.epoch == r.epochs)
            if pruned:
                record_outcome(trial, Outcome.PRUNED)
                raise optuna.TrialPruned(f"val {r.eval_acc:.2f}% at epoch {r.epoch}")

        record_outcome(trial, Outcome.RUNNING)
        scores: list[RungScore] = []
        try:
            for step, (rung, rung_split) in enumerate(zip(cheap_rungs, rung_data)):
                start = time.perf_counter()
                score = trainer(spec, rung_split, epochs=rung.epochs, seed=seed + trial.number,
                                on_epoch=on_rung_epoch).final_acc
                scores.append(RungScore(rung, score, time.perf_counter() - start))
                with_retry(lambda: record_rungs(trial, scores), "recording a rung")
                with_retry(lambda: trial.report(score, step), "reporting a rung")
                if with_retry(trial.should_prune, "asking the pruner"):
                    record_outcome(trial, Outcome.SCREENED)
                    progress.show(f"{where} screened out at rung {step + 1}/{len(climb)} ({rung}): "
                                  f"val {score:.2f}%, not promoted", final=True)
                    raise optuna.TrialPruned(f"val {score:.2f}% at rung {step + 1}")
                with_retry(lambda: record_fidelity(trial, climb[step + 1]), "recording the fidelity")
            result = trainer(spec, data, epochs=epochs, seed=seed + trial.number, on_epoch=on_epoch)
        except FloatingPointError as exc:  # a diverged schedule is a bad candidate, not a broken study
            record_outcome(trial, Outcome.DIVERGED)
            progress.show(f"{where} {exc}", final=True)
            raise optuna.TrialPruned(str(exc)) from None
        with_retry(lambda: record_outcome(trial, Outcome.COMPLETE), "recording the outcome")
        return result.final_acc

    return objective


def _quietly(call: Callable[[], None]) -> None:
    """A best-effort storage write while something else already went wrong."""
    try:
        call()
    except Exception:
        pass


def budget_screen(space: Space, budget: int) -> Callable[[dict], bool | None]:
    """For the sampler: does this parameter set fit the budget? (None: cannot tell)."""
    def fits(params: dict) -> bool | None:
        spec = space.spec_from_params(params)
        return None if spec is None else count_params(build(spec)) < budget
    return fits


# ------------------------------------------------------------------ reports of a study


def summary(study: optuna.Study, top: int = 10) -> str:
    records = read_trials(study)
    counts = {k: sum(r.outcome == k for r in records) for k in Outcome}
    lines = [f"study {study.study_name}: {len(records)} trials: "
             + ", ".join(f"{n} {k.value}" for k, n in counts.items() if n or k != Outcome.INTERRUPTED)]
    if trained := trained_per_fidelity(records):
        lines.append("trained at each fidelity (epochs x images): "
                     + ", ".join(f"{f.epochs}x{f.train_images:,}: {n}" for f, n in trained.items()))
    complete = sorted((r for r in records if r.outcome == Outcome.COMPLETE), key=lambda r: -r.value)[:top]
    if not complete:
        return "\n".join(lines + ["no trial completed yet"])
    lines.append(f"{'trial':>5} {'params':>7} {'MACs':>10} {'val acc':>8} {'epochs':>6}  code")
    for r in complete:
        lines.append(f"{r.number:>5} {r.params:>7,} {r.macs:>10,} {r.value:>7.2f}% {len(r.curve):>6}  {r.code}")
    return "\n".join(lines)


def rejection_report(study: optuna.Study, first: int = 20) -> str:
    records = [r for r in read_trials(study) if r.outcome != Outcome.RUNNING]
    rejected = [r.outcome == Outcome.REJECTED for r in records]
    text = f"rejected before training: {sum(rejected)} of {len(records)} candidates ({_percent(rejected)})"
    if len(records) > first:
        text += f"; after the first {first}: {_percent(rejected[first:])}"
    return text


def _percent(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f} %" if flags else "-"


def check_settings(study_name: str, stored: dict, settings: StudySettings) -> None:
    """Refuse to continue a study with settings that would make its trials incomparable."""
    for key, value in vars(settings).items():
        if key in StudySettings.CHANGEABLE or value is None or key not in stored or stored[key] == value:
            continue
        if key == "rungs":
            shown = lambda rungs: " ".join(f"{e}x{n}" for e, n in rungs) or "none"  # noqa: E731
            raise UsageError(f"study {study_name!r} was run with --rungs {shown(stored[key])}, not {shown(value)}: "
                             "pick another --study, or continue it with the same rungs")
        raise UsageError(f"study {study_name!r} was run with {key} {stored[key]}, not {value}: "
                         "pick another --study, or continue it with the same settings")


# ------------------------------------------------------------------ workers


@dataclass(frozen=True)
class Job:
    """What a worker process needs (picklable): it opens the storage and loads the data itself."""

    space: str
    budget: int
    study: str
    storage: str
    epochs: int
    seed: int
    subset: int | None
    data_dir: str
    device: str
    trials: int | None
    timeout: float | None
    quiet: bool
    out: str
    rungs: tuple[tuple[int, int], ...] = ()  # the cheap rungs (epochs, images), cheapest first
    eta: float = ETA
    index: int = 0
    workers: int = 1
    threads: int | None = None
    finalists: int = 0  # the finalists' phase (finalist_work): how many top trials, with how many new seeds,
    finalist_seeds: int = 0
    finalist_share: tuple[tuple[int, int], ...] = ()  # and this worker's (trial, seed) trainings


def sampler_seed(seed: int, trials_so_far: int, index: int) -> int:
    """Each worker's sampler seed: different per worker process, machine and resume, so that workers
    joining one study never propose the same candidates (the trials' training stays seeded by
    --seed + trial number)."""
    words = [seed, trials_so_far, index, zlib.crc32(HOST.encode()), os.getpid()]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signals(first: Callable[[int], None]) -> None:
    """SIGINT and SIGTERM: `first(signum)` the first time; a second one exits at once."""
    seen: list[int] = []

    def handler(signum: int, frame) -> None:
        if seen:
            os._exit(128 + seen[0])
        seen.append(signum)
        first(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _raise_interrupted(signum: int) -> None:
    raise Interrupted(signum)


def worker_device(job: Job) -> torch.device:
    """A worker process's device, with its share of the CPU threads."""
    return resolve_device(job.device, job.threads)


def work(job: Job, data: Splits | None = None) -> int:
    """One worker: train trials of the study until its share is done. Returns its exit status."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is counted and reported by us
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
    space = load_space(job.space)
    if data is None:
        data = load_search_data(Path(job.data_dir), worker_device(job), job.subset)
    storage = open_storage(job.storage)
    study = with_retry(lambda: optuna.load_study(study_name=job.study, storage=storage), "opening the study")
    study.sampler = BudgetAwareTPESampler(budget_screen(space, job.budget),
                                          seed=sampler_seed(job.seed, len(study.trials), job.index),
                                          multivariate=True, group=True, n_startup_trials=10, constant_liar=True)
    cheap_rungs = tuple(Fidelity(*r) for r in job.rungs)
    study.pruner = RungPruner(len(cheap_rungs), job.eta)
    label = f"w{job.index + 1}/{job.workers} " if job.workers > 1 else ""
    progress = Progress(job.quiet, job.trials, job.timeout, job.epochs, label)
    if study.best_trials:
        progress.best = f"{study.best_value:.2f}% (#{study.best_trial.number})"
    in_flight: set[int] = set()
    objective = make_objective(space, data, job.budget, job.epochs, job.seed, progress, in_flight=in_flight,
                               cheap_rungs=cheap_rungs)
    out = Path(job.out)

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        record = read_trial(frozen)
        progress.trial_done(record.number, record.outcome == Outcome.REJECTED)
        if record.outcome == Outcome.COMPLETE:
            best = write_best(study, out)  # the storage's best, read and written in one locked step
            if best is not None:
                progress.best = f"{best['val_acc']:.2f}% (#{best['trial']})"
                if best["trial"] == record.number:
                    progress.show(f"trial {record.number} is the new best, wrote {out / 'best.json'}", final=True)
        heal(study, in_flight)  # before the next trial: a dead worker's trial is failed and queued again

    start = time.perf_counter()
    heal(study, in_flight)
    while True:
        left = None if job.trials is None else job.trials - progress.done
        timeout = None if job.timeout is None else job.timeout - (time.perf_counter() - start)
        if (left is not None and left <= 0) or (timeout is not None and timeout <= 0):
            return 0
        try:
            study.optimize(objective, n_trials=left, timeout=timeout, callbacks=[after_trial],
                           catch=(RuntimeError,), gc_after_trial=False)
            return 0
        except Interrupted as exc:
            return 128 + exc.signum
        except StorageError as exc:
            print(f"nas search: error: {label}{exc}; stopping this worker", file=sys.stderr)
            return 3
        except TRANSIENT:  # the storage failed between trials (Optuna's ask or tell): wait for it to return
            if progress.storage_error is not None:  # a trial already waited as long as a worker waits
                print(f"nas search: error: {label}{progress.storage_error}; stopping this worker", file=sys.stderr)
                return 3
            try:
                with_retry(lambda: study.get_trials(deepcopy=False), "waiting for the storage")
            except StorageError as exc:
                print(f"nas search: error: {label}{exc}; stopping this worker", file=sys.stderr)
                return 3
            heal(study, in_flight)  # the trial the outage cut off: failed (interrupted) and queued again


def finalist_work(job: Job, data: Splits | None = None) -> None:
    """The finalists' trainings still not stored: this worker's share (`finalist_share`) when several
    workers split them, else all of them. `data`: the search split, if this process holds it already."""
    if data is None:
        data = load_search_data(Path(job.data_dir), worker_device(job), job.subset)
    study = with_retry(lambda: optuna.load_study(study_name=job.study, storage=open_storage(job.storage)),
                       "opening the study")
    split = job.workers > 1
    reevaluate(study, data, epochs=job.epochs, base_seed=job.seed, count=job.finalists, seeds=job.finalist_seeds,
               quiet=job.quiet, only=set(job.finalist_share) if split else None,
               label=f"w{job.index + 1}/{job.workers} " if split else "")


def _finalist_process(job: Job) -> int:
    """A finalists' worker process: its exit status, as `work`'s (3: the storage is gone)."""
    try:
        finalist_work(job)
    except StorageError as exc:
        print(f"nas search: error: w{job.index + 1}/{job.workers} {exc}; stopping this worker", file=sys.stderr)
        return 3
    return 0


def _process_main(target: Callable[[Job], int], job: Job) -> None:
    """A worker process: in its own process group (the parent forwards signals exactly once)."""
    os.setpgid(0, 0)
    _on_signals(_raise_interrupted)
    try:
        code = target(job)
    except Interrupted as exc:
        code = 128 + exc.signum
    sys.exit(code)


def _run_workers(job: Job, jobs: int) -> int:
    """N worker processes sharing the study's trials; returns 0, or the first signal's 128 + signum, or 3."""
    shares = [None] * jobs if job.trials is None else [job.trials // jobs + (k < job.trials % jobs) for k in range(jobs)]
    threads = max(1, usable_cores() // jobs)
    return _run_processes(work, [replace(job, index=k, workers=jobs, trials=shares[k], threads=threads)
                                 for k in range(jobs) if shares[k] != 0])


def _run_processes(target: Callable[[Job], int], jobs: list[Job]) -> int:
    """One process per job running `target(job)`; returns 0, or the first signal's 128 + signum, or 3 (storage
    lost), or 1."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: own threads, own CUDA context
    procs = [ctx.Process(target=_process_main, name=f"nas-search-w{j.index + 1}", args=(target, j)) for j in jobs]
    signalled: list[int] = []

    def forward(signum: int) -> None:
        signalled.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signum)

    _on_signals(forward)
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if signalled:
        return 128 + signalled[0]
    return 3 if any(p.exitcode == 3 for p in procs) else 1 if any(p.exitcode for p in procs) else 0


# ------------------------------------------------------------------ the command


def run(args: argparse.Namespace) -> int:
    trials = args.trials if args.trials is not None or args.timeout is not None else 50
    if args.budget > MAX_BUDGET:
        raise UsageError(f"--budget {args.budget} is out of range (at most {MAX_BUDGET:,})")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed {args.seed} is out of range (0 to {MAX_SEED})")
    space = load_space(args.space)
    smallest = min(count_params(build(spec)) for spec in space.lowest_specs())
    if args.budget <= smallest:
        raise UsageError(f"--budget {args.budget:,} is below the smallest model space {space.name} can build "
                         f"({smallest:,} parameters)")
    study_name = check_study_name(args.study or f"{space.name}-b{args.budget}")
    root = studies_dir(args.studies_dir)
    device = resolve_device(args.device)
    data_dir = resolve_data_dir(args.data_dir)
    check_data(data_dir, args.download)  # bad or missing data: one line now, not from every worker
    train_images, val_images = search_sizes(args.subset)
    if trials is not None and args.seed + trials > MAX_SEED:  # before open_storage creates a new study's database
        raise UsageError(f"--seed {args.seed} plus {trials:,} trials passes {MAX_SEED} "
                         "(trial seeds are --seed + trial number): use a smaller --seed")
    if not args.eta > 1:
        raise UsageError(f"--eta {args.eta:g} must be > 1 (the best 1/ETA of a rung are promoted)")
    if args.finalist_seeds > MAX_SEEDS:
        raise UsageError(f"--finalist-seeds {args.finalist_seeds} is more than {MAX_SEEDS}")
    full = Fidelity(args.epochs, train_images)
    asked = None if args.rungs is None else [] if args.rungs == ["none"] else [parse_rung(t) for t in args.rungs]
    cheap = ladder(full, asked)[:-1]  # checked before any storage is touched
    starts = warm_starts(space, args.budget, args.warm_start or [], references=not args.no_warm_start)
    url = args.storage or default_storage(root, study_name, args.jobs)
    out = output_dir(root, study_name, url)
    _check_writable(out)
    storage = open_storage(url, root)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        existing = None
    stored = read_settings(existing) if existing is not None else {}
    if existing is not None and "rungs" not in stored and existing.get_trials(deepcopy=False):
        stored["rungs"] = []  # a study made before rungs: every trial at full fidelity
    if asked is None and "rungs" in stored:  # continuing without --rungs: the study's own ladder
        cheap = tuple(Fidelity(*r) for r in stored["rungs"])
    settings = StudySettings(budget=args.budget, space=space.name, space_file=space.path, epochs=args.epochs,
                             train_images=train_images, rungs=[[r.epochs, r.train_images] for r in cheap],
                             finalists=args.finalists, finalist_seeds=args.finalist_seeds)
    check_settings(study_name, stored, settings)
    study = create_or_load(study_name, storage, direction="maximize")  # the schema and the study: once, here
    n_before = len(study.trials)
    if trials is not None and args.seed + n_before + trials > MAX_SEED:
        raise UsageError(f"--seed {args.seed} plus the study's {n_before + trials:,} trials passes {MAX_SEED} "
                         "(trial seeds are --seed + trial number): use a smaller --seed")
    write_settings(study, settings)
    started = enqueue(study, starts)
    if not args.quiet:
        print(f"{'continuing' if n_before else 'new'} study {study_name!r}"
              + (f" ({n_before} trials so far)" if n_before else "") + f" in {redact(url)}\n"
              f"budget < {args.budget:,} parameters, space {space.name} ({space.path}), outputs in {out}\n"
              f"device {describe(device)}\n"
              f"{train_images:,} training / {val_images:,} validation images, {args.epochs} epochs per full training, "
              f"{'unlimited' if trials is None else f'{trials:,}'} trials"
              + (f" or {format_duration(args.timeout)}" if args.timeout else "")
              + f", {args.jobs} worker process(es)\n"
              + (f"rungs: {' -> '.join(f'{r.epochs}x{r.train_images:,}' for r in (*cheap, full))} (epochs x images; "
                 f"the best 1/{args.eta:g} at each cheap rung go on)" if cheap else
                 "rungs: none (every candidate at full fidelity, median stopping)")
              + (f"; then the best {args.finalists} again with {args.finalist_seeds} new seed(s) each"
                 if args.finalists else "")
              + (f"\nwarm start: {'; '.join(started)}" if started else ""), file=sys.stderr)

    job = Job(space=space.path, budget=args.budget, study=study_name, storage=url, epochs=args.epochs,
              seed=args.seed, subset=args.subset, data_dir=str(data_dir), device=device.type, trials=trials,
              timeout=args.timeout, quiet=args.quiet, out=str(out),
              rungs=tuple((r.epochs, r.train_images) for r in cheap), eta=args.eta)
    start = time.perf_counter()
    data = None
    if trials == 0:  # --trials 0: straight to the finalists and the retrain a stopped run did not finish
        code = 0
    elif args.jobs == 1:
        _on_signals(_raise_interrupted)
        try:
            data = load_search_data(data_dir, device, args.subset)
            code = work(job, data)
        except Interrupted as exc:
            code = 128 + exc.signum
    else:
        code = _run_workers(job, args.jobs)

    study = with_retry(lambda: optuna.load_study(study_name=study_name, storage=open_storage(url)), "reading the study")
    if code == 0 and args.finalists:
        code = _reevaluate_finalists(study, replace(job, finalists=args.finalists, finalist_seeds=args.finalist_seeds),
                                     args.jobs, data)

    # the end, however the run ended: what the storage holds now
    print(summary(study))
    if args.finalists:
        print(table(study, args.finalists))
    print(rejection_report(study))
    print(f"this run: {len(study.trials) - n_before} trials in {format_duration(time.perf_counter() - start)} "
          f"on {describe(device)}, {args.jobs} worker process(es)")
    if write_best(study, out) is not None:
        print(f"best architecture: {out / 'best.json'}")
    if not args.no_report:
        print(f"report: {write_report(study, out)}")
    if args.retrain and code == 0:
        _on_signals(_raise_interrupted)  # the workers' handler forwards to processes no longer there
        try:
            code = _retrain_winner(args, out)
        except Interrupted as exc:
            print(f"nas search: interrupted by {exc}: the study is unchanged, the winner's retrain unfinished; "
                  "run the same command with --trials 0 to finish it", file=sys.stderr)
            return 128 + exc.signum
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        name = signal.Signals(code - 128).name
        print(f"nas search: interrupted by {name}: the running trial(s) stored as failed (interrupted); "
              "summary and report written; run the same command to continue", file=sys.stderr)
    return code


def _reevaluate_finalists(study: optuna.Study, job: Job, jobs: int, data: Splits | None) -> int:
    """The finalists' trainings not stored yet: split between up to `jobs` worker processes (on a CPU two
    one-thread trainings get through more than one two-thread training), or in this process."""
    todo = [(r.number, seed) for r, seed in pending(study, base_seed=job.seed, count=job.finalists,
                                                    seeds=job.finalist_seeds)]
    workers = min(jobs, len(todo))
    if workers > 1:  # worker k takes every workers-th training from the k-th
        threads = max(1, usable_cores() // workers)
        return _run_processes(_finalist_process, [replace(job, index=k, workers=workers, threads=threads,
                                                          finalist_share=tuple(todo[k::workers]))
                                                  for k in range(workers)])
    if not todo:
        return 0
    _on_signals(_raise_interrupted)
    try:
        finalist_work(job, data)  # data None: the search's workers had their own copies
    except Interrupted as exc:
        return 128 + exc.signum
    return 0


def _retrain_winner(args: argparse.Namespace, out: Path) -> int:
    """`nas retrain` of the study's best.json into `<outputs>/trial<N>_retrain/`: the test set is read only now."""
    best = out / "best.json"
    if not best.is_file():
        print("nas search: no trial completed: nothing to retrain", file=sys.stderr)
        return 1
    target = out / f"trial{json.loads(best.read_text())['trial']}_retrain"
    if (target / METRICS_FILE).is_file():  # this winner was retrained by an earlier run: keep its results
        print(f"the winner was retrained before: {target / METRICS_FILE}")
        return 0
    # checkpoints without metrics: a retrain of ours that was stopped; its seeds are trained again from the first
    unfinished = target.is_dir() and any(target.iterdir())
    print(f"retraining the winner, {args.retrain} seed(s) x {args.epochs} epochs, into {target}"
          + (" (an earlier retrain there did not finish: started again)" if unfinished else ""), flush=True)
    return retrain.run(argparse.Namespace(
        spec=str(best), epochs=args.epochs, seeds=args.retrain, subset=args.subset, out=str(target),
        budget=args.budget, overwrite=unfinished, quiet=args.quiet, device=args.device, data_dir=args.data_dir,
        download=False))


def _check_writable(out: Path) -> None:
    """Refuse, before any training, an output folder that cannot be written."""
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the study's outputs into {out}: {parent} is not a writable directory")


if __name__ == "__main__":
    run_command("search")
