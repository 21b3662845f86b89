"""The benchmark scripts that measure the search (benchmarks/fidelity_rank.py, time_to_target.py and
median_rule.py): their own logic on crafted rows and studies; what they measure is in docs/results.md."""

import argparse
import importlib.util
from pathlib import Path

import optuna
import pytest
import torch

from conftest import ROOT
from nas.bench import timing
from nas.spec import load_spec
from nas.store.record import Outcome, read_trials
from nas.train import train


def test_the_rank_table_lists_each_cheap_fidelity_every_candidate_holds_in_images_and_in_steps(capsys):
    """benchmarks/fidelity_rank.py's table, on rows as the script writes them: a fidelity that one candidate lacks
    (measured for the others only) is left out, not a crash; one counted in steps costs its mean images."""
    fidelity_rank = benchmark("fidelity_rank")
    full = [90.0, 95.0, 97.0, 98.0]
    rows = [{"full_curve": [score - 10 + i, score], "train_images": 1000, "1x100": score, "1x100s": 100 - score,
             "1x100s_images": 50 * (i + 1), "1x300": score} for i, score in enumerate(full)]
    del rows[0]["1x300"]
    fidelity_rank.report(rows, 2, [(1, 100), (1, 300)])
    table = {line[:34].strip(): line[34:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert table == {"1 epochs x 100 images": ["5.0%", "1.000", "1.000"],  # 100 of 2 x 1,000 images
                     "1 epochs x 100 images (steps)": ["6.2%", "-1.000", "-1.000"],  # 125 images on average
                     "epoch 1 of the full run": ["50.0%", "1.000", "1.000"]}


def benchmark(name: str):
    """A script of benchmarks/, loaded as a module."""
    found = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def test_time_to_target_runs_the_search_of_its_own_checkout_with_absolute_paths(tmp_path, monkeypatch):
    """From another folder (a worktree's script run elsewhere), the search still runs the script's own checkout:
    the command runs in ROOT, so every path the user gave relative to where they stand is made absolute."""
    time_to_target = benchmark("time_to_target")
    assert time_to_target.ROOT == ROOT
    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    args = argparse.Namespace(budget=8000, cap_minutes=45, seed=2, device="auto", data_dir="data", jobs=2,
                              space="mnist_focused", rungs=["2x11000", "5x55000"], rungs_in="steps",
                              sampler="random", startup_trials=None, promote_after=9, max_macs="1.2M",
                              widen_best=True, neighbours=0, widths="filled")
    command, study, storage, flags = time_to_target.search_command("new-no-warm", args, Path("out/seed2"))
    after = lambda flag: command[command.index(flag) + 1]  # noqa: E731
    assert (after("--studies-dir"), after("--data-dir")) == (str(here / "out/seed2"), str(here / "data"))
    assert storage == after("--storage") == str(here / "out/seed2/study.journal") and study == "ttt-new-no-warm"
    assert flags == ["--no-warm-start", "--jobs", "2", "--space", "mnist_focused", "--rungs", "2x11000", "5x55000",
                     "--rungs-in", "steps", "--sampler", "random", "--promote-after", "9", "--max-macs", "1.2M",
                     "--widen-best", "--neighbours", "0", "--widths", "filled"]  # a flag without a value; a 0 given
    assert command[-len(flags):] == flags
    (tmp_path / "mine.yaml").write_text("name: mine\n")  # a space file named relative to here: made absolute
    args.space = "mine.yaml"
    flags = time_to_target.search_command("new", args, Path("o")).flags
    assert flags[flags.index("--space") + 1] == str(here / "mine.yaml")
    args.sampler, args.startup_trials = "tpe", 25
    flags = time_to_target.search_command("new", args, Path("o")).flags
    at = flags.index("--sampler")
    assert flags[at:at + 4] == ["--sampler", "tpe", "--startup-trials", "25"]
    old = time_to_target.search_command("old", args, Path("o"))  # the old variant: its own space, one process
    assert old.flags == ["--space", "mnist_classic", "--rungs", "none", "--no-warm-start", "--neighbours", "0"]
    assert old.storage == f"sqlite:///{here / 'o' / 'study.db'}"


def test_the_speed_probe_trains_the_probe_spec_on_one_thread_and_leaves_the_threads_as_they_were(data_dir,
                                                                                                 monkeypatch):
    time_to_target = benchmark("time_to_target")
    threads, seen = torch.get_num_threads(), []

    def watched(spec, data, **kwargs):  # nas.bench.timing's trainer, as the probe calls it
        seen.append((spec.code, torch.get_num_threads()))
        return train(spec, data, **kwargs)

    monkeypatch.setattr(timing, "train", watched)
    probe = time_to_target.speed_probe(data_dir, images=256, epochs=2)
    assert probe["spec"] == "results/b8000_search3/best.json" and probe["train_images"] == 256
    assert len(probe["epoch_seconds"]) == 2 and all(s > 0 for s in probe["epoch_seconds"])
    # one design for every probe recorded, whatever found/b8000 is now: the one it was until 2026-12-05
    code = load_spec(ROOT / "benchmarks" / "results" / "b8000_search3" / "found_b8000.json").code
    assert seen == [(code, 1), (code, 1)] and torch.get_num_threads() == threads  # the warm-up, then the timed run


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_time_to_target_records_the_best_complete_trial_that_ended_within_the_cap(crafted):
    """benchmarks/time_to_target.py's `best_within`: a trial that ended after the cap does not count; `reached`:
    the first complete trial at or above the target."""
    time_to_target = benchmark("time_to_target")
    records = read_trials(crafted)
    complete = sorted((r for r in records if r.outcome == Outcome.COMPLETE), key=lambda r: r.finished)
    assert len(complete) >= 2 and complete[-1].value != complete[0].value
    started = min(r.started for r in records if r.started is not None)
    ended = lambda r: (r.finished - started).total_seconds()  # noqa: E731
    best = time_to_target.best_within(records, started, ended(complete[-1]))
    top = max(complete, key=lambda r: r.value)
    assert (best["trial"], best["value"], best["code"]) == (top.number, top.value, top.code)
    assert time_to_target.best_within(records, started, ended(complete[0]))["trial"] == complete[0].number
    assert time_to_target.best_within(records, started, ended(complete[0]) - 1e-3) is None
    assert time_to_target.reached(records, top.value) == min(r.finished for r in complete if r.value >= top.value)
    assert time_to_target.reached(records, complete[0].value) <= complete[0].finished
    assert time_to_target.reached(records, top.value + 0.01) is None
    assert time_to_target.poll("no-such-study", str(ROOT / "no-such-folder" / "study.journal")) == []
    spent = time_to_target.worker_time(records, started)  # the crafted rungs took 0.2 s each, epochs 0.5 s
    assert spent["cheap_rung_seconds"] == round(0.2 * sum(len(r.rungs) for r in records))
    trained = [r for r in records if r.epoch_seconds]
    assert spent["full_training_seconds"] == round(0.5 * sum(len(r.epoch_seconds) for r in trained)) > 0
    assert [t["trial"] for t in spent["full_trainings"]] == sorted(r.number for r in trained)
    assert {t["outcome"] for t in spent["full_trainings"]} >= {"complete", "pruned"}
    assert all(t["epochs"] >= 1 and t["start_minute"] >= 0 for t in spent["full_trainings"])


def test_the_median_rule_replay_runs_the_search_pruner_on_recorded_trainings(crafted_db, tmp_path, capsys):
    """benchmarks/median_rule.py: the search's own pruner replayed on curves in a given order (STARTUP/WARMUP as
    `nas.search.pruner.RungPruner` takes them), and the complete full trainings a study holds kept in a file once."""
    median_rule = benchmark("median_rule")
    curves = [[90.0, 91.0, 99.0], [95.0, 96.0, 97.0], [10.0, 11.0, 12.0]]
    assert median_rule.replay(curves, [0, 1, 2], 1, 1) == [None, None, 1]  # the last epoch is never judged
    assert median_rule.replay(curves, [0, 1, 2], 1, 2) == [None, None, 2]
    assert median_rule.replay(curves, [0, 1, 2], 3, 1) == [None, None, None]  # 2 complete: the rule waits for 3
    assert median_rule.replay(curves, [2, 0, 1], 1, 1) == [None, None, None]  # judged against a weak one only
    assert median_rule.setting("2/12") == (2, 12)
    with pytest.raises(argparse.ArgumentTypeError):
        median_rule.setting("5")

    lines = median_rule.study_curves(f"sqlite:///{crafted_db}")
    complete = [r for r in read_trials(optuna.load_study(study_name="crafted", storage=f"sqlite:///{crafted_db}"))
                if r.outcome == Outcome.COMPLETE]
    assert [c["trial"] for c in lines] == [r.number for r in complete] and len(lines) >= 3
    assert all(c["curve"] == [r.curve[e] for e in (1, 2, 3)] for c, r in zip(lines, complete))
    kept = tmp_path / "curves.jsonl"
    assert median_rule.add_curves(kept, lines) == len(lines) and median_rule.add_curves(kept, lines) == 0
    median_rule.report(median_rule.read_curves(kept), [(1, 1), (99, 1)], orders=5, seed=0, time_shares=(1.0, 0.01))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{len(lines)} full trainings of 3 epochs from 1 searches")
    assert out[2].split() == ["1:", "+1.00", "2:", "+1.00"]  # every crafted curve is its final score shifted
    rows = {line[:16].strip(): line[16:].split() for line in out[5:]}
    assert rows["no rule"] == ["0%", "0%", "0%", "100%", "0%"]  # in 1 % of the time not one training ends
    assert rows["1/1"][2:4] == ["0%", "100%"]  # the best is above every median: never stopped
    assert rows["99/1"] == rows["no rule"]  # never enough complete candidates: nothing stopped
    two, second_completes = [[1.0, 2.0], [3.0, 4.0]], [1, None]  # the first stopped after 1 epoch
    assert median_rule.best_in_time(two, [1, 0], second_completes, 2) == 4.0
    assert median_rule.best_in_time(two, [0, 1], second_completes, 2) is None  # 1 + 2 epochs: over the time
    assert median_rule.best_in_time(two, [0, 1], second_completes, 3) == 4.0
