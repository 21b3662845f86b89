"""Where studies live and how they are stored: the studies directory, storage URLs, opening and
creating a study safely however many workers start at once, and retrying a storage that hiccups.

One process: SQLite (`<studies dir>/<study>.db`). Several worker processes on one machine
(`--jobs N`): Optuna's journal file (`<studies dir>/<study>.journal`), which takes appends from many
processes under a file lock, where SQLite serialises every writer on one database lock. Several
machines: a PostgreSQL server (`--storage postgresql://...`, the `postgres` extra), with small
connection pools and Optuna's heartbeat.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ..errors import StorageError, UsageError, first_line
from .heartbeat import RetryStaleTrial

DEFAULT_STUDIES_DIR = "studies"
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RETRY_SECONDS = 120.0  # how long a worker waits for a storage to come back before it stops
OPEN_SECONDS = 5.0  # how long opening a storage is tried (workers creating one schema at once race)
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


def redact(url: str) -> str:
    """A storage URL fit to print: any password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def output_dir(root: Path, study_name: str, url: str | None) -> Path:
    """Where a study's best.json and report.html go: `<root>/<study>` for the default storage, else a
    folder named by the study and its storage, so that same-named studies in two storages never collide."""
    if url is None or is_default_storage(url, root, study_name):  # None: the default storage
        return root / study_name
    return root / f"{study_name}-{hashlib.sha256(redact(url).encode()).hexdigest()[:8]}"


def _driver_url(url: str) -> str:
    """SQLAlchemy 2 reads `postgresql://` as psycopg2; this project ships psycopg 3 (the postgres extra)."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def _is_journal(url: str) -> bool:
    return "://" not in url and (url.endswith(".journal") or url.endswith(".log"))


def open_storage(url: str, root: Path | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (an RDB URL or a journal file path), or UsageError saying why not.

    Several workers may open a new one at the same moment: creating the schema races between them
    (a duplicate-table error for all but one), so a failed creation is tried again for a few seconds;
    a bad URL fails the same way every time and is refused at once.
    """
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:" or _is_journal(url):
        path = Path(url.removeprefix("sqlite:///"))
        if root is not None and path.parent == root and not root.exists():
            root.mkdir(parents=True, exist_ok=True)
        if not path.parent.is_dir():
            raise UsageError(f"bad storage URL {redact(url)}: directory {path.parent} does not exist")

    def refused(exc: BaseException) -> UsageError:
        reason = first_line(exc).replace(url, redact(url))
        password = _password(url)
        if password and len(password) >= 4:  # a short one would mask letters all over the message
            reason = reason.replace(password, "***")
        return UsageError(f"bad storage URL {redact(url)}: {reason}")

    return with_retry(lambda: _connect(url), "opening the storage", seconds=OPEN_SECONDS,
                      transient=(Exception,),  # sqlalchemy raises many kinds
                      permanent=(ValueError, ImportError, sqlalchemy.exc.ArgumentError), fail=refused)


def _connect(url: str) -> optuna.storages.BaseStorage:
    if _is_journal(url):
        return JournalStorage(JournalFileBackend(url))
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


def _password(url: str) -> str | None:
    match = re.search(r"://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


def load_study(study_name: str, storage_url: str | None, root: Path) -> optuna.Study:
    """An existing study, or UsageError if it is not there (a missing database file is not created)."""
    check_study_name(study_name)
    url = storage_url or default_storage(root, study_name)
    local = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url if _is_journal(url) else None
    if local is not None and url != "sqlite:///:memory:" and not Path(local).is_file():
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


def with_retry(call: Callable[[], T], what: str, seconds: float = RETRY_SECONDS, *,
               transient: tuple[type[BaseException], ...] = TRANSIENT,
               permanent: tuple[type[BaseException], ...] = (),
               fail: Callable[[BaseException], Exception] | None = None) -> T:
    """The one retry loop: run `call`, and on a `transient` error (but not a `permanent` one) wait with
    growing, jittered delays and try again for up to `seconds`; then raise `fail(error)`, by default a
    StorageError saying what did not answer. A `permanent` error is raised as `fail(error)` at once.
    The delays double from 0.5 s up to 10 s."""
    deadline, delay = time.monotonic() + seconds, 0.5
    while True:
        try:
            return call()
        except permanent as exc:
            raise (fail(exc) if fail else exc) from None
        except transient as exc:
            if time.monotonic() + delay > deadline:
                if fail is not None:
                    raise fail(exc) from None
                raise StorageError(f"the storage did not answer for {seconds:.0f} s ({what}): {first_line(exc)}") from None
            log.debug("%s: %s; trying again in %.1f s", what, first_line(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
