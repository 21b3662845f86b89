"""The search's worker processes: what a worker needs (Job), the loop that trains trials of a shared
study until its share is done, the finalists' trainings split between workers, and the processes
that run them (each in its own process group; the parent forwards a signal exactly once).

`--jobs N` runs N worker processes on one study; the same command with the same `--storage` on
another machine joins it.

A worker stops on its own, with one line on stderr and an exit status (nas/cli.py), when its storage
does not answer for longer than it waits (3) or its disk is full (4). Optuna does not survive a trial
whose result cannot be stored (optuna#5280: `_run_trial` then raises UnboundLocalError or AssertionError,
the storage's error behind it): `stopped` reads the chain for what really happened.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import torch

from ..cost import Budgets
from ..data import DataSource, Splits, data_info, load_search_data
from ..device import resolve_device, usable_cores
from ..errors import DataError, SpaceError, SpecError, cause_line, disk_full
from ..fidelity import REDUCTION_FACTOR, Fidelity
from ..progress import KEEP
from ..space import load_space
from ..spec import Spec
from ..store.heartbeat import HOST, heal
from ..store.record import Outcome, TrialRecord, read_trial
from ..store.storage import local_file, open_storage, retry_seconds, storage_failed, with_retry
from ..store.winner import select_winner, write_best
from .finalists import pending, reevaluate
from .neighbours import queue_neighbours
from .objective import BEST, DRAWN, Progress, budget_screen, make_objective
from .pruner import RungPruner, median_first_epoch, queue_late_promotions
from .sampler import make_sampler
from .signals import Interrupted, interruptible, on_signals
from .warm_start import queue_widened_best


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
    rung_unit: str = "images"  # what the cheap rungs count: images or optimiser steps (nas.fidelity.rung_images)
    eta: float = REDUCTION_FACTOR  # --eta: the best 1/eta at each cheap rung go on
    hold: int = 0  # the scores a cheap rung waits for, then it promotes late; 0: no wait (pruner.hold_scores)
    sampler: str = "tpe"  # --sampler (nas.search.sampler.make_sampler)
    startup: int | None = None  # --startup-trials: TPE's random draws first; None: the sampler's default
    index: int = 0
    workers: int = 1
    threads: int | None = None
    finalists: int = 0  # the finalists' phase (finalist_work, and the search's ETA): how many top trials, with
    finalist_seeds: int = 0  # how many new seeds,
    finalist_share: tuple[tuple[int, int], ...] = ()  # and this worker's (trial, seed) trainings
    source: DataSource | None = None  # the data, described (each process loads it); None: MNIST in data_dir
    max_macs: int | None = None  # the device budgets (nas.cost.Budgets); None: none
    max_ram: int | None = None
    max_flash: int | None = None
    widen_best: bool = False  # --widen-best: each new best with room in the budgets is followed by its widest copy
    neighbours: int = 0  # --neighbours: each new best is followed by this many of its neighbours (one step away)
    widths: str = DRAWN  # --widths: candidates trained as drawn, or filled to the budgets (objective.make_objective)

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.budget, self.max_macs, self.max_ram, self.max_flash)


def finalist_trainings(job: Job) -> int:
    """How many of the finalists' full trainings worker `job.index` is expected to run after the search
    (reevaluate_finalists gives worker k every workers-th training from the k-th)."""
    return len(range(job.index, job.finalists * job.finalist_seeds, job.workers))


def sampler_seed(seed: int, trials_so_far: int, index: int) -> int:
    """Each worker's sampler seed: different per worker process, machine and resume, so that workers
    joining one study never propose the same candidates (the trials' training stays seeded by
    --seed + trial number)."""
    words = [seed, trials_so_far, index, zlib.crc32(HOST.encode()), os.getpid()]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def worker_device(job: Job) -> torch.device:
    """A worker process's device, with its share of the CPU threads."""
    return resolve_device(job.device, job.threads)


def work(job: Job, data: Splits | None = None) -> int:
    """One worker: train trials of the study until its share is done. Returns its exit status: 0, 128 +
    signal, 3 (the storage is gone) or 4 (the disk is full), each but 0 said in one line on stderr."""
    label = f"w{job.index + 1}/{job.workers} " if job.workers > 1 else ""
    try:
        return _work(job, data, label)
    except Exception as exc:
        code = stopped(job, label, exc)
        if code is None:
            raise
        return code


def _work(job: Job, data: Splits | None, label: str) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is counted and reported by us
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
    space = load_space(job.space)
    info = data_info(job.source or Path(job.data_dir))
    space = space.for_data(info.shape, flips=info.mirrorable)  # specs for the data's images and classes
    if data is None:
        data = load_search_data(job.source or Path(job.data_dir), worker_device(job), job.subset)
    storage = open_storage(job.storage)
    study = with_retry(lambda: optuna.load_study(study_name=job.study, storage=storage), "opening the study")
    study.sampler = make_sampler(job.sampler, budget_screen(space, job.budgets, job.widths),
                                 sampler_seed(job.seed, len(study.trials), job.index), job.startup)
    cheap_rungs = tuple(Fidelity(*r) for r in job.rungs)
    study.pruner = RungPruner(len(cheap_rungs), job.eta, job.hold,
                              median_warmup=median_first_epoch(job.epochs, behind_rungs=bool(cheap_rungs)))
    promote = ((lambda step: queue_late_promotions(study, step, job.eta, storage, job.storage, job.hold))
               if job.hold and cheap_rungs else None)
    progress = Progress(job.quiet, job.trials, job.timeout, job.epochs, label, finalist_trainings(job))
    progress.best = study_best(study)
    in_flight: set[int] = set()
    objective = make_objective(space, data, job.budgets, job.epochs, job.seed, progress, in_flight=in_flight,
                               cheap_rungs=cheap_rungs, rung_unit=job.rung_unit, promote=promote,
                               widths=job.widths)

    def follow_best(record: TrialRecord, frozen: optuna.trial.FrozenTrial) -> list[str]:
        """What a new best is followed by (--widen-best, --neighbours): the names of the designs queued."""
        wide = (queue_widened_best(study, Spec.from_dict(record.spec), record.number, space, job.budgets, storage,
                                   job.storage) if job.widen_best else None)
        near = queue_neighbours(study, frozen, space, job.budgets, job.neighbours, job.seed, storage,
                                job.storage, job.widths) if job.neighbours else []
        return ([wide] if wide else []) + near

    after_trial = trial_ended(progress, Path(job.out), in_flight,
                              follow_best if job.widen_best or job.neighbours else None)
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
        except Exception as exc:
            # the storage failed between trials (Optuna's ask, or its tell of a trial's result: then Optuna
            # raises UnboundLocalError or AssertionError, the storage's error behind it): wait for it to return
            if not storage_failed(exc) or disk_full(exc) is not None:
                raise  # a bug keeps its traceback; a full disk does not empty itself: `work` says so and stops
            if progress.storage_error is not None:  # a trial already waited as long as a worker waits
                raise
            with_retry(lambda: study.get_trials(deepcopy=False), "waiting for the storage")
            heal(study, in_flight)  # the trial the outage cut off: failed (interrupted) and queued again


def best_line(val_acc: float, trial: int) -> str:
    """The study's best as the progress line shows it."""
    return f"{val_acc:.2f}% (#{trial})"


def study_best(study: optuna.Study) -> str:
    """The trial best.json holds now, as the progress line shows it ("-": none yet)."""
    winner = select_winner(study)
    return "-" if winner is None else best_line(winner[0].value, winner[0].number)


def trial_ended(progress: Progress, out: Path, in_flight: set[int],
                follow_best: Callable[[TrialRecord, optuna.trial.FrozenTrial], list[str]] | None = None
                ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """The callback after each of this worker's trials: count it; after a complete one, write best.json
    from the storage's best (and, when it is this trial, queue what follows a new best: `follow_best`,
    --widen-best and --neighbours);
    after any other, read the study's best again, since another worker's trial may have raised it
    meanwhile (a worker whose own trials are screened out for a while would show a stale best); then heal
    what a dead worker left."""

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        record = read_trial(frozen)
        progress.trial_done(record.number, record.outcome == Outcome.REJECTED)
        if record.outcome == Outcome.COMPLETE:
            best = write_best(study, out)  # the storage's best, read and written in one locked step
            if best is not None:
                progress.best = best_line(best["val_acc"], best["trial"])
                if best["trial"] == record.number:
                    queued = follow_best(record, frozen) if follow_best else []
                    progress.show([(KEEP, f" trial {record.number} is the new best"),
                                   (BEST, f", wrote {out / 'best.json'}"),
                                   (KEEP, f"; queued {'; '.join(queued)}" if queued else "")], final=True)
        else:
            progress.best = study_best(study)
        heal(study, in_flight)  # before the next trial: a dead worker's trial is failed and queued again

    return after_trial


def stopped(job: Job, label: str, exc: BaseException) -> int | None:
    """A worker stopped by its storage or its disk says why in one line and returns its exit status: 4 the
    disk is full, 3 the storage did not answer for as long as a worker waits. None: anything else (a bug)."""
    full = disk_full(exc, local_file(job.storage))
    if full is not None:
        print(f"nas search: error: {label}{full}; stopping: free some space, then rerun the same command "
              "(the cut trial is queued again)", file=sys.stderr)
        return 4
    if isinstance(exc, (DataError, SpaceError, SpecError)) or not storage_failed(exc):
        return None  # (bad data read through an OSError is not a storage that is gone)
    path = local_file(job.storage)
    what = "the database" if path is None else f"the storage {path}"
    seconds = retry_seconds()
    waited = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    print(f"nas search: error: {label}{what} did not answer for {waited} ({cause_line(exc)}); "
          "stopping: rerun the same command when it is back", file=sys.stderr)
    return 3


def finalist_work(job: Job, data: Splits | None = None) -> None:
    """The finalists' trainings still not stored: this worker's share (`finalist_share`) when several
    workers split them, else all of them. `data`: the search split, if this process holds it already."""
    if data is None:
        data = load_search_data(job.source or Path(job.data_dir), worker_device(job), job.subset)
    study = with_retry(lambda: optuna.load_study(study_name=job.study, storage=open_storage(job.storage)),
                       "opening the study")
    split = job.workers > 1
    reevaluate(study, data, epochs=job.epochs, base_seed=job.seed, count=job.finalists, seeds=job.finalist_seeds,
               quiet=job.quiet, only=set(job.finalist_share) if split else None,
               label=f"w{job.index + 1}/{job.workers} " if split else "")


def _finalist_process(job: Job) -> int:
    """A finalists' worker process: its exit status, as `work`'s (3: the storage is gone, 4: the disk is full)."""
    try:
        finalist_work(job)
    except Exception as exc:
        code = stopped(job, f"w{job.index + 1}/{job.workers} ", exc)
        if code is None:
            raise
        return code
    return 0


def _process_main(target: Callable[[Job], int], job: Job) -> None:
    """A worker process: in its own process group (the parent forwards signals exactly once)."""
    os.setpgid(0, 0)
    sys.exit(interruptible(lambda: target(job)))


def run_workers(job: Job, workers: int) -> int:
    """`workers` processes sharing the study's trials; returns `_run_processes`'s status."""
    shares = ([None] * workers if job.trials is None
              else [job.trials // workers + (k < job.trials % workers) for k in range(workers)])
    threads = max(1, usable_cores() // workers)
    return _run_processes(work, [replace(job, index=k, workers=workers, trials=shares[k], threads=threads)
                                 for k in range(workers) if shares[k] != 0])


def _run_processes(target: Callable[[Job], int], jobs: list[Job]) -> int:
    """One process per job running `target(job)`; returns 0, or the first signal's 128 + signum, or 4 (a disk
    full), or 3 (storage lost), or 1 (a worker crashed)."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: own threads, own CUDA context
    procs = [ctx.Process(target=_process_main, name=f"nas-search-w{j.index + 1}", args=(target, j)) for j in jobs]
    signalled: list[int] = []

    def forward(signum: int) -> None:
        signalled.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signum)

    on_signals(forward)
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if signalled:
        return 128 + signalled[0]
    for code in (4, 3):
        if any(p.exitcode == code for p in procs):
            return code
    return 1 if any(p.exitcode for p in procs) else 0


def reevaluate_finalists(study: optuna.Study, job: Job, max_workers: int, data: Splits | None) -> int:
    """The finalists' trainings not stored yet: split between up to `max_workers` processes (on a CPU two
    one-thread trainings get through more than one two-thread training), or in this process."""
    todo = [(r.number, seed) for r, seed in pending(study, base_seed=job.seed, count=job.finalists,
                                                    seeds=job.finalist_seeds)]
    workers = min(max_workers, len(todo))
    if workers > 1:  # worker k takes every workers-th training from the k-th
        threads = max(1, usable_cores() // workers)
        return _run_processes(_finalist_process, [replace(job, index=k, workers=workers, threads=threads,
                                                          finalist_share=tuple(todo[k::workers]))
                                                  for k in range(workers)])
    if not todo:
        return 0

    def here() -> int:
        finalist_work(job, data)  # data None: the search's workers had their own copies
        return 0
    return interruptible(here)
