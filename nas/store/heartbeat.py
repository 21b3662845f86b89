"""Crashed workers heal: a running trial says where it runs and that it is alive; a trial whose
worker is gone is failed (its outcome reads `interrupted`) and its parameters are queued again, once,
by `retry_trial`: the one way a trial is queued again, with Optuna's own retry marker.

Every trial records its host, its process id and a heartbeat time (refreshed by a thread every
HEARTBEAT_SECONDS while it trains). Before each trial a worker heals the study: a RUNNING trial is
stale when its process is gone from this host (found at once, e.g. a rerun after SIGKILL), or when
its heartbeat is older than GRACE_SECONDS (a worker on another machine, or a frozen one). RDB
storages (SQLite, PostgreSQL) also run Optuna's own heartbeat (see storage.py), which fails stale
trials from other machines through the database's clock, and queues them through `RetryStaleTrial`,
i.e. `retry_trial` too: both paths leave the same marker (`record.retry_of` reads it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import optuna
from optuna.trial import TrialState

from .record import RETRY_KEPT, Worker, read_trial, record_heartbeat, record_retry, record_worker

HEARTBEAT_SECONDS = 20.0
GRACE_SECONDS = 120.0
HOST = socket.gethostname()
log = logging.getLogger(__name__)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(worker: Worker | None, now: float, own: set[int], number: int) -> bool:
    """Whether a RUNNING trial's worker is gone. `own`: the trials this process is running now."""
    if worker is None:  # started by another tool, or killed before it said where it runs: leave it
        return False
    if worker.host == HOST and worker.pid == os.getpid():
        return number not in own  # ours, but no longer in flight (a storage outage cut it off)
    if worker.host == HOST and not _process_alive(worker.pid):
        return True
    return now - worker.heartbeat > GRACE_SECONDS


def heal(study: optuna.Study, own: set[int] = frozenset()) -> list[int]:
    """Fail the study's stale RUNNING trials and queue each one's parameters again (once); returns their numbers."""
    healed, now, own = [], time.time(), set(own)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = read_trial(frozen)
        if not is_stale(record.worker, now, own, frozen.number):
            continue
        try:
            study.tell(frozen.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker healed it first: it queues the retry
        healed.append(frozen.number)
        retry_trial(study, frozen)
    return healed


def retry_trial(study: optuna.Study, failed: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's parameters again, once: a retry that fails too is not queued again.

    The new trial carries Optuna's retry marker (the `failed_trial` system attribute, as Optuna's
    RetryHeartbeatStaleTrialCallback writes it) and of the user attributes only what says what the
    trial is (record.RETRY_KEPT: a warm start stays a warm start), not what the failed run measured."""
    if read_trial(failed).retry_of is not None:
        return
    kept = {k: v for k, v in failed.user_attrs.items() if k in RETRY_KEPT}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions, user_attrs=kept,
        system_attrs=record_retry(failed.number)))


class RetryStaleTrial:
    """Optuna's heartbeat callback for RDB storages (a trial whose heartbeat went stale): `retry_trial`."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        retry_trial(study, trial)


@contextmanager
def beating(trial: optuna.Trial) -> Iterator[None]:
    """Record where `trial` runs, and refresh its heartbeat from a thread until the block ends."""
    record_worker(trial, Worker(HOST, os.getpid(), time.time()))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                record_heartbeat(trial, time.time())
            except Exception:  # a storage hiccup: the next beat tries again; the trial itself decides
                log.debug("missed a heartbeat of trial %d", trial.number, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
