"""What the tests share: the data, the tiny space, running a command as a user would, and its checks."""

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from nas.bundled import spaces

pytest_plugins = ["postgres"]  # tests/postgres.py: a real PostgreSQL server on 127.0.0.1 for the storage tests

ROOT = Path(__file__).resolve().parent.parent
# MNIST: $NAS_DATA_DIR, else ./data in the checkout (where the README's quick start downloads it), else the
# project machines' shared copy beside the checkout
_CANDIDATES = [ROOT / "data", ROOT.parent / "shared" / "data"]
DATA_DIR = Path(os.environ.get("NAS_DATA_DIR")
                or next((d for d in _CANDIDATES if (d / "MNIST" / "raw").is_dir()), _CANDIDATES[0])).resolve()
# absolute for every command a test runs, in-process ones included: they run in temporary folders
os.environ["NAS_DATA_DIR"] = str(DATA_DIR)
TINY = str(spaces()["mnist_tiny"])  # 1-2 stages of 2-12 channels: fast trials

SLOW_REASON = "slow: run with --run-slow"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (worker processes, signals, PostgreSQL, the wheel, the "
                          "dashboard, headless Chromium, benchmark subprocesses); CI runs them all")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def process_state_kept():
    """What an in-process command changes in this process, put back as it was: the SIGINT and SIGTERM
    handlers (nas.search installs its own), torch's CPU threads (resolve_device and nas.bench set them)
    and Optuna's log level (the commands quieten it)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    verbosity = optuna.logging.get_verbosity()
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        optuna.logging.set_verbosity(verbosity)


@pytest.fixture(autouse=True)
def _keep_process_state():
    """Every test leaves the signal handlers, torch's threads and Optuna's log level as it found them."""
    with process_state_kept():
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {DATA_DIR}: download it once into ./data (the README's smoke run "
                    "with --download) or set NAS_DATA_DIR to the folder that holds MNIST/raw")
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
    """Run `nas <command> args` in this process (a new process costs seconds of imports), in `cwd`,
    with the environment variables `env` on top of this one's (NAS_STUDIES_DIR unset unless given).

    Returns an object like subprocess.CompletedProcess; an unexpected exception fails the test.
    """
    from nas.cli import run_command

    def run(command: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("NAS_STUDIES_DIR", raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            run_command(command, list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, exit.value.code, out, err)
    return run


def run_in_process(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`nas <command> args` in this process, in `cwd`, outside any test (a session fixture cannot use
    monkeypatch or capsys): its output captured, the working directory, the environment and the
    process state put back afterwards."""
    from nas.cli import run_command

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, process_state_kept(), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(cwd)
        mp.delenv("NAS_STUDIES_DIR", raising=False)
        try:
            run_command(command, list(args))
        except SystemExit as exit:
            code = exit.code
        else:
            raise AssertionError(f"nas {command} returned instead of exiting")
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# The study most tests read, searched once per session (in this process) and copied by each module
# that needs one (`shared_copy`): the tiny space under a budget above all of its models, so every trial
# trains; the default finalists (3, with 3 new seeds each) and the report; then its winner retrained
# (2 seeds, into studies/keep/best_retrain/, the default --out next to best.json).
SHARED_STUDY, SHARED_BUDGET, SHARED_TRIALS = "keep", 10_000, 3
SHARED_SEARCH = ["--budget", str(SHARED_BUDGET), "--space", TINY, "--trials", str(SHARED_TRIALS), "--epochs", "1",
                 "--subset", "128", "--seed", "0", "--study", SHARED_STUDY, "--device", "cpu", "-q",
                 "--neighbours", "0"]  # drawn trials only: what the report tests read
SHARED_RETRAIN = [f"studies/{SHARED_STUDY}/best.json", "--subset", "256", "--epochs", "1", "--seeds", "2",
                  "--device", "cpu"]


class Shared:
    """The shared study's folder (never to be changed: copy it) and what its two commands printed."""

    def __init__(self, root: Path, search: subprocess.CompletedProcess, retrain: subprocess.CompletedProcess):
        self.root, self.search, self.retrain = root, search, retrain

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.root, to, dirs_exist_ok=True)
        return to


@pytest.fixture(scope="session")
def shared_study(tmp_path_factory, data_dir) -> Shared:
    root = tmp_path_factory.mktemp("shared")
    search = run_in_process("search", *SHARED_SEARCH, cwd=root)
    assert search.returncode == 0, search.stderr
    study = optuna.load_study(study_name=SHARED_STUDY, storage=f"sqlite:///{root}/studies/{SHARED_STUDY}.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == SHARED_TRIALS and len(complete) >= 2, [t.state for t in study.trials]
    retrain = run_in_process("retrain", *SHARED_RETRAIN, cwd=root)
    assert retrain.returncode == 0, retrain.stderr
    return Shared(root, search, retrain)


@pytest.fixture(scope="module")
def shared_copy(shared_study, tmp_path_factory) -> Path:
    """This module's own copy of the shared study's folder, free to change."""
    return shared_study.copy(tmp_path_factory.mktemp("shared_copy"))


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


@pytest.fixture(scope="module")
def crafted_db(tmp_path_factory) -> Path:
    """A study with every outcome (test_report.craft_study), no finalists run: the report's tests read it."""
    from test_report import craft_study

    db = tmp_path_factory.mktemp("crafted") / "crafted.db"
    craft_study(f"sqlite:///{db}")
    return db


@pytest.fixture
def crafted(crafted_db: Path) -> optuna.Study:
    return optuna.load_study(study_name="crafted", storage=f"sqlite:///{crafted_db}")


@contextlib.contextmanager
def opened_files():
    """The paths this process opens inside the block (an audit hook: it cannot be removed, so it stops recording
    when the block ends). How tests show that the search or a calibration never reads the test files."""
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if event == "open" and watching[0] and isinstance(args[0], (str, bytes)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        yield opened
    finally:
        watching[0] = False
