"""Many workers, one study: worker processes, machines sharing a PostgreSQL study, crashes, signals, outages."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas.search.objective
import nas.search.workers
import nas.store.heartbeat
import nas.store.storage
from conftest import DATA_DIR, ROOT, TINY
from nas.data import Split, Splits
from nas.errors import StorageError
from nas.search.finalists import seeds_of
from nas.store.record import Outcome, read_trial, read_trials
from nas.store.winner import best_record, select_winner
from nas.space import load_space
from nas.store.storage import load_study, open_storage, output_dir, with_retry
from nas.train import EpochResult, TrainResult

# workers, not selection: no finalists, and no neighbours of a new best (each test counts the trials it asked for)
TINY_ARGS = ["--budget", "3000", "--space", TINY, "--device", "cpu", "--finalists", "0", "--neighbours", "0"]
slow = pytest.mark.slow  # worker processes, signals, PostgreSQL: every test here but the in-process ones at the end


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`nas search args` in its own process, as a user (or a scheduler) starts it."""
    env = {k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"}
    env.update(NAS_DATA_DIR=str(DATA_DIR), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "nas.search", *TINY_ARGS, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(proc: subprocess.Popen, seen: list[str], timeout: float = 240) -> None:
    """Read the progress on stderr until a trial has trained an epoch."""
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        seen.append(line)
        if " epoch 1/" in line:
            return
        assert time.monotonic() < deadline, "no epoch within the time limit"
    pytest.fail("the search ended before any epoch: " + "".join(seen))


def finish(proc: subprocess.Popen, seen: list[str] | None = None, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, "".join(seen or []) + err


def check_consistent(study: optuna.Study, total: int) -> list:
    """Unique trial numbers, the requested total, no parameter set run twice, no RUNNING trial left."""
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(total))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == len(params), "two workers sampled the same candidate"
    return trials


@slow
def test_worker_processes_share_the_default_local_storage(tmp_path):
    # --jobs is capped at the usable cores: 2 on the project's machines and CI's
    code, out, err = finish(start("--trials", "6", "--epochs", "1", "--subset", "128", "--jobs", "2", "-q",
                                  "--no-report", cwd=tmp_path))
    assert code == 0, err
    assert (tmp_path / "studies" / "mnist_tiny-b3000.journal").is_file()  # several processes: the journal file
    study = load_study("mnist_tiny-b3000", None, tmp_path / "studies")
    check_consistent(study, 6)
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    assert best == json.loads(json.dumps(best_record(read_trial(study.best_trial), study)))
    assert "6 trials" in out and "2 worker process(es)" in out


@slow
def test_the_finalists_trainings_are_split_between_the_worker_processes(tmp_path):
    code, out, err = finish(start("--trials", "4", "--epochs", "1", "--subset", "128", "--jobs", "2", "--no-report",
                                  "--finalists", "2", "--finalist-seeds", "2", cwd=tmp_path))
    assert code == 0, err
    study = load_study("mnist_tiny-b3000", None, tmp_path / "studies")
    top = sorted((r for r in read_trials(study) if r.outcome == Outcome.COMPLETE), key=lambda r: (-r.value, r.number))[:2]
    assert top, err
    stored = {k for k in study.user_attrs if k.startswith("reevaluation:")}
    assert stored == {f"reevaluation:{r.number}:{seed}" for r in top for seed in seeds_of(r.number, 0, 2)}
    # each worker process trained its own half of them
    for worker in ("w1/2", "w2/2"):
        assert sum(line.startswith(f"{worker} finalist #") for line in err.splitlines()) == len(stored) // 2, err
    assert "<- winner" in out and json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())[
        "reevaluation"]["seeds"] == seeds_of(select_winner(study)[0].number, 0, 2)


@slow
def test_three_machines_share_a_postgres_study(postgres, tmp_path):
    url = postgres.new_database("three")
    machines = [tmp_path / f"machine{k}" for k in range(3)]
    procs = []
    for machine in machines:  # started at the same moment against a new study: the schema race
        machine.mkdir()
        procs.append(start("--storage", url, "--study", "shared", "--trials", "2", "--epochs", "1",
                           "--subset", "128", "--no-report", cwd=machine))
    results = [finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert postgres.password not in out + err  # storage URLs are printed without their password
        assert "postgresql+psycopg://nas:***@127.0.0.1" in err
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    check_consistent(study, 6)
    best = json.loads(json.dumps(best_record(read_trial(study.best_trial), study)))
    out_dirs = [output_dir(m / "studies", "shared", url) for m in machines]
    assert all(d.name.startswith("shared-") for d in out_dirs)  # not the default storage: named by it too
    written = []
    for d, (_, out, _) in zip(out_dirs, results):
        if (d / "best.json").is_file():
            written.append(json.loads((d / "best.json").read_text()))
        else:  # its trials ended uncompleted (over budget, pruned) before any trial completed: nothing to write
            assert "no trial completed yet" in out, out
    assert best in written  # the last to finish wrote the storage's best
    assert all(w["val_acc"] <= best["val_acc"] for w in written)


@slow
def test_a_killed_worker_heals_on_rerun_and_its_trial_runs_again_once(tmp_path):
    args = ["--trials", "1", "--epochs", "12", "--subset", "1024", "--no-report"]  # long enough to be killed mid-trial
    proc, seen = start(*args, cwd=tmp_path), []
    wait_for_epoch(proc, seen)
    proc.kill()  # SIGKILL: nothing runs in the worker any more, its trial stays RUNNING in the storage
    proc.wait()
    study = load_study("mnist_tiny-b3000", None, tmp_path / "studies")
    [killed] = study.get_trials(deepcopy=False)
    assert killed.state == TrialState.RUNNING

    code, out, err = finish(start(*args, "-q", cwd=tmp_path))
    assert code == 0, err
    study = load_study("mnist_tiny-b3000", None, tmp_path / "studies")
    records = read_trials(study)
    assert records[0].outcome == Outcome.INTERRUPTED and study.trials[0].state == TrialState.FAIL
    retries = [r for r in records if r.retry_of == killed.number]
    assert len(retries) == 1 and study.trials[retries[0].number].params == killed.params
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


@slow
@pytest.mark.parametrize("sig, jobs", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_signals_stop_cleanly(tmp_path, sig, jobs):
    proc, seen = start("--trials", "4", "--epochs", "30", "--subset", "1024", "--jobs", str(jobs), cwd=tmp_path), []
    wait_for_epoch(proc, seen)
    proc.send_signal(sig)
    code, out, err = finish(proc, seen)
    assert code == 128 + sig, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith(f"nas search: interrupted by {signal.Signals(sig).name}")
    assert "study mnist_tiny-b3000:" in out  # the summary
    out_dir = tmp_path / "studies" / "mnist_tiny-b3000"
    assert (out_dir / "report.html").is_file()
    study = load_study("mnist_tiny-b3000", None, tmp_path / "studies")
    records = read_trials(study)
    assert Outcome.INTERRUPTED in {r.outcome for r in records}
    assert not [r for r in records if r.outcome == Outcome.RUNNING]


@slow
def test_a_signal_during_the_winners_retrain_stops_it_cleanly_and_trials_0_finishes_it(tmp_path):
    args = ("--trials", "1", "--epochs", "30", "--subset", "1024", "--retrain", "2", "--no-report")
    proc, seen = start(*args, cwd=tmp_path), []
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # the second seed's first epoch: the first seed's checkpoint is written
        seen.append(line)
        if "seed 1 (2/2) epoch 1/" in line:
            break
        assert time.monotonic() < deadline, "no second retrain seed within the time limit"
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, seen)
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "retrain unfinished" in said[0] and "--trials 0" in said[0], said
    out_dir = tmp_path / "studies" / "mnist_tiny-b3000"
    target = out_dir / f"trial{json.loads((out_dir / 'best.json').read_text())['trial']}_retrain"
    assert (target / "seed0.pt").is_file() and not (target / "metrics.json").exists()
    before = [(t.number, t.state, t.value) for t in load_study("mnist_tiny-b3000", None, tmp_path / "studies").trials]
    seed0 = (target / "seed0.pt").read_bytes()

    code, out, err = finish(start(*args[2:], "--trials", "0", cwd=tmp_path))
    assert code == 0, err
    assert "did not finish: continued" in out and "seed 0 (1/2): kept from seed0.pt" in err
    assert [(t.number, t.state, t.value)
            for t in load_study("mnist_tiny-b3000", None, tmp_path / "studies").trials] == before
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and len(metrics["test_acc"]) == 2 and metrics["kept_seeds"] == [0]
    assert (target / "seed0.pt").read_bytes() == seed0  # the finished seed is not trained again


@slow
def test_search_goes_on_through_a_database_restart(postgres, tmp_path):
    url = postgres.new_database("outage")
    proc, seen = start("--storage", url, "--study", "outage", "--trials", "2", "--epochs", "8",
                       "--subset", "1024", "--no-report", cwd=tmp_path), []
    wait_for_epoch(proc, seen)
    postgres.stop()
    try:
        time.sleep(10)
    finally:
        postgres.start()
    code, out, err = finish(proc, seen)
    assert code == 0, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="outage", storage=open_storage(url))
    records = read_trials(study)
    assert not [r for r in records if r.outcome == Outcome.RUNNING]
    # both trials ended on their own; with --subset 1024 the second may be screened at the cheap rung.
    # The trial the outage cut into waited for the server (its storage calls retried) instead of failing:
    # no trial was failed as interrupted and queued again, so there are exactly the 2 trials asked for
    ended = (Outcome.COMPLETE, Outcome.PRUNED, Outcome.SCREENED, Outcome.REJECTED, Outcome.DIVERGED)
    assert [r.outcome in ended for r in records] == [True, True], [r.outcome for r in records]
    assert [r.retry_of for r in records] == [None, None]
    # the stand-in tests below show the retry itself, call by call


def test_a_worker_trains_with_its_share_of_the_cpu_threads(monkeypatch):
    """resolve_device gives a CPU every core; a worker's share is set after it. Set before, two workers
    on 2 cores ran 2 OpenMP threads each and trained several times slower than with one each."""
    import nas.device
    from nas.search.workers import Job, run_workers, worker_device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # the machine's cores, whatever runs the test: patched where each module looks the name up
    monkeypatch.setattr(nas.device, "usable_cores", lambda: 4)  # resolve_device: every core
    monkeypatch.setattr(nas.search.workers, "usable_cores", lambda: 4)  # run_workers: each worker's share
    started: list[Job] = []
    monkeypatch.setattr(nas.search.workers, "_run_processes", lambda target, jobs: started.extend(jobs) or 0)
    job = Job(space=TINY, budget=3000, study="s", storage="sqlite://", epochs=1, seed=0, subset=64,
              data_dir=str(DATA_DIR), device="cpu", trials=5, timeout=None, quiet=True, out=".", rungs=(), eta=3)
    assert run_workers(job, 2) == 0
    assert [(j.index, j.workers, j.trials, j.threads) for j in started] == [(0, 2, 3, 2), (1, 2, 2, 2)]
    started.clear()
    assert run_workers(job, 3) == 0
    assert [j.threads for j in started] == [1, 1, 1]  # 4 cores // 3 workers

    assert nas.device.resolve_device("cpu").type == "cpu" and torch.get_num_threads() == 4  # no share: every core
    assert worker_device(replace(job, workers=2, threads=2)).type == "cpu"
    assert torch.get_num_threads() == 2  # the worker's share, not every core (the autouse fixture restores it)


def test_the_header_suggests_a_worker_per_core_on_a_cpu_only(monkeypatch):
    """One worker on a multi-core CPU leaves candidates per hour unused; a GPU or a worker per core does not."""
    from types import SimpleNamespace

    import nas.search.header
    from nas.search.header import jobs_hint

    monkeypatch.setattr(nas.search.header, "usable_cores", lambda: 4)
    cpu, gpu = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(device=torch.device("cuda"))
    assert jobs_hint(cpu, 1) == " (--jobs 4 trains more candidates per hour on this CPU's 4 cores: one thread each)"
    assert jobs_hint(cpu, 4) == "" and jobs_hint(gpu, 1) == ""
    monkeypatch.setattr(nas.search.header, "usable_cores", lambda: 1)
    assert jobs_hint(cpu, 1) == ""  # one core: nothing to gain


# ---------------------------------------------------------------- a storage that hiccups, in this process


class Flaky:
    """A storage call that fails `failures` times with a transient error (a dropped connection), then works."""

    def __init__(self, call, failures: int):
        self.call, self.failures, self.calls = call, failures, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("server closed the connection unexpectedly")
        return self.call(*args, **kwargs)


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """with_retry's clock: each sleep recorded and added to the time, none taken."""
    now, waits = [1000.0], []

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)
            now[0] += seconds

    monkeypatch.setattr(nas.store.storage, "time", Clock)
    return waits


def test_with_retry_retries_a_transient_error_until_it_answers(slept):
    flaky = Flaky(lambda: 42, failures=3)
    assert with_retry(flaky, "reading the study") == 42
    assert flaky.calls == 4 and slept == [0.5, 1.0, 2.0]  # backoff, doubling
    gone = Flaky(lambda: 42, failures=10**6)
    with pytest.raises(StorageError, match=r"did not answer for 30 s \(asking\): server closed the connection"):
        with_retry(gone, "asking", seconds=30)
    assert sum(slept[3:]) <= 30 and gone.calls == len(slept) - 3 + 1  # gave up when the next wait passed 30 s
    waited = len(slept)
    assert with_retry(Flaky(lambda: 1, failures=0), "x") == 1 and len(slept) == waited  # no error: no wait


def test_a_trial_waits_through_a_storage_hiccup_and_records_every_epoch(slept, monkeypatch):
    """The search's own storage writes go through with_retry: a write that fails twice is tried a third
    time, and the trial completes with every epoch recorded, as if nothing had happened."""
    flaky = Flaky(nas.search.objective.record_epochs, failures=2)
    monkeypatch.setattr(nas.search.objective, "record_epochs", flaky)

    def trainer(spec, data, *, epochs, seed, on_epoch=None, speed=None):
        result = TrainResult(None)
        for e in range(1, epochs + 1):
            result.history.append(EpochResult(e, epochs, 1.0, 50.0, 90.0 + e, 0.01))
            on_epoch(result.history[-1])
        return result

    data = Splits(Split(torch.zeros(64, 1, 28, 28), torch.zeros(64, dtype=torch.int64)),
                  Split(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64)))
    progress = nas.search.objective.Progress(True, 1, None, 2)
    objective = nas.search.objective.make_objective(load_space(TINY), data, 10**6, 2, 0, progress, trainer=trainer)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert flaky.calls == 2 + 1 + 1  # epoch 1: two failures and the retry that worked; epoch 2: one call
    assert slept == [0.5, 1.0]
    [record] = read_trials(study)
    assert record.outcome == Outcome.COMPLETE and len(record.epoch_seconds) == 2 and record.value == 92.0


def test_a_dead_workers_trial_is_queued_again_once_with_what_it_is_not_what_it_measured(tmp_path):
    """heal() fails a trial whose process is gone and queues its parameters again, once, with Optuna's retry
    marker; the retry keeps the trial's warm_start and none of what the dead run recorded."""
    from nas.store.heartbeat import heal
    from nas.store.record import Worker, queued_as, record_outcome, record_worker

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=open_storage(str(tmp_path / "s.journal")), direction="maximize")
    study.enqueue_trial({"x": 0.5}, user_attrs=queued_as("4_final"))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    record_worker(trial, Worker(nas.store.heartbeat.HOST, 2**22 + 12345, time.time()))  # no such process
    record_outcome(trial, Outcome.RUNNING)
    trial.set_user_attr("epoch_seconds", [1.0])
    assert heal(study) == [0]
    dead, retry = read_trials(study)
    assert dead.outcome == Outcome.INTERRUPTED
    assert retry.outcome == Outcome.QUEUED and retry.retry_of == 0 and retry.warm_start == "4_final"
    assert retry.epoch_seconds == () and retry.worker is None
    assert study.trials[1].params == {"x": 0.5} and study.trials[1].state == TrialState.WAITING
    again = study.ask()  # the retry is what runs next, with the dead trial's parameters
    assert again.number == 1 and again.suggest_float("x", 0, 1) == 0.5
    record_worker(again, Worker(nas.store.heartbeat.HOST, 2**22 + 12345, time.time()))
    record_outcome(again, Outcome.RUNNING)
    assert heal(study) == [1] and len(study.trials) == 2  # a retry that dies too is not queued again


def test_a_workers_progress_shows_the_best_another_worker_found_meanwhile(tmp_path):
    """With --jobs 2 the line's study best is read from the storage after each of this worker's trials, not
    only after its complete ones: a worker whose candidates are screened out shows the other's new best."""
    from nas.search.objective import Progress
    from nas.search.workers import study_best, trial_ended
    from nas.store.record import record_outcome

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    mine = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal")), direction="maximize")
    theirs = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal")))
    progress = Progress(True, None, None, 15)
    progress.best = study_best(mine)
    after_trial = trial_ended(progress, tmp_path / "out", set())
    spec = json.loads((ROOT / "search_spaces" / "found" / "b2000.json").read_text())["spec"]  # best.json's

    def finish(study: optuna.Study, outcome: Outcome, value: float | None = None) -> optuna.trial.FrozenTrial:
        trial = study.ask()
        record_outcome(trial, outcome)
        trial.set_user_attr("spec", spec)
        study.tell(trial, value) if value is not None else study.tell(trial, state=TrialState.PRUNED)
        return study.trials[trial.number]

    finish(theirs, Outcome.COMPLETE, 98.5)  # trial 0, the other worker's
    after_trial(mine, finish(mine, Outcome.SCREENED))
    assert progress.best == "98.50% (#0)" and progress.done == 1
    after_trial(mine, finish(mine, Outcome.COMPLETE, 98.25))  # its own complete trial: best.json, as before
    assert progress.best == "98.50% (#0)" and json.loads((tmp_path / "out" / "best.json").read_text())["trial"] == 0
    finish(theirs, Outcome.COMPLETE, 99.0)  # trial 3
    after_trial(mine, finish(mine, Outcome.REJECTED))
    assert progress.best == "99.00% (#3)" and progress.rejected == 1
