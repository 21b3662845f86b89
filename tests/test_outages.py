"""Every failure is one line, with the summary, and a rerun heals: a database outage longer than the retry
window, a full disk (mid-search, at the study's creation, writing the report), and Optuna's own errors
over a storage that fails while it stores a trial's result (optuna#5280).

The full disk is real: a small tmpfs mounted for the test (root only; skipped where mounting is not
allowed), filled up while the search runs, so SQLite and the file writers meet ENOSPC as they would on a
full disk. The outage is real too: the `postgres` fixture's server stopped past a 5 s retry window
($NAS_STORAGE_RETRY_SECONDS), then started again.
"""

import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas.search.workers
from conftest import DATA_DIR, ROOT, TINY
from nas.cli import run_script
from nas.errors import DiskFull, StorageError, cause_line, disk_full
from nas.search.workers import Job, stopped
from nas.store.record import Outcome, read_trials

slow = pytest.mark.slow
RETRY = "5"  # seconds: $NAS_STORAGE_RETRY_SECONDS for the commands these tests run
# one trial at full fidelity (no cheap rungs): it records every epoch, so an outage or a full disk cuts it;
# no neighbours queued after it (the summaries below count the trials). An epoch here takes about 0.2 s:
# 30 of them keep the trial running well past the moment a test sees its first epoch and cuts it (3 could
# end before the database went down or the disk filled, and the search then finished without the failure)
SEARCH = ["--budget", "3000", "--space", TINY, "--device", "cpu", "--finalists", "0", "--rungs", "none",
          "--epochs", "30", "--subset", "1024", "--trials", "1", "--seed", "0", "-q", "--neighbours", "0"]


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`nas search SEARCH args` in its own process, with a 5 s retry window."""
    env = {k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"}
    env.update(NAS_DATA_DIR=str(DATA_DIR), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               NAS_STORAGE_RETRY_SECONDS=RETRY)
    return subprocess.Popen([sys.executable, "-m", "nas.search", *SEARCH, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def wait_for_epoch(study_name: str, storage: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until the running trial has recorded its first epoch in the storage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            if any(r.epoch_seconds for r in read_trials(study)):
                return
        except Exception:  # not created yet, or busy
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("no epoch recorded in time")


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    """The contract of an expected failure: its exit status, one line on stderr, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def check_healed(study: optuna.Study) -> None:
    """The trial the failure cut is FAIL (read: interrupted) and its retry ran to the end."""
    records = read_trials(study)
    assert [r.outcome for r in records] == [Outcome.INTERRUPTED, Outcome.COMPLETE], [r.outcome for r in records]
    assert [r.retry_of for r in records] == [None, 0]
    assert study.trials[0].state == TrialState.FAIL


# ------------------------------------------------------------------------------------------ a small disk


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 16 MiB tmpfs (a report's plotly.min.js: some 5 MiB), mounted for the test: a disk that really fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}): needs root")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the disk up to its last byte with one file; returns it (unlink it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with open(filler, "ab", buffering=0) as f:  # the last few bytes a 64 KiB write did not fit into
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


@slow
def test_a_disk_that_fills_up_mid_search_stops_it_in_one_line_and_a_rerun_heals(small_disk):
    storage = f"sqlite:///{small_disk}/studies/full.db"
    proc = start("--study", "full", cwd=small_disk)
    wait_for_epoch("full", storage, proc)
    filler = fill(small_disk)
    out, err = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess([], proc.returncode, out, err)
    line = one_line(result, 4)
    assert line == ("nas search: error: disk full at studies/full.db (database or disk is full); stopping: free "
                    "some space, then rerun the same command (the cut trial is queued again)"), line
    assert "study full: 1 trials" in out and "0 complete" in out  # the summary of what was stored
    assert "report.html: not written: disk full at studies/full/report.html" in out

    filler.unlink()
    again = run("--study", "full", cwd=small_disk)
    assert again.returncode == 0, again.stderr
    assert "study full: 2 trials: 1 complete" in again.stdout
    check_healed(optuna.load_study(study_name="full", storage=storage))
    assert (small_disk / "studies" / "full" / "report.html").is_file()


@slow
def test_a_full_disk_when_the_study_is_created_is_one_line(small_disk, cli):
    filler = fill(small_disk)
    result = cli("search", *SEARCH, "--study", "new", cwd=small_disk, env={"NAS_STORAGE_RETRY_SECONDS": RETRY})
    line = one_line(result, 4)
    assert line.startswith("nas search: error: disk full") and "database or disk is full" in line, line
    assert line.endswith("free some space, then run the same command again"), line
    filler.unlink()
    again = cli("search", *SEARCH, "--study", "new", cwd=small_disk)
    assert again.returncode == 0, again.stderr
    assert "study new: 1 trials: 1 complete" in again.stdout


@slow
def test_a_full_disk_while_the_report_is_written_is_one_line(small_disk, tmp_path, cli):
    study = optuna.create_study(study_name="r", storage=f"sqlite:///{tmp_path}/r.db", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    out = small_disk / "out"
    out.mkdir()
    fill(small_disk)
    result = cli("report", "--study", "r", "--storage", f"sqlite:///{tmp_path}/r.db", "--out", str(out),
                 cwd=tmp_path)
    line = one_line(result, 4)
    # plotly.min.js is written first (the page never points at a missing file): the file that did not fit
    assert line == (f"nas report: error: disk full at {out}/plotly.min.js (No space left on device); free some "
                    "space, then run the same command again"), line
    assert [p.name for p in out.iterdir()] == []  # no half-written file, no temporary file left


# ------------------------------------------------------------------------------------- a database outage


@slow
def test_a_database_outage_longer_than_the_retry_window_is_one_line_and_a_rerun_heals(postgres, tmp_path):
    url = postgres.new_database("long_outage")
    proc = start("--storage", url, "--study", "long", "--no-report", cwd=tmp_path)
    wait_for_epoch("long", url, proc)
    postgres.stop()
    try:
        out, err = proc.communicate(timeout=120)  # 5 s of retries, then a 5 s look for the summary
    finally:
        postgres.start()
    line = one_line(subprocess.CompletedProcess([], proc.returncode, out, err), 3)
    assert line.startswith("nas search: error: the database did not answer for 5 s (connection failed: "), line
    assert "Connection refused" in line and line.endswith("stopping: rerun the same command when it is back")
    assert postgres.password not in err + out
    assert out.startswith("summary: could not be read: postgresql+psycopg://nas:***@"), out

    again = run("--storage", url, "--study", "long", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "study long: 2 trials: 1 complete" in again.stdout
    check_healed(optuna.load_study(study_name="long", storage=url))


# ---------------------------------------------------- in this process: what escapes Optuna, and how it reads


def _job(storage: str = "postgresql+psycopg://u:pw@db/nas") -> Job:
    return Job(space=TINY, budget=3000, study="s", storage=storage, epochs=1, seed=0, subset=64,
               data_dir=str(DATA_DIR), device="cpu", trials=1, timeout=None, quiet=True, out=".")


def _escaped(monkeypatch, tell_error: Exception, read_works: bool) -> BaseException:
    """What `study.optimize` raises when storing a trial's result fails (and reading it back, unless
    `read_works`): Optuna's _run_trial then meets its own unset `updated_state` (optuna#5280)."""
    study = optuna.create_study()
    storage, down = study._storage, []
    read = storage.get_trial

    def failing(*args, **kwargs):
        down.append(True)  # from the tell on, the storage fails
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from tell_error

    def get_trial(*args, **kwargs):
        return failing() if down and not read_works else read(*args, **kwargs)

    monkeypatch.setattr(storage, "set_trial_state_values", failing)
    monkeypatch.setattr(storage, "get_trial", get_trial)
    with pytest.raises(Exception) as caught:
        study.optimize(lambda t: 1.0, n_trials=1)
    return caught.value


def test_optunas_error_over_a_lost_database_reads_as_the_database(monkeypatch, capsys):
    refused = OSError("connection failed: connection to server at \"127.0.0.1\", port 5432 failed: "
                      "Connection refused\n\tIs the server running?")
    exc = _escaped(monkeypatch, refused, read_works=False)
    assert isinstance(exc, UnboundLocalError)  # what escapes study.optimize
    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", "120")
    assert stopped(_job(), "w2/3 ", exc) == 3
    assert capsys.readouterr().err == (
        'nas search: error: w2/3 the database did not answer for 2 min (connection failed: connection to server '
        'at "127.0.0.1", port 5432 failed: Connection refused); stopping: rerun the same command when it is back\n')


def test_optunas_error_over_a_full_sqlite_disk_reads_as_a_full_disk(monkeypatch, capsys):
    exc = _escaped(monkeypatch, sqlite3.OperationalError("database or disk is full"), read_works=True)
    assert isinstance(exc, AssertionError)  # the trial reads back as RUNNING: "Should not reach."
    assert stopped(_job("sqlite:///studies/s.db"), "", exc) == 4
    assert capsys.readouterr().err == (
        "nas search: error: disk full at studies/s.db (database or disk is full); stopping: free some space, "
        "then rerun the same command (the cut trial is queued again)\n")


def test_a_bug_is_not_taken_for_a_storage_error(capsys):
    from nas.errors import DataError

    assert stopped(_job(), "", ValueError("a bug")) is None
    try:
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError:
            raise DataError("MNIST/raw/train-images-idx3-ubyte is corrupt") from None
    except DataError as exc:
        assert stopped(_job(), "", exc) is None  # bad data, not a storage that is gone
    assert capsys.readouterr().err == ""


def test_the_worker_returns_its_status_for_a_storage_that_is_gone(monkeypatch, capsys):
    def gone(job, data, label):
        raise StorageError("the storage did not answer for 5 s (recording an epoch): An exception is raised") \
            from OSError("server closed the connection unexpectedly")
    monkeypatch.setattr(nas.search.workers, "_work", gone)
    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", "5")
    assert nas.search.workers.work(_job()) == 3
    assert "did not answer for 5 s (server closed the connection unexpectedly)" in capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_anywhere_in_a_command_is_one_line_with_exit_status_4(code, capsys):
    def main():
        raise OSError(code, os.strerror(code), "studies/s/best.json")
    with pytest.raises(SystemExit) as exit:
        run_script("nas x", main)
    assert exit.value.code == 4
    assert capsys.readouterr().err == (f"nas x: error: disk full at studies/s/best.json ({os.strerror(code)}); "
                                       "free some space, then run the same command again\n")


def test_exit_statuses_of_the_expected_errors(capsys):
    from nas.errors import UsageError

    for error, code in ((UsageError("bad"), 2), (StorageError("gone"), 3), (DiskFull("x.db"), 4),
                        (FloatingPointError("nan"), 1)):
        def main(error=error):
            raise error
        with pytest.raises(SystemExit) as exit:
            run_script("nas x", main)
        assert exit.value.code == code
    assert len(capsys.readouterr().err.splitlines()) == 4
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_script("nas x", lambda: {}["k"])


def test_disk_full_reads_the_whole_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise StorageError("the storage did not answer") from None  # hidden from the traceback, not from us
    except StorageError as exc:
        assert str(disk_full(exc, "a.journal")) == "disk full at a.journal (No space left on device)"
    assert disk_full(ValueError("x")) is None
    assert cause_line(RuntimeError("top")) == "top"
