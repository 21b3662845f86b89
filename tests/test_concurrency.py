"""Concurrency and identity: warm starts queued once however many commands start together, a warm start
counted as run only once it reached a result, a study that knows its space's content, the messages after
a signal, and the --jobs cap."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas.search.command
import nas.search.plan
from conftest import DATA_DIR, ROOT, TINY, one_line_error, tree_hashes
from nas.bundled import spaces
from nas.search.warm_start import enqueue
from nas.space import load_space
from nas.spec import save_spec
from nas.store.heartbeat import retry_trial
from nas.store.record import (Outcome, StudySettings, queued_as, read_settings, read_trials, record_outcome,
                              write_settings)
from nas.store.storage import create_or_load, open_storage

QUIET = ["--device", "cpu", "--epochs", "1", "--subset", "64", "--no-report", "--finalists", "0"]
DESIGNS = [("a", {"x": 1, "y": "relu"}, {}), ("b", {"x": 2.5, "y": "gelu"}, {})]  # enqueue() does not draw them


def storage_url(kind: str, where: Path) -> str:
    return f"sqlite:///{where / 'study.db'}" if kind == "sqlite" else str(where / "study.journal")


def study_in(url: str, name: str = "s") -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    storage = open_storage(url)
    return storage, create_or_load(name, storage, direction="maximize")


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


# ------------------------------------------------------------------ 1. warm starts queued once


def race(url: str, monkeypatch, locked: bool, threads: int = 4) -> list[list[str]]:
    """`threads` commands' enqueue() on one study at once, each with its own storage connection, with the
    window between the check and the insert held open (0.2 s) so that unlocked ones would all see an empty
    study. Returns what each said."""
    study_in(url)  # the study exists: the commands continue it
    original = optuna.Study.enqueue_trial

    def slow_enqueue(self, *args, **kwargs):
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", slow_enqueue)
    barrier, said, errors = threading.Barrier(threads), [], []

    def command() -> None:
        try:
            storage, study = study_in(url)
            barrier.wait()
            said.append(enqueue(study, DESIGNS, storage if locked else None, url if locked else None))
        except Exception as exc:  # pragma: no cover (the assertion below shows it)
            errors.append(exc)

    workers = [threading.Thread(target=command) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    return said


@pytest.mark.parametrize("kind", ["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.slow)])
def test_commands_enqueueing_at_once_queue_each_design_once(tmp_path, monkeypatch, request, kind):
    url = (request.getfixturevalue("postgres").new_database("race") if kind == "postgres"
           else storage_url(kind, tmp_path))
    said = race(url, monkeypatch, locked=True)
    trials = trials_of(url, "s")
    assert sorted(t.user_attrs["warm_start"] for t in trials) == ["a", "b"]
    assert all(t.state == TrialState.WAITING for t in trials)
    # exactly one command queued each design; the others said it is queued already
    assert sorted(s for told in said for s in told if "not queued again" not in s) == ["a", "b"]
    assert sum("queued or running already: not queued again" in s for told in said for s in told) == 2 * 3


def test_without_the_lock_the_same_race_queues_a_design_twice(tmp_path, monkeypatch):
    """The race the lock closes is real: the check and the insert are two steps."""
    url = storage_url("journal", tmp_path)
    race(url, monkeypatch, locked=False)
    assert len(trials_of(url, "s")) > len(DESIGNS)


# ------------------------------------------------------------------ 2. a warm start counts once it reached a result


# the test plays the workers by ask and tell; Optuna warns that the search's storage, which beats,
# expects Study.optimize, as the workers use it
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_warm_start_counts_as_run_only_once_a_trial_of_it_reached_a_result(tmp_path):
    url = storage_url("sqlite", tmp_path)
    storage, study = study_in(url)
    design = [DESIGNS[0]]
    assert enqueue(study, design, storage, url) == ["a"]
    assert enqueue(study, design, storage, url) == ["a (queued or running already: not queued again)"]
    trial = study.ask()  # the queued trial runs ...
    assert trial.user_attrs == queued_as("a")
    assert (trial.suggest_int("x", 0, 5), trial.suggest_categorical("y", ["relu", "gelu"])) == (1, "relu")
    assert enqueue(study, design, storage, url) == ["a (queued or running already: not queued again)"]
    record_outcome(trial, Outcome.INTERRUPTED)  # ... and is stopped by a signal before it reached a result
    study.tell(trial, state=TrialState.FAIL)
    assert enqueue(study, design, storage, url) == ["a (queued again: trial 0 did not reach a result)"]
    again = study.ask()
    again.suggest_int("x", 0, 5), again.suggest_categorical("y", ["relu", "gelu"])
    study.tell(again, state=TrialState.FAIL)  # an error this time: still no result
    # a dead worker's trial: its retry (which keeps warm_start) is waiting, so it is not queued a third time
    retry_trial(study, study.trials[again.number])
    assert enqueue(study, design, storage, url) == ["a (queued or running already: not queued again)"]
    retried = study.ask()
    assert retried.user_attrs == queued_as("a")
    study.tell(retried, state=TrialState.PRUNED)  # pruned: a result
    assert enqueue(study, design, storage, url) == ["a (run before: not queued again)"]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.PRUNED]


def test_an_interrupted_warm_start_is_trained_on_the_next_run(tmp_path, cli):
    low = tmp_path / "low.json"
    save_spec(next(load_space("mnist_tiny").lowest_specs()), low)
    args = ["--budget", "3000", "--space", TINY, "--no-warm-start", "--warm-start", str(low), "--neighbours", "0",
            *QUIET]
    queued = cli("search", *args, "--trials", "0", cwd=tmp_path)  # queued, not run
    assert queued.returncode == 0, queued.stderr
    db = f"sqlite:///{tmp_path}/studies/mnist_tiny-b3000.db"
    study = optuna.load_study(study_name="mnist_tiny-b3000", storage=db)
    trial = study.ask()  # as a run stopped by Ctrl-C leaves it: failed, outcome interrupted
    record_outcome(trial, Outcome.INTERRUPTED)
    study.tell(trial, state=TrialState.FAIL)

    rerun = cli("search", *args, "--trials", "1", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"warm start: {low} (queued again: trial 0 did not reach a result)" in rerun.stderr
    records = read_trials(optuna.load_study(study_name="mnist_tiny-b3000", storage=db))
    assert [(r.warm_start, r.outcome) for r in records] == [(str(low), Outcome.INTERRUPTED),
                                                            (str(low), Outcome.COMPLETE)]
    done = cli("search", *args, "--trials", "0", cwd=tmp_path)
    assert f"warm start: {low} (run before: not queued again)" in done.stderr


# ------------------------------------------------------------------ 3. a study knows its space's content


@pytest.fixture
def own_space(tmp_path) -> Path:
    """A copy of the tiny space under its own file name (its `name:` stays mnist_tiny)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(spaces()["mnist_tiny"].read_text())
    return path


def search(cli, cwd: Path, space: Path | str, *more: str) -> subprocess.CompletedProcess:
    return cli("search", "--budget", "3000", "--space", str(space), "--trials", "0", "--no-warm-start", "-q", *QUIET,
               *more, cwd=cwd)


def settings_of(cwd: Path) -> dict:
    return read_settings(optuna.load_study(study_name="mnist_tiny-b3000",
                                           storage=f"sqlite:///{cwd}/studies/mnist_tiny-b3000.db"))


def test_a_study_records_its_spaces_content_and_file(tmp_path, cli, own_space):
    assert search(cli, tmp_path, TINY).returncode == 0
    stored = settings_of(tmp_path)
    assert stored["space_file"] == "bundled:mnist_tiny" and stored["space"] == "mnist_tiny"
    assert stored["space_hash"] == load_space("mnist_tiny").content_hash
    # the same content from another file, given relative to the working directory: accepted, stored absolute
    assert search(cli, tmp_path, own_space.name).returncode == 0
    assert settings_of(tmp_path)["space_file"] == str(own_space)


def test_whitespace_comments_and_numbers_written_otherwise_are_not_content(own_space):
    before = load_space(own_space).content_hash
    text = own_space.read_text()
    own_space.write_text("# a comment\n\n" + text.replace(": ", ":    ") + "\n\n# the end\n")
    assert load_space(own_space).content_hash == before
    own_space.write_text(text.replace("dropout: {low: 0.0, high: 0.1}", "dropout: {high: 0.1, low: 0}"))
    assert load_space(own_space).content_hash == before  # 0 for 0.0 in a float key: the same draws
    own_space.write_text(text.replace("batch_size: [64, 128]", "batch_size: [128, 64]"))
    assert load_space(own_space).content_hash != before  # the order of choices: what a sampler sees


def test_a_space_of_the_same_name_but_other_content_is_refused_unless_asked_for(tmp_path, cli, own_space):
    assert search(cli, tmp_path, own_space).returncode == 0
    own_space.write_text("# reformatted\n" + own_space.read_text().replace(": ", ":   ") + "\n\n")
    assert search(cli, tmp_path, own_space).returncode == 0  # whitespace and comments: the same space
    assert settings_of(tmp_path)["space_hash"] == load_space(TINY).content_hash

    other = tmp_path / "other.yaml"  # the same name, other draws
    other.write_text(own_space.read_text().replace("batch_size:   [64, 128]", "batch_size:   [32, 64, 128]"))
    assert load_space(other).name == "mnist_tiny" and load_space(other).content_hash != load_space(TINY).content_hash
    before = tree_hashes(tmp_path)
    line = one_line_error(search(cli, tmp_path, other))
    assert line == (f"nas search: error: study 'mnist_tiny-b3000' was run with space mnist_tiny as {own_space} held "
                    f"it, and {other} draws other values under that name: pass --space-changed to continue the "
                    "study with it, or pick another --study\n")
    assert tree_hashes(tmp_path) == before  # nothing stored changed

    study = optuna.load_study(study_name="mnist_tiny-b3000", storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b3000.db")
    study.enqueue_trial({})  # a trial, so that the header has trials to speak of
    accepted = cli("search", "--budget", "3000", "--space", str(other), "--trials", "0", "--no-warm-start",
                   "--space-changed", *QUIET, cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    said = (f"space mnist_tiny changed (--space-changed): trials 0-0 were drawn from it as {own_space} held it, "
            f"the trials from 1 on from {other}")
    assert said in accepted.stderr.splitlines() and said in accepted.stdout.splitlines()  # header and summary
    assert settings_of(tmp_path)["space_hash"] == load_space(other).content_hash
    assert search(cli, tmp_path, other).returncode == 0  # the study's space is the new content now
    assert search(cli, tmp_path, own_space).returncode == 2  # ... and the old one is refused


def test_a_study_made_before_space_hashes_is_accepted_and_recorded(tmp_path, cli, own_space):
    storage = open_storage(f"sqlite:///{tmp_path}/studies/mnist_tiny-b3000.db", tmp_path / "studies")
    study = create_or_load("mnist_tiny-b3000", storage, direction="maximize")
    write_settings(study, StudySettings(budget=3000, space="mnist_tiny", space_file="tiny.yaml", epochs=1,
                                        train_images=64, rungs=[], finalists=0, finalist_seeds=3))
    assert read_settings(study)["space_file"] == "tiny.yaml"  # an old relative path reads as it is
    assert search(cli, tmp_path, own_space).returncode == 0
    assert settings_of(tmp_path)["space_hash"] == load_space(own_space).content_hash
    assert settings_of(tmp_path)["space_file"] == str(own_space)


# ------------------------------------------------------------------ 4. what a signal's message says to do next


@pytest.mark.parametrize("where, advice", [
    ("work", "interrupted by SIGTERM: the running trial(s) stored as failed (interrupted); summary and report "
             "written; run the same command to continue"),
    ("reevaluate_finalists", "interrupted by SIGTERM during the finalists: the trials and the finalists' finished "
                             "trainings are kept; summary and report written; run the same command with --trials 0 "
                             "to finish the finalists"),
])
def test_the_message_after_a_signal_says_how_to_finish(tmp_path, cli, monkeypatch, where, advice):
    monkeypatch.setattr(nas.search.command, where, lambda *args, **kwargs: 128 + signal.SIGTERM)
    result = cli("search", "--budget", "3000", "--space", TINY, "--trials", "1", "--device", "cpu", "--epochs", "1",
                 "--subset", "64", "--no-report", "--finalists", "1", "--finalist-seeds", "1", "-q", cwd=tmp_path)
    assert result.returncode == 128 + signal.SIGTERM
    assert result.stderr.strip().splitlines()[-1] == f"nas search: {advice}"


# ------------------------------------------------------------------ 5. --jobs at most the cores


def test_more_jobs_than_cores_is_refused_before_anything_is_created(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(nas.search.plan, "usable_cores", lambda: 4)
    line = one_line_error(search(cli, tmp_path, TINY, "--jobs", "5"))
    assert line == ("nas search: error: --jobs 5 is more than the 4 CPU core(s) this process may use: each worker "
                    "process needs a core of its own (and about 850 MB of memory); use --jobs 4 or fewer\n")
    assert tree_hashes(tmp_path) == {}


# ------------------------------------------------------------------ 1. with real processes


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`nas search args` in its own process, as a user (or a scheduler) starts it."""
    env = {k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"}
    env.update(NAS_DATA_DIR=str(DATA_DIR), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three processes at once; PostgreSQL
@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_three_commands_started_together_train_each_warm_start_once(tmp_path, request, kind):
    if kind == "postgres":
        url = request.getfixturevalue("postgres").new_database("warmstarts")
    else:
        url = str(tmp_path / "shared.journal")
    low = tmp_path / "low.json"
    save_spec(next(load_space("mnist_tiny").lowest_specs()), low)  # a second design next to 4_final (narrowed)
    args = ["--budget", "3000", "--space", TINY, "--warm-start", str(low), "--storage", url, "--study", "shared",
            "--trials", "1", "--device", "cpu", "--epochs", "1", "--subset", "128", "--no-report", "--finalists", "0",
            "--neighbours", "0"]
    machines = [tmp_path / f"m{k}" for k in range(3)]
    procs = []
    for machine in machines:
        machine.mkdir()
        procs.append(start(*args, cwd=machine))
    results = [(*p.communicate(timeout=600), p.returncode) for p in procs]
    for out, err, code in results:
        assert code == 0, err
    trials = trials_of(url, "shared")
    designs = sorted(t.user_attrs.get("warm_start") or "" for t in trials)
    assert designs == sorted(["", "4_final at widths x0.56", str(low)])  # one trial per design, and one drawn
    assert all(t.state == TrialState.COMPLETE for t in trials if t.user_attrs.get("warm_start"))
    # the drawn one is a random start-up draw (its sampler is seeded per process): about 3 % of the tiny space's
    # draws are over 3,000 parameters, and those are rejected at the gate, untrained
    drawn = next(t for t in trials if not t.user_attrs.get("warm_start"))
    assert drawn.state == TrialState.COMPLETE or drawn.user_attrs["outcome"] == Outcome.REJECTED.value
    headers = [line for _, err, _ in results for line in err.splitlines() if line.startswith("warm start: ")]
    assert len(headers) == 3
    assert sum(h.count("not queued again") for h in headers) == 2 * 2  # two designs, queued by one command
