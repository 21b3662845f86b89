"""A real, throwaway PostgreSQL server for the tests (a pytest plugin: `pytest_plugins = ["postgres"]`).

The session-scoped fixture `postgres` runs Debian's PostgreSQL binaries on a fresh data directory in a
temporary folder: password (scram-sha-256) auth, 127.0.0.1 only, a free port, fsync off. It never touches
a system cluster (Debian's package may start one on 5432). Without the binaries the tests that use it
are skipped, except under CI, where they fail: CI must exercise them.
"""

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "nas"  # the superuser the tests connect as; its password is random per session
DATABASE = "nas"  # what .url points at


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin (Debian keeps versions side by side), else PATH's."""
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "pg_ctl").is_file()]
    if found:
        return max(found, key=lambda d: [int(n) for n in re.findall(r"\d+", d.parent.name)])
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run should have installed it")
    pytest.skip(reason)


def _free_port() -> int:
    # the kernel picks a free port; the tiny race until the server binds it is acceptable for tests
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server; `.url` is an SQLAlchemy URL with the real password in it."""

    def __init__(self, bin_dir: Path, run_as: str | None):
        self.bin_dir = bin_dir
        self.run_as = run_as  # initdb and postgres refuse to run as root: then they run as this user
        self.password = secrets.token_urlsafe(18)  # URL-safe: goes into the URL as is
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nas-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.running = False
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        # PG* variables (PGPORT, PGDATA, ...) of the caller must not steer this server
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(command, cwd=self.dir, env=env, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def init(self) -> None:
        # the password goes through a file, never on a command line where `ps` would show it
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password)
        if self.run_as:
            shutil.chown(pwfile, self.run_as)
        try:
            self._run("initdb", "-D", str(self.data), f"--username={USER}", f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "--locale=C", "--encoding=UTF8", "--no-sync")
        finally:
            pwfile.unlink()
        # in the config file, not on pg_ctl's command line, so that start() after stop() gets the same
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\n"
                       # a throwaway server: durability only costs time
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    def start(self) -> None:
        """Start (again) on the same port and data; returns once it accepts connections."""
        if not self.running:
            self._run("pg_ctl", "start", "--wait", "-D", str(self.data), "-l", str(self.log))
            self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop; "fast" disconnects the clients (the default "smart" would wait for them to leave)."""
        if self.running:
            self._run("pg_ctl", "stop", "--wait", "-D", str(self.data), "-m", mode)
            self.running = False

    def new_database(self, name: str) -> str:
        """A fresh empty database (dropped first if it exists); returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:  # CREATE DATABASE needs autocommit
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def remove(self) -> None:
        try:
            self.stop(mode="immediate")  # nothing to keep: no need for a clean shutdown
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:  # never the password, should pytest print the fixture
        return f"PostgresServer(127.0.0.1:{self.port}, {self.dir})"


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL server for the session; stopped and removed at the end."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401  (the `postgres` extra)
    except ImportError:
        _unavailable('psycopg is not installed (pip install -e ".[postgres]")')
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
    server = PostgresServer(bin_dir, run_as)
    try:
        server.init()
        server.start()
        server.new_database(DATABASE)
        yield server
    finally:
        server.remove()
