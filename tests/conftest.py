"""What the tests share: the data, the tiny space, running a command as a user would, and its checks."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.bundled import spaces

pytest_plugins = ["postgres"]  # tests/postgres.py: a real PostgreSQL server on 127.0.0.1 for the storage tests

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("NAS_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
# absolute for every command a test runs, in-process ones included: they run in temporary folders
os.environ["NAS_DATA_DIR"] = str(DATA_DIR)
TINY = str(spaces()["mnist_tiny"])  # 1-2 stages of 2-12 channels: fast trials


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {DATA_DIR}: set NAS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def small_data(data_dir):
    from nas.data import load_search_data

    return load_search_data(data_dir, torch.device("cpu"), subset=512)


def run_cli(module: str, *args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` in a new process, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"}  # ./studies unless a test says otherwise
    env.update({"NAS_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(ROOT), **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `nas <command> args` in this process (a new process costs seconds of imports), in `cwd`.

    Returns an object like subprocess.CompletedProcess; an unexpected exception fails the test.
    """
    from nas.cli import run_command

    def run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("NAS_STUDIES_DIR", raising=False)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            run_command(command, list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, exit.value.code, out, err)
    return run


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Bad input's contract: exit status 2, one line on stderr, no traceback. Returns the line."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under root with the SHA-256 of its bytes: to show a command changed nothing."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
