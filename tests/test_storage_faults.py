"""Storage faults lose nothing and leak nothing: a journal whose last record a crash or a full disk cut
is repaired before anything writes after it; the retry window is $NAS_STORAGE_RETRY_SECONDS; no form of
password a storage URL can carry is ever printed."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState

import nas.store.storage
from conftest import ROOT, one_line_error
from nas.errors import StorageError, UsageError
from nas.store.credentials import redact
from nas.store.storage import load_study, open_storage, retry_seconds, with_retry

STUDY = "s"
REPAIRED = re.compile(r"^nas: repaired (\S+): a torn last record \((\d+) bytes, cut by a crash or a full disk\) "
                      r"moved to (\S+)\n$")


def make_journal(path: Path, trials: int = 3) -> bytes:
    """A real journal: a tiny study of `trials` complete trials, written by Optuna's own backend. Its bytes."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(path))),
                                direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)
    return path.read_bytes()


def last_line_start(data: bytes) -> int:
    return data.rstrip(b"\n").rfind(b"\n") + 1


def cut_mid_last_line(path: Path, data: bytes) -> tuple[bytes, bytes]:
    """Cut the journal in the middle of its last record, as a crash or a full disk does. Returns
    (the whole lines that stay, the torn bytes after them)."""
    start = last_line_start(data)
    keep = start + (len(data) - start) // 2
    path.write_bytes(data[:keep])
    return data[:start], data[start:keep]


def json_lines(path: Path) -> list[dict]:
    """Every line of the journal, each a whole JSON record ending in a newline (else the test fails)."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def plain_read(path: Path) -> optuna.Study:
    """The study as Optuna itself reads the file, without this project's code."""
    return optuna.load_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(path))))


def side_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".torn-*"))


# --- a torn journal tail ---------------------------------------------------------------------------------------

def test_without_the_repair_the_next_append_glues_onto_a_torn_tail(tmp_path):
    """The failure this guards against, with Optuna's own backend: the next record is appended onto the
    partial line, one invalid line in the middle of the file, and from then on reading fails."""
    path = tmp_path / "s.journal"
    _, torn = cut_mid_last_line(path, make_journal(path))
    study = plain_read(path)
    with pytest.raises(AttributeError):  # Optuna cannot find the trial it just wrote: it went into the glued line
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ValueError):  # the next write puts the glued line in the middle: reading it fails
        study.ask()
    lines = path.read_bytes().split(b"\n")[:-1]
    glued = [line for line in lines if line.startswith(torn)]
    assert len(glued) == 1 and lines[-1] != glued[0]  # an invalid line, now in the middle of the file
    with pytest.raises(ValueError):  # json.JSONDecodeError: every later read fails
        plain_read(path)


def test_a_torn_tail_is_moved_aside_and_the_study_goes_on(tmp_path, capsys):
    path = tmp_path / "s.journal"
    data = make_journal(path)
    whole, torn = cut_mid_last_line(path, data)
    capsys.readouterr()
    storage = open_storage(str(path))
    err = capsys.readouterr().err
    match = REPAIRED.match(err)
    assert match, err  # one line
    assert match[1] == str(path) and int(match[2]) == len(torn)
    [side] = side_files(path)
    assert match[3] == str(side) and re.fullmatch(r"s\.journal\.torn-\d{8}T\d{6}Z", side.name)
    assert side.read_bytes() == torn  # nothing lost: the cut bytes are kept
    assert path.read_bytes() == whole  # the journal ends at its last whole line
    # the study reads (the cut record was the last trial's end: it reads as running), and goes on
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    records = json_lines(path)
    assert len(records) > len(whole.splitlines())
    assert [t.state for t in plain_read(path).trials][-1] == TrialState.COMPLETE
    # opened again: nothing to repair, nothing said
    load_study(STUDY, str(path), tmp_path)
    assert capsys.readouterr().err == "" and len(side_files(path)) == 1


def test_a_tail_that_is_all_torn_leaves_an_empty_journal(tmp_path, capsys):
    """A journal with no newline at all (its first record cut): all of it goes aside, and a new study starts."""
    path = tmp_path / "s.journal"
    data = make_journal(path)
    path.write_bytes(data[:20])  # 20 bytes of its first record
    storage = open_storage(str(path))
    assert REPAIRED.match(capsys.readouterr().err)
    assert path.read_bytes() == b"" and side_files(path)[0].read_bytes() == data[:20]
    nas.store.storage.create_or_load(STUDY, storage, direction="maximize")
    assert json_lines(path)


def test_a_whole_record_without_its_newline_gets_the_newline(tmp_path, capsys):
    """A tail that is a whole record (only the newline was lost) is kept, not moved."""
    path = tmp_path / "s.journal"
    data = make_journal(path)
    path.write_bytes(data[:-1])
    study = optuna.load_study(study_name=STUDY, storage=open_storage(str(path)))
    err = capsys.readouterr().err
    assert err == (f"nas: repaired {path}: its last record lacked its newline (cut by a crash or a full disk); "
                   "added it\n")
    assert path.read_bytes() == data and side_files(path) == []
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


def test_the_repair_waits_for_a_worker_in_the_middle_of_an_append(tmp_path, capsys):
    """A tail that looks torn because a worker is writing it, under the journal's lock, is not cut: the
    repair takes the same lock, and finds a whole line once the worker is done."""
    path = tmp_path / "s.journal"
    data = make_journal(path)
    record = data[last_line_start(data):]
    lock = JournalFileSymlinkLock(str(path))  # what Optuna's JournalFileBackend takes around an append
    lock.acquire()
    with open(path, "ab") as f:
        f.write(record[:10])
        f.flush()
        opened = []
        thread = threading.Thread(target=lambda: opened.append(open_storage(str(path))))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and path.stat().st_size == len(data) + 10  # waiting, nothing cut
        f.write(record[10:])
    lock.release()
    thread.join(10)
    assert opened and capsys.readouterr().err == "" and side_files(path) == []
    assert path.read_bytes() == data + record
    json_lines(path)


def test_an_append_repairs_a_tail_torn_while_the_journal_was_open(tmp_path, capsys):
    """Another process cut its record after this one opened the journal: this one's next append moves the
    cut bytes aside first, so it never writes after a partial line."""
    path = tmp_path / "s.journal"
    make_journal(path)
    study = optuna.load_study(study_name=STUDY, storage=open_storage(str(path)))
    before = path.read_bytes()
    torn = b'{"op_code":4,"worker_id":"gone-'  # a record cut by another process's crash
    with open(path, "ab") as f:
        f.write(torn)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert REPAIRED.match(capsys.readouterr().err)
    [side] = side_files(path)
    assert side.read_bytes() == torn
    assert path.read_bytes().startswith(before)
    json_lines(path)
    assert len(plain_read(path).trials) == 4


FULL_DISK = r"""
import errno, resource, signal, sys
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from nas.store.journal import JournalFile

path, ours = sys.argv[1], sys.argv[2] == "ours"
backend = JournalFile(path) if ours else JournalFileBackend(path)
study = optuna.load_study(study_name="s", storage=JournalStorage(backend))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
size = len(open(path, "rb").read())
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))  # room for 40 bytes
try:
    study.ask()
except OSError as exc:
    print("cut", errno.errorcode[exc.errno])
"""


@pytest.mark.slow
def test_an_append_the_disk_cuts_is_taken_back(tmp_path, capsys):
    """A real cut write (a file size limit, which cuts a write exactly as a full disk does, in a process of
    its own): Optuna's backend leaves a torn tail, which the next open moves aside; this project's backend
    takes its partial record back, and leaves the journal ending in a whole line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for backend in ("optuna", "ours"):
        path = tmp_path / backend / "s.journal"
        path.parent.mkdir()
        data = make_journal(path)
        run = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), backend], env=env, capture_output=True,
                             text=True, timeout=120, check=False)
        assert run.returncode == 0 and run.stdout == "cut EFBIG\n", run.stdout + run.stderr
        if backend == "optuna":
            assert path.read_bytes().startswith(data) and len(path.read_bytes()) == len(data) + 40  # torn
            open_storage(str(path))
            assert REPAIRED.match(capsys.readouterr().err)
        assert path.read_bytes() == data
        study = optuna.load_study(study_name=STUDY, storage=open_storage(str(path)))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        json_lines(path)
        assert len(plain_read(path).trials) == 4


# --- the retry window ------------------------------------------------------------------------------------------

def test_the_retry_window_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("NAS_STORAGE_RETRY_SECONDS", raising=False)
    assert retry_seconds() == 120
    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", " 7.5 ")
    assert retry_seconds() == 7.5
    calls = []

    def gone():
        calls.append(1)
        raise OSError("server closed the connection unexpectedly")

    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", "0")  # read when with_retry is called: 0 tries once
    with pytest.raises(StorageError, match=r"did not answer for 0 s \(asking\)"):
        with_retry(gone, "asking")
    assert len(calls) == 1
    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", "1")
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"did not answer for 1 s"):
        with_retry(gone, "asking")
    assert len(calls) == 1 + 2 and time.monotonic() - start < 1.5  # tried at 0 and 0.5 s; 1.5 s would be past 1 s


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "1e400", "2m"])
def test_a_bad_retry_window_is_one_line_at_the_start(cli, tmp_path, monkeypatch, value):
    monkeypatch.setenv("NAS_STORAGE_RETRY_SECONDS", value)
    with pytest.raises(UsageError, match="NAS_STORAGE_RETRY_SECONDS"):
        retry_seconds()
    monkeypatch.delenv("NAS_STORAGE_RETRY_SECONDS")
    path = tmp_path / "s.journal"
    data = make_journal(path, trials=1)
    line = one_line_error(cli("report", "--study", STUDY, "--storage", str(path), cwd=tmp_path,
                              env={"NAS_STORAGE_RETRY_SECONDS": value}))
    assert f"bad NAS_STORAGE_RETRY_SECONDS={value!r}" in line and "default 120" in line
    assert path.read_bytes() == data


# --- credentials are never printed -----------------------------------------------------------------------------

# (a storage URL on a closed local port, the secret it holds in each form a message could quote it)
URLS = [
    ("postgresql://u:s3cr3tPW@127.0.0.1:9/db", ["s3cr3tPW"]),
    ("postgresql://u:p%40ss%3Aw0rd%2Fx@127.0.0.1:9/db", ["p%40ss%3Aw0rd%2Fx", "p@ss:w0rd/x"]),
    ("postgresql+psycopg://u:colon:in:pw@127.0.0.1:9/db", ["colon:in:pw"]),
    ("postgresql://u:pa/ss?wd@127.0.0.1:9/db", ["pa/ss?wd"]),
    ("postgresql://u@127.0.0.1:9/db?password=s3cr3tQS", ["s3cr3tQS"]),
    ("postgresql://u@127.0.0.1:9/db?sslmode=disable&PASSWORD=s3cr3tUP", ["s3cr3tUP"]),
    ("postgresql://u@127.0.0.1:9/db?Password=s%40cr3t%20enc", ["s%40cr3t%20enc", "s@cr3t enc"]),
    ("postgresql://u:s3cr3tB0th@127.0.0.1:9/db?sslpassword=k3yPhrase", ["s3cr3tB0th", "k3yPhrase"]),
    ("postgresql:///db?host=127.0.0.1&port=9&user=u&password=s3cr3tKV", ["s3cr3tKV"]),
    ("host=127.0.0.1 port=9 dbname=db user=u password=s3cr3tDSN", ["s3cr3tDSN"]),
    ("host=127.0.0.1 port=9 password = 's3cr3t with spaces' user=u", ["s3cr3t with spaces"]),
    ("host=127.0.0.1 password='it\\'s s3cr3t' sslpassword=k3yPhrase2 user=u", ["it's s3cr3t", "k3yPhrase2"]),
    ("dbname=db password=s3cr3tEnd", ["s3cr3tEnd"]),
]


@pytest.mark.parametrize("url,secrets", URLS, ids=[u for u, _ in URLS])
def test_redact_masks_every_form_of_password(url, secrets):
    shown = redact(url)
    assert "***" in shown
    for secret in secrets:
        assert secret not in shown, shown
    assert redact(shown) == shown


def test_redact_keeps_what_is_not_a_secret():
    for url in ("sqlite:////tmp/studies/x.db", "/tmp/studies/x.journal", "postgresql://u@db.example:5432/nas",
                "postgresql://u@h/db?passfile=/home/u/.pgpass&sslmode=require"):
        assert redact(url) == url
    # a user:password URL reads as before, so output folders named by its hash stay where they were
    assert redact("postgresql://nas:pw@db.example:5432/nas") == "postgresql://nas:***@db.example:5432/nas"
    assert redact("postgresql://user@server:pw@db.example/nas") == "postgresql://user@server:***@db.example/nas"


@pytest.mark.parametrize("url,secrets", URLS, ids=[u for u, _ in URLS])
def test_a_refused_storage_url_never_shows_its_password(cli, tmp_path, url, secrets):
    """The one-line error of a storage that cannot be parsed or reached (a closed local port: nothing
    leaves the machine), tried once (NAS_STORAGE_RETRY_SECONDS=0)."""
    line = one_line_error(cli("report", "--study", "x", "--storage", url, cwd=tmp_path,
                              env={"NAS_STORAGE_RETRY_SECONDS": "0"}))
    assert "bad storage URL" in line and "***" in line, line
    for secret in secrets:
        assert secret not in line, line


@pytest.mark.parametrize("url,secrets", URLS, ids=[u for u, _ in URLS])
def test_a_driver_message_that_quotes_the_url_or_its_password_is_scrubbed(monkeypatch, url, secrets):
    """A driver's message may quote the URL (SQLAlchemy 1.x: "Could not parse rfc1738 URL from string '...'")
    or the password, decoded: the one line shows none of it, even where the message is longer than the
    line is cut to."""
    import sqlalchemy.exc

    message = (f"Could not parse rfc1738 URL from string '{url}' ({nas.store.storage._driver_url(url)}); "
               + "; ".join(f'password "{secret}" rejected' for secret in secrets) + " " + "x" * 300)

    def connect(_):
        raise sqlalchemy.exc.ArgumentError(message)

    monkeypatch.setattr(nas.store.storage, "_connect", connect)
    with pytest.raises(UsageError) as refused:
        open_storage(url)
    line = str(refused.value)
    assert line.startswith(f"bad storage URL {redact(url)}: Could not parse") and len(line) < 400
    for secret in secrets:
        assert secret not in line, line


def test_a_raw_at_sign_in_a_password_is_refused_before_connecting(cli, tmp_path):
    """SQLAlchemy ends the password at the first '@' and would look up the rest of it as a host name,
    which a DNS error would then print: refused at once, asking for %40, the password unseen."""
    line = one_line_error(cli("report", "--study", "x", "--storage", "postgresql://u:p@ss:w0rd@127.0.0.1:9/db",
                              cwd=tmp_path))
    assert "%40" in line and "p@ss" not in line and "ss:w0rd" not in line and "u:***@127.0.0.1:9/db" in line


@pytest.mark.slow
def test_every_password_form_reaches_a_real_server_and_stays_unprinted(postgres, cli, tmp_path):
    """Against the real server: each form opens the storage with the right password, and with a wrong one
    is refused in one line that shows neither."""
    import psycopg
    from psycopg import sql

    role, password = "nas_forms", "p@ss:w/rd ?&=%x"  # every character a URL reserves
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="nas", password=postgres.password,
                         dbname="nas", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(role),
                                                                               sql.Literal(password)))
    from urllib.parse import quote
    host = f"127.0.0.1:{postgres.port}"
    forms = {
        "userinfo": lambda pw: f"postgresql://{role}:{quote(pw, safe='')}@{host}/nas",
        "query": lambda pw: f"postgresql://{role}@{host}/nas?password={quote(pw, safe='')}",
        "query, after another":
            lambda pw: f"postgresql://{role}@{host}/nas?sslmode=disable&password={quote(pw, safe='')}",
    }
    wrong = "Wr0ng:p@ss w0rd"
    for name, form in forms.items():
        url = form(password)
        nas.store.storage.create_or_load(f"forms-{len(name)}", open_storage(url))  # the right one connects
        assert password not in redact(url) and quote(password, safe="") not in redact(url), name
        line = one_line_error(cli("report", "--study", "x", "--storage", form(wrong), cwd=tmp_path,
                                  env={"NAS_STORAGE_RETRY_SECONDS": "0"}))
        assert "password authentication failed" in line, line
        for shown in (wrong, quote(wrong, safe=""), postgres.password):
            assert shown not in line, (name, line)
