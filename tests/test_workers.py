"""Many workers, one study: worker processes, machines sharing a PostgreSQL study, crashes, signals, outages."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import DATA_DIR, ROOT, TINY
from nas.search.finalists import seeds_of
from nas.store.record import Outcome, read_trial, read_trials
from nas.store.winner import best_record, select_winner
from nas.store.storage import load_study, open_storage, output_dir

TINY_ARGS = ["--budget", "3000", "--space", TINY, "--device", "cpu", "--finalists", "0"]  # workers, not selection


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


def test_three_worker_processes_share_the_default_local_storage(tmp_path):
    code, out, err = finish(start("--trials", "6", "--epochs", "1", "--subset", "128", "--jobs", "3", "-q",
                                  cwd=tmp_path))
    assert code == 0, err
    assert (tmp_path / "studies" / "mnist-tiny-b3000.journal").is_file()  # several processes: the journal file
    study = load_study("mnist-tiny-b3000", None, tmp_path / "studies")
    check_consistent(study, 6)
    best = json.loads((tmp_path / "studies" / "mnist-tiny-b3000" / "best.json").read_text())
    assert best == json.loads(json.dumps(best_record(read_trial(study.best_trial), study)))
    assert "6 trials" in out and "3 worker process(es)" in out


def test_the_finalists_trainings_are_split_between_the_worker_processes(tmp_path):
    code, out, err = finish(start("--trials", "4", "--epochs", "1", "--subset", "128", "--jobs", "2",
                                  "--finalists", "2", "--finalist-seeds", "2", cwd=tmp_path))
    assert code == 0, err
    study = load_study("mnist-tiny-b3000", None, tmp_path / "studies")
    top = sorted((r for r in read_trials(study) if r.outcome == Outcome.COMPLETE), key=lambda r: (-r.value, r.number))[:2]
    assert top, err
    stored = {k for k in study.user_attrs if k.startswith("reevaluation:")}
    assert stored == {f"reevaluation:{r.number}:{seed}" for r in top for seed in seeds_of(r.number, 0, 2)}
    # each worker process trained its own half of them
    for worker in ("w1/2", "w2/2"):
        assert sum(line.startswith(f"{worker} finalist #") for line in err.splitlines()) == len(stored) // 2, err
    assert "<- winner" in out and json.loads((tmp_path / "studies" / "mnist-tiny-b3000" / "best.json").read_text())[
        "reevaluation"]["seeds"] == seeds_of(select_winner(study)[0].number, 0, 2)


def test_three_machines_share_a_postgres_study(postgres, tmp_path):
    url = postgres.new_database("three")
    machines = [tmp_path / f"machine{k}" for k in range(3)]
    procs = []
    for machine in machines:  # started at the same moment against a new study: the schema race
        machine.mkdir()
        procs.append(start("--storage", url, "--study", "shared", "--trials", "2", "--epochs", "1",
                           "--subset", "128", cwd=machine))
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
    written = [json.loads((d / "best.json").read_text()) for d in out_dirs]
    assert best in written  # the last to finish wrote the storage's best
    assert all(w["val_acc"] <= best["val_acc"] for w in written)


def test_a_killed_worker_heals_on_rerun_and_its_trial_runs_again_once(tmp_path):
    args = ["--trials", "1", "--epochs", "12", "--subset", "1024"]  # long enough to be killed mid-trial
    proc, seen = start(*args, cwd=tmp_path), []
    wait_for_epoch(proc, seen)
    proc.kill()  # SIGKILL: nothing runs in the worker any more, its trial stays RUNNING in the storage
    proc.wait()
    study = load_study("mnist-tiny-b3000", None, tmp_path / "studies")
    [killed] = study.get_trials(deepcopy=False)
    assert killed.state == TrialState.RUNNING

    code, out, err = finish(start(*args, "-q", cwd=tmp_path))
    assert code == 0, err
    study = load_study("mnist-tiny-b3000", None, tmp_path / "studies")
    records = read_trials(study)
    assert records[0].outcome == Outcome.INTERRUPTED and study.trials[0].state == TrialState.FAIL
    retries = [r for r in records if r.retry_of == killed.number]
    assert len(retries) == 1 and study.trials[retries[0].number].params == killed.params
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


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
    assert "study mnist-tiny-b3000:" in out  # the summary
    out_dir = tmp_path / "studies" / "mnist-tiny-b3000"
    assert (out_dir / "report.html").is_file()
    study = load_study("mnist-tiny-b3000", None, tmp_path / "studies")
    records = read_trials(study)
    assert Outcome.INTERRUPTED in {r.outcome for r in records}
    assert not [r for r in records if r.outcome == Outcome.RUNNING]


def test_a_signal_during_the_winners_retrain_stops_it_cleanly_and_trials_0_finishes_it(tmp_path):
    args = ("--trials", "1", "--epochs", "30", "--subset", "1024", "--retrain", "2")
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
    out_dir = tmp_path / "studies" / "mnist-tiny-b3000"
    target = out_dir / f"trial{json.loads((out_dir / 'best.json').read_text())['trial']}_retrain"
    assert (target / "seed0.pt").is_file() and not (target / "metrics.json").exists()
    before = [(t.number, t.state, t.value) for t in load_study("mnist-tiny-b3000", None, tmp_path / "studies").trials]

    code, out, err = finish(start(*args[2:], "--trials", "0", cwd=tmp_path))
    assert code == 0, err
    assert "did not finish: started again" in out
    assert [(t.number, t.state, t.value)
            for t in load_study("mnist-tiny-b3000", None, tmp_path / "studies").trials] == before
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and len(metrics["test_acc"]) == 2


def test_search_goes_on_through_a_database_restart(postgres, tmp_path):
    url = postgres.new_database("outage")
    proc, seen = start("--storage", url, "--study", "outage", "--trials", "2", "--epochs", "8",
                       "--subset", "1024", cwd=tmp_path), []
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
    # both trials ended on their own; with --subset 1024 the second may be screened at the cheap rung
    ended = (Outcome.COMPLETE, Outcome.PRUNED, Outcome.SCREENED, Outcome.REJECTED, Outcome.DIVERGED)
    assert sum(r.outcome in ended for r in records) >= 2, [r.outcome for r in records]


def test_a_worker_trains_with_its_share_of_the_cpu_threads(monkeypatch):
    """resolve_device gives a CPU every core; a worker's share is set after it. Set before, two workers
    on 2 cores ran 2 OpenMP threads each and trained several times slower than with one each."""
    import torch

    import nas.device
    from nas.search.workers import Job, worker_device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(nas.device, "usable_cores", lambda: 4)  # the machine's cores, whatever runs the test
    job = Job(space=TINY, budget=3000, study="s", storage="sqlite://", epochs=1, seed=0, subset=64,
              data_dir=str(DATA_DIR), device="cpu", trials=1, timeout=None, quiet=True, out=".", rungs=(), eta=3,
              index=0, workers=4, threads=1)
    before = torch.get_num_threads()
    try:
        assert worker_device(job).type == "cpu"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
