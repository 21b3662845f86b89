"""Where studies live and how they are stored: the studies directory, storage URLs, opening and
creating a study safely however many workers start at once, and retrying a storage that hiccups.

One process: SQLite (`<studies dir>/<study>.db`). Several worker processes on one machine
(`--jobs N`): Optuna's journal file (`<studies dir>/<study>.journal`), which takes appends from many
processes under a file lock, where SQLite serialises every writer on one database lock. Several
machines: a PostgreSQL server (`--storage postgresql://...`, the `postgres` extra), with small
connection pools and Optuna's heartbeat.

A journal is never written after a torn line (nas.store.journal).

How long a storage that does not answer is waited for: $NAS_STORAGE_RETRY_SECONDS (default 120).
Passwords are never printed (nas.store.credentials).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalStorage

from ..errors import StorageError, UsageError, cause_line, chain, disk_full, first_line
from .credentials import raw_at_in_password, redact, scrub
from .heartbeat import RetryStaleTrial
from .journal import JournalFile

DEFAULT_STUDIES_DIR = "studies"
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RETRY_ENV = "NAS_STORAGE_RETRY_SECONDS"
RETRY_SECONDS = 120.0  # the default of $NAS_STORAGE_RETRY_SECONDS; the window in force is retry_seconds()
OPEN_SECONDS = 5.0  # how long opening a storage is tried (workers creating one schema at once race), at most
HEARTBEAT_INTERVAL, GRACE_PERIOD = 20, 120  # Optuna's RDB heartbeat (seconds)
T = TypeVar("T")
log = logging.getLogger(__name__)


class _RDBStorage(RDBStorage):
    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat thread dies (with a traceback) on the first failed beat; a storage that
        hiccups only misses a beat here, and the next one tries again."""
        try:
            super().record_heartbeat(trial_id)
        except Exception:
            log.debug("missed a heartbeat of trial id %s", trial_id, exc_info=True)


def studies_dir(flag: str | None = None) -> Path:
    """--studies-dir, else $NAS_STUDIES_DIR, else ./studies."""
    return Path(flag or os.environ.get("NAS_STUDIES_DIR") or DEFAULT_STUDIES_DIR)


def check_study_name(name: str) -> str:
    """A study name is a file name inside the studies directory: it may not reach outside it."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"bad study name {name!r}: use letters, digits, '.', '_' and '-' (at most 128), "
                         "starting with a letter or digit")
    return name


def default_storage(root: Path, study_name: str, jobs: int = 1) -> str:
    """The local storage of a study: the file that already holds it, else SQLite for one process and
    a journal file for several."""
    sqlite, journal = root / f"{study_name}.db", root / f"{study_name}.journal"
    if journal.is_file() or (jobs > 1 and not sqlite.is_file()):
        return str(journal)
    return f"sqlite:///{sqlite}"


def is_default_storage(url: str, root: Path, study_name: str) -> bool:
    return url in (f"sqlite:///{root / f'{study_name}.db'}", str(root / f"{study_name}.journal"))


def retry_seconds() -> float:
    """How long a storage that does not answer is waited for: $NAS_STORAGE_RETRY_SECONDS, default 120 s;
    0 tries once. A bad value is a UsageError (open_storage reads it first, so a command fails at its start)."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return RETRY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"bad {RETRY_ENV}={raw!r}: give the seconds to wait for a storage that does not answer, "
                         f"a number >= 0 (default {RETRY_SECONDS:.0f})")
    return seconds


def output_dir(root: Path, study_name: str, url: str | None) -> Path:
    """Where a study's best.json and report.html go: `<root>/<study>` for the default storage, else a
    folder named by the study and its storage, so that same-named studies in two storages never collide."""
    if url is None or is_default_storage(url, root, study_name):  # None: the default storage
        return root / study_name
    return root / f"{study_name}-{hashlib.sha256(redact(url).encode()).hexdigest()[:8]}"


def _driver_url(url: str) -> str:
    """SQLAlchemy 2 reads `postgresql://` as psycopg2; this project ships psycopg 3 (the postgres extra)."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def local_file(url: str) -> str | None:
    """The file a local storage lives in (a SQLite database or a journal file), else None."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return url.removeprefix("sqlite:///")
    return url if _is_journal(url) else None


def _is_journal(url: str) -> bool:
    return "://" not in url and (url.endswith(".journal") or url.endswith(".log"))


def open_storage(url: str, root: Path | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (an RDB URL or a journal file path), or UsageError saying why not.

    Several workers may open a new one at the same moment: creating the schema races between them
    (a duplicate-table error for all but one), so a failed creation is tried again for a few seconds;
    a bad URL fails the same way every time and is refused at once. Opening is tried for OPEN_SECONDS, or
    the retry window ($NAS_STORAGE_RETRY_SECONDS) if that is shorter; a bad window is refused first.

    A journal whose last record a crash or a full disk cut is repaired here, before anything writes
    (see `JournalFile`).
    """
    window = min(OPEN_SECONDS, retry_seconds())
    local = local_file(url)  # where a full disk is, for a SQLite or journal storage
    if raw_at_in_password(url):
        raise UsageError(f"bad storage URL {redact(url)}: its password holds a raw '@', which ends a URL's "
                         "password: write it percent-encoded (@ as %40, : as %3A, / as %2F)")
    if local is not None:
        path = Path(local)
        if root is not None and path.parent == root and not root.exists():
            root.mkdir(parents=True, exist_ok=True)
        if not path.parent.is_dir():
            raise UsageError(f"bad storage URL {redact(url)}: directory {path.parent} does not exist")

    def refused(exc: BaseException) -> UsageError:
        # scrubbed before first_line cuts it: a cut could leave the start of a password that no longer matches
        reason = scrub(first_line(exc, limit=100_000), url, _driver_url(url))
        reason = reason if len(reason) <= 200 else reason[:199] + "…"
        return UsageError(f"bad storage URL {redact(url)}: {reason}")

    return with_retry(lambda: _connect(url), "opening the storage", seconds=window,
                      transient=(Exception,),  # sqlalchemy raises many kinds
                      permanent=(ValueError, ImportError, sqlalchemy.exc.ArgumentError), fail=refused, where=local)


def _connect(url: str) -> optuna.storages.BaseStorage:
    if _is_journal(url):
        return JournalStorage(JournalFile(url))
    with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 5, and says so each time
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _RDBStorage(_driver_url(url), engine_kwargs=_engine_kwargs(url),
                           heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                           heartbeat_stale_trial_callback=RetryStaleTrial())


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # wait out another writer's lock instead of failing
    # small pools (a worker uses a connection or two); pre-ping replaces connections a restart broke
    return {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 600}


@contextmanager
def exclusive(storage: optuna.storages.BaseStorage | None, url: str | None, study_name: str) -> Iterator[None]:
    """Hold, for the block, a lock that every process queueing warm starts into `study_name` in this storage
    takes, on any machine; the lock goes with its holder, should the holder die.

    - PostgreSQL: a transaction-level advisory lock (`pg_advisory_xact_lock`) on a connection of the storage's
      own engine, keyed by the study name; released when the transaction ends or its connection drops.
    - SQLite and the journal file: an exclusive `flock` on `.<file>.warm-start.lock` next to the storage
      file (the file stays; the lock goes with the process). The storage's own locks cannot be used:
      SQLite's would block this process's own writes, and the journal's is taken by every append.
    - Any other storage (in-memory, another RDB): no lock, as Optuna's enqueue_trial(skip_if_exists=True)."""
    engine = getattr(storage, "engine", None)
    dialect = engine.dialect.name if engine is not None else None
    if dialect == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"nas-budget warm start {study_name}".encode()).digest()[:8], "big",
                             signed=True)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.rollback()  # ends the transaction: the lock is released
        return
    path = (engine.url.database if dialect == "sqlite"
            else url if isinstance(storage, optuna.storages.JournalStorage) else None)
    if not path or path == ":memory:":
        yield
        return
    head, tail = os.path.split(path)
    with open(os.path.join(head, f".{tail}.warm-start.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process ends
        yield


def load_study(study_name: str, storage_url: str | None, root: Path) -> optuna.Study:
    """An existing study, or UsageError if it is not there (a missing database file is not created)."""
    check_study_name(study_name)
    url = storage_url or default_storage(root, study_name)
    local = local_file(url)
    if local is not None and not Path(local).is_file():
        raise UsageError(f"no study {study_name!r}: {local} does not exist")
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise UsageError(f"no study {study_name!r} in {redact(url)} (studies there: {names})") from None


def create_or_load(study_name: str, storage: optuna.storages.BaseStorage, **kwargs) -> optuna.Study:
    """optuna.create_study(load_if_exists=True), safe when several workers create the study at once."""
    try:
        return optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it between our check and insert
        return optuna.load_study(study_name=study_name, storage=storage)


TRANSIENT = (optuna.exceptions.StorageInternalError, OSError)  # sqlalchemy's OperationalError arrives wrapped


def storage_failed(exc: BaseException) -> bool:
    """Whether a storage error is behind `exc`: a retry loop that gave up, the storage's own error, or the
    database driver's (opening a storage whose server is down raises it unwrapped)."""
    failures = (StorageError, *TRANSIENT, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    return any(isinstance(e, failures) for e in chain(exc))


def with_retry(call: Callable[[], T], what: str, seconds: float | None = None, *,
               transient: tuple[type[BaseException], ...] = TRANSIENT,
               permanent: tuple[type[BaseException], ...] = (),
               fail: Callable[[BaseException], Exception] | None = None, where: str | None = None) -> T:
    """The one retry loop: run `call`, and on a `transient` error (but not a `permanent` one) wait with
    growing delays (0.5 s, doubling up to 10 s) and try again for up to `seconds`; then raise
    `fail(error)`, by default a StorageError saying what did not answer. A `permanent` error is raised as
    `fail(error)` at once, and so is a full disk, as DiskFull (at `where` when the error names no file):
    it does not empty itself while we wait. `seconds`: by default the retry window in force when called,
    $NAS_STORAGE_RETRY_SECONDS (120 s unless set)."""
    if seconds is None:
        seconds = retry_seconds()
    deadline, delay = time.monotonic() + seconds, 0.5
    while True:
        try:
            return call()
        except permanent as exc:
            raise (fail(exc) if fail else exc) from None
        except transient as exc:
            full = disk_full(exc, where)
            if full is not None:
                raise full from exc
            if time.monotonic() + delay > deadline:
                if fail is not None:
                    raise fail(exc) from None
                raise StorageError(f"the storage did not answer for {seconds:.0f} s ({what}): {cause_line(exc)}") from None
            log.debug("%s: %s; trying again in %.1f s", what, cause_line(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
