"""The live progress: the ETA (never negative, the finalists included, "unknown" until it can tell) and the
status line fitted to the terminal (fields left out in a fixed order, "\\r" only on a terminal)."""

import io
import os
import shutil
import sys

import optuna
import pytest

from nas.fidelity import Fidelity
from nas.progress import KEEP, StatusLine, fit, format_duration, format_left, time_left
from nas.search.objective import BEST, ELAPSED, FIDELITY, LOSS, PARAMS, REJECTED, RUNG, TRIALS, VAL, Progress
from nas.search.workers import Job, finalist_trainings

LADDER = (Fidelity(2, 11_000), Fidelity(4, 27_500), Fidelity(15, 55_000))
DROP_ORDER = ["study best", "rejected", "(2 epochs x 11,000 images)", "loss", "params", "[", "this run", "val",
              "rung 1/3"]


class Clock:
    """time.perf_counter for nas.search.objective, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("nas.search.objective.time.perf_counter", c)
    return c


def progress(clock, trials=4, timeout=None, finalists=0) -> Progress:
    p = Progress(True, trials, timeout, 15, finalist_trainings=finalists, start=clock.now)
    p.ladder = LADDER
    return p


def climb(p: Progress, clock: Clock, number: int, rungs: int, seen: list[float]) -> None:
    """Trial `number` trains the first `rungs` fidelities of LADDER (1 s per 10,000 images), then ends."""
    for rung in LADDER[:rungs]:
        for _ in range(rung.epochs):
            seconds = rung.train_images / 10_000
            clock.now += seconds
            p.epoch_done(number, seconds, rung)
            seen.append(p.seconds_left())
    p.trial_done(number, rejected=rungs == 0)
    seen.append(p.seconds_left())


def test_helpers():
    assert format_left(None) == "unknown" and format_left(65) == "1m05s" and format_left(-5) == "0m00s"
    assert format_duration(7380) == "2h03m" and format_duration(-1) == "0m00s"
    assert time_left(10, 0, 5) is None and time_left(10, 2, -3) == 0 and time_left(10, 2, 3) == 15


def test_eta_never_negative_through_a_run_that_climbs_the_rungs(clock):
    p = progress(clock, trials=4)
    assert p.seconds_left() is None and p.eta() == "unknown"  # nothing timed yet
    seen: list[float] = []
    # screened at rung 1, rejected, then two trials that climb every rung to the full training (the old ETA
    # counted their 6 rung epochs against the 15 full ones and went negative)
    for number, rungs in enumerate((1, 0, 3, 3)):
        climb(p, clock, number, rungs, seen)
    assert all(s is not None and s >= 0 for s in seen), seen
    assert seen[-2:] == [0, 0] and p.eta() == "0m00s"  # the last epoch trained, then the last trial ended
    assert all(s > 0 for s in seen[:-2]), "0m00s only when nothing is left"


def test_eta_in_the_full_training_counts_its_rest(clock):
    p = progress(clock, trials=1)
    for rung in LADDER:  # the last trial, at its full training's epoch 1: 14 epochs x 5.5 s left
        for _ in range(rung.epochs if rung != LADDER[-1] else 1):
            clock.now += rung.train_images / 10_000
            p.epoch_done(0, rung.train_images / 10_000, rung)
    assert p.seconds_left() == pytest.approx(14 * 5.5)


def test_eta_includes_the_finalists(clock):
    without, with_finalists = progress(clock, trials=2), progress(clock, trials=2, finalists=3)
    for p in (without, with_finalists):
        climb(p, clock, 0, 3, [])
    assert with_finalists.seconds_left() == pytest.approx(without.seconds_left() + 3 * 15 * 5.5)
    for p in (without, with_finalists):
        climb(p, clock, 1, 3, [])
    assert without.eta() == "0m00s"  # the search is done: only the finalists are left
    assert with_finalists.seconds_left() == pytest.approx(3 * 15 * 5.5) and with_finalists.eta() in ("4m07s", "4m08s")


def test_eta_unknown_until_it_can_tell(clock):
    assert progress(clock, trials=None).eta() == "unknown"  # unlimited trials, no --timeout
    p = progress(clock, trials=None, timeout=600)
    assert p.seconds_left() == 600  # the timeout alone tells
    clock.now += 700
    assert p.seconds_left() == 0
    assert progress(clock, trials=None, timeout=600, finalists=2).eta() == "unknown"  # the finalists' time is not
    assert progress(clock, trials=0).seconds_left() == 0  # nothing to do: nothing left, timed or not


def test_a_workers_share_of_the_finalists():
    job = Job(space="", budget=1, study="", storage="", epochs=1, seed=0, subset=None, data_dir="", device="cpu",
              trials=None, timeout=None, quiet=True, out="", finalists=3, finalist_seeds=3, workers=2)
    assert [finalist_trainings(Job(**{**vars(job), "index": k})) for k in range(2)] == [5, 4]
    assert finalist_trainings(Job(**{**vars(job), "workers": 1, "finalists": 0})) == 0


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def screen(monkeypatch, columns: int, tty: bool = True) -> Terminal:
    out = Terminal(tty)
    monkeypatch.setattr(sys, "stderr", out)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((columns, 24)))
    return out


def search_line(clock, label="") -> tuple[Progress, list]:
    p = Progress(False, 50, None, 15, label, finalist_trainings=3, start=clock.now)
    p.ladder = LADDER
    climb(p, clock, 13, 1, [])  # a trial screened at rung 1: this run's rate
    p.done, p.rejected, p.best, clock.now = 12, 3, "98.76% (#7)", p.start + 65
    fields = [(KEEP, " trial 14"), (PARAMS, " (7,654 params)"), (RUNG, " rung 1/3"),
              (FIDELITY, " (2 epochs x 11,000 images)"), (KEEP, " epoch 2/2"), (LOSS, " loss 0.123"),
              (VAL, " val 97.50%")]
    return p, fields


@pytest.mark.parametrize("columns", [80, 40])
def test_lines_fit_the_terminal_and_drop_fields_in_order(monkeypatch, clock, columns):
    out = screen(monkeypatch, columns)
    p, fields = search_line(clock, "w1/2 ")
    p.show(fields)
    p.show([(KEEP, " trial 14 is the new best"), (BEST, ", wrote studies/x/best.json")], final=True)
    p.show("a plain string " * 10)
    written = out.getvalue()
    assert written.startswith("\r\x1b[K")
    lines = [part for chunk in written.split("\n") for part in chunk.split("\r\x1b[K") if part]
    assert len(lines) == 3 and all(len(line) < columns for line in lines), lines
    assert "w1/2" in lines[0] and "trial 14" in lines[0] and "epoch 2/2" in lines[0] and "| ETA " in lines[0]
    assert lines[2].endswith("…") and not lines[2].endswith(" …")
    assert written.count("\n") == 1  # the final line only


def test_fields_go_in_the_documented_order(monkeypatch, clock):
    p, fields = search_line(clock)
    full = [(ELAPSED, "[1m05s]"), (TRIALS, " this run: 12/50 trials"), (REJECTED, ", 3 rejected"),
            (BEST, " | study best 98.76% (#7)"), (KEEP, " |"), *fields, (KEEP, " | ETA 9m99s")]
    whole = fit(full, 10**6)
    assert whole == ("[1m05s] this run: 12/50 trials, 3 rejected | study best 98.76% (#7) | trial 14 (7,654 params) "
                     "rung 1/3 (2 epochs x 11,000 images) epoch 2/2 loss 0.123 val 97.50% | ETA 9m99s")
    gone = []
    for width in range(len(whole), 0, -1):
        line = fit(full, width)
        assert len(line) <= width
        gone += [text for text in DROP_ORDER if text not in line and text not in gone]
        if line.endswith("…"):
            break
    assert gone == DROP_ORDER
    assert fit(full, 40) == "trial 14 rung 1/3 epoch 2/2 | ETA 9m99s"
    assert fit(full, 30) == "trial 14 epoch 2/2 | ETA 9m99s"  # what is always kept
    assert fit(full, 20) == "trial 14 epoch 2/2…"


def test_a_resize_is_honoured(monkeypatch, clock):
    out = screen(monkeypatch, 200)
    p, fields = search_line(clock)
    p.show(fields)
    assert "study best" in out.getvalue()
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((60, 24)))
    p.show(fields)
    assert len(out.getvalue().rsplit("\r\x1b[K", 1)[1]) < 60


def test_plain_whole_lines_when_not_a_terminal(monkeypatch, clock):
    out = screen(monkeypatch, 40, tty=False)
    p, fields = search_line(clock)
    p.show(fields)
    p.show("trial 15 rejected", final=True)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue() and len(lines) == 2
    assert lines[0].startswith("[1m05s] this run: 12/50 trials, 3 rejected | study best 98.76% (#7) | trial 14 ")
    assert lines[0].endswith(f" val 97.50% | ETA {p.eta()}") and len(lines[0]) > 150


def test_quiet_shows_nothing(monkeypatch):
    out = screen(monkeypatch, 80)
    StatusLine(quiet=True).show("anything")
    assert out.getvalue() == ""


def test_a_small_search_names_its_objective_and_prints_plain_lines(tmp_path, cli):
    result = cli("search", "--budget", "3000", "--space", "mnist_tiny", "--trials", "2", "--epochs", "1", "--subset",
                 "64", "--no-report", "--finalists", "1", "--finalist-seeds", "1", "--no-warm-start", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # not a terminal: whole lines
    etas = [line.rsplit("ETA ", 1)[1] for line in result.stderr.splitlines() if "ETA " in line]
    assert etas and not [eta for eta in etas if eta.startswith("-") or eta == "?"], result.stderr
    study = optuna.load_study(study_name="mnist_tiny-b3000",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'mnist_tiny-b3000.db'}")
    assert study.metric_names == ["validation accuracy (%)"]  # optuna-dashboard's name for the objective
