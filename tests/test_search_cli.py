import json
import shutil

import optuna
import pytest

from conftest import SHARED_BUDGET, TINY, one_line_error, run_cli, tree_hashes
from nas.bundled import find_spec
from nas.cost import Budgets
from nas.data import PREPROCESSING
from nas.space import load_space
from nas.spec import Spec, load_spec, save_spec
from nas.store.record import Outcome, read_reevaluations, read_settings, read_trials
from nas.store.winner import best_record, select_winner, winner_lead

SMALL = ["--budget", "3000", "--space", TINY, "--trials", "3", "--epochs", "2", "--subset", "256", "--device", "cpu"]


@pytest.mark.slow  # two searches in new processes, as a user runs them: the end-to-end check of `python -m nas.search`
def test_small_search_end_to_end_then_continue(tmp_path):
    first = run_cli("nas.search", *SMALL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "rejected before training" in first.stdout and "val acc" in first.stdout
    # the header comes first and says what will run where
    header = first.stderr.splitlines()[:4]
    assert header[0].startswith("new study 'mnist_tiny-b3000' in sqlite:///studies/mnist_tiny-b3000.db")
    assert "device CPU" in header[2] and "256 training / 5,000 validation images, 2 epochs per full training, 3 trials" in header[3]
    assert "this run: 0/3 trials, 0 rejected" in first.stderr  # counters of this run, from the start
    db = tmp_path / "studies" / "mnist_tiny-b3000.db"
    study = optuna.load_study(study_name="mnist_tiny-b3000", storage=f"sqlite:///{db}")
    ran = lambda: [t for t in study.get_trials() if t.state != optuna.trial.TrialState.WAITING]  # noqa: E731
    assert len(ran()) == 3  # (and the neighbours of its new bests queued, not run)
    assert read_settings(study) == {"budget": 3000, "space": "mnist_tiny", "space_file": "bundled:mnist_tiny",
                                    "epochs": 2, "train_images": 256, "rungs": [], "rung_unit": "images",
                                    "widths": "drawn", "finalists": 3,
                                    "finalist_seeds": 3,
                                    "space_hash": load_space(TINY).content_hash, "data": {"name": "mnist"},
                                    "preprocessing": {**PREPROCESSING, "class_labels": list(range(10))}}
    records = [r for r in read_trials(study) if r.outcome != Outcome.QUEUED]
    assert all(r.params > 0 and r.spec and r.macs and r.fidelity.epochs == 2 for r in records)
    complete = [r for r in records if r.outcome == Outcome.COMPLETE]
    assert complete, "3 trials of the tiny space should give at least one complete trial"
    for r in complete:
        assert r.params < 3000 and len(r.epoch_seconds) == 2 and r.fidelity.train_images == 256
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    winner, reevaluation = select_winner(study)  # the finalists' best mean over 3 new seeds each
    assert best == json.loads(json.dumps(best_record(winner, study, reevaluation)))
    assert len(best["reevaluation"]["seeds"]) == 3 and "finalists (top" in first.stdout

    again = run_cli("nas.search", *SMALL, "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # quiet
    assert len(ran()) == 6  # continued, not restarted


def test_studies_dir_from_flag_then_environment(tmp_path, cli):
    args = ["--budget", "3000", "--space", "mnist_tiny", "--trials", "1", "--epochs", "1", "--subset", "64", "-q",
            "--no-report", "--finalists", "0"]
    flag = cli("search", *args, "--studies-dir", "flagged", cwd=tmp_path)
    assert flag.returncode == 0, flag.stderr
    env = cli("search", *args, cwd=tmp_path, env={"NAS_STUDIES_DIR": str(tmp_path / "from_env")})
    assert env.returncode == 0, env.stderr
    assert (tmp_path / "flagged" / "mnist_tiny-b3000.db").is_file()
    assert (tmp_path / "from_env" / "mnist_tiny-b3000.db").is_file()
    assert not (tmp_path / "studies").exists()


@pytest.fixture(scope="module")
def stored(shared_copy):
    """A study on disk (the shared one: tiny space, 1 epoch on 128 images), so bad-input runs can show they
    leave it untouched."""
    (shared_copy / "broken.yaml").write_text("arch: [1, 2\n")
    return shared_copy


B = str(SHARED_BUDGET)  # the stored study's budget (its name: keep)


@pytest.mark.parametrize("args, message", [
    (["--budget", "-3"], "positive integer"),
    (["--budget", "abc"], "positive integer"),
    (["--budget", "0"], "positive integer"),
    (["--budget", "8000", "--space", "nowhere.yaml"], "no such search-space file"),
    (["--budget", "8000", "--space", "broken.yaml"], "not a readable YAML"),
    (["--budget", "8000", "--data-dir", "no/such/dir"], "does not exist"),
    (["--budget", "8000", "--storage", "notaurl"], "bad storage URL"),
    (["--budget", "8000", "--storage", "sqlite:///no/such/dir/x.db"], "bad storage URL"),
    (["--budget", "8000", "--storage", "sqlite:///studies/keep.db", "--study", "keep"], f"was run with budget {B}"),
    (["--budget", B, "--study", "keep"], "was run with space mnist_tiny"),
    (["--budget", B, "--space", TINY, "--study", "keep", "--epochs", "3", "--subset", "128"], "was run with epochs 1"),
    (["--budget", B, "--space", TINY, "--study", "keep", "--epochs", "1", "--subset", "64"],
     "was run with train_images 128"),
])
def test_bad_input_is_one_line_and_damages_nothing(stored, cli, args, message):
    before = tree_hashes(stored)
    extra = [] if "--subset" in args else ["--subset", "64"]
    assert message in one_line_error(cli("search", *args, "--trials", "1", *extra, cwd=stored))
    assert tree_hashes(stored) == before


def test_corrupt_data_is_one_line(data_dir, tmp_path, cli):
    shutil.copytree(data_dir / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    stderr = one_line_error(cli("search", "--budget", "8000", "--data-dir", str(tmp_path), cwd=tmp_path))
    assert "corrupt" in stderr


def test_a_reference_is_drawn_by_the_space_that_holds_it():
    from nas.bundled import reference_files
    from nas.space import load_space
    from nas.spec import load_spec

    final = load_spec(reference_files()[-1])
    params, moved = load_space("mnist").params_for(final)
    assert moved == {"weight_decay": (0.0, 1e-06)}  # 0 lies below the space's log range: its nearest value
    drawn = load_space("mnist").spec_from_params(params)
    assert drawn.arch == final.arch and drawn.train.weight_decay == 1e-06
    assert load_space("mnist_tiny").params_for(final) is None  # 16-channel convs: not in the tiny space
    assert load_space("mnist").params_for(load_spec(reference_files()[2])) is None  # a constant LR: not offered


@pytest.mark.parametrize("extra, expected", [
    # the model found at 8,000 (the one found at 4,000 widened to fill 8,000: that design once), then the one
    # reference under 8,000 parameters that the default space can draw
    ([], ["found/b8000", "4_final"]),
    (["--no-warm-start"], []),
    (["--no-warm-start", "--warm-start", "FINAL"], ["FINAL"]),
])
def test_warm_start_enqueues_exactly_the_designs_that_fit(tmp_path, cli, extra, expected):
    from nas.bundled import reference_files

    final = str(reference_files()[-1])
    extra = [final if e == "FINAL" else e for e in extra]
    expected = [final if e == "FINAL" else e for e in expected]
    result = cli("search", "--budget", "8000", "--trials", "1", "--epochs", "1", "--subset", "64", "-q",
                 "--no-report", "--finalists", "0", "--neighbours", "0", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mnist-b8000", storage=f"sqlite:///{tmp_path}/studies/mnist-b8000.db")
    records = read_trials(study)
    assert [r.warm_start for r in records if r.warm_start] == expected
    # the first trial trains the first known design exactly when one was queued
    first = load_spec(find_spec(expected[0])).arch if expected else None
    assert (Spec.from_dict(records[0].spec).arch == first) == bool(expected)


def test_widen_best_follows_a_new_best_with_its_widest_copy(tmp_path, cli):
    """A small design with room in the budget becomes the best; the next trial is its widest copy."""
    from nas.bundled import reference_files
    from nas.cost import count_params
    from nas.model import build
    from nas.search.warm_start import narrowed, widened

    space = load_space(TINY)
    small, _, _ = narrowed(load_spec(reference_files()[-1]), space, 1200)  # 4_final at 1,006 parameters
    (tmp_path / "small.json").write_text(json.dumps(small.to_dict()))
    result = cli("search", "--space", TINY, "--budget", "5000", "--no-warm-start", "--warm-start", "small.json",
                 "--widen-best", "--neighbours", "0", "--trials", "2", "--epochs", "1", "--subset", "64",
                 "--rungs", "none", "--finalists", "0", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    wide, factor, params = widened(small, space, 5000)
    assert "followed by its widest copy (--widen-best)" in result.stderr  # the header says it
    assert f"trial 0 is the new best, wrote studies/mnist_tiny-b5000/best.json; queued trial 0 at widths " \
           f"x{factor:.2f}" in result.stderr
    study = optuna.load_study(study_name="mnist_tiny-b5000", storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b5000.db")
    first, second = read_trials(study)
    assert first.warm_start == "small.json" and second.warm_start == f"trial 0 at widths x{factor:.2f}"
    assert Spec.from_dict(second.spec).arch == wide.arch and count_params(build(wide)) == params > 1.1 * 1006


def test_filled_widths_train_the_warm_start_widened_and_a_study_keeps_them(tmp_path, cli):
    """`--widths filled`: said in the header, stored in the study, kept when it is continued without the flag
    and refused with the other value (one line, exit 2, nothing run); a small design is trained widened."""
    from nas.bundled import reference_files
    from nas.search.warm_start import filled, narrowed

    space = load_space(TINY)
    small, _, _ = narrowed(load_spec(reference_files()[-1]), space, 1200)  # 4_final at 1,006 parameters
    (tmp_path / "small.json").write_text(json.dumps(small.to_dict()))
    args = ["search", "--space", TINY, "--budget", "5000", "--no-warm-start", "--epochs", "1", "--subset", "64",
            "--rungs", "none", "--finalists", "0", "--neighbours", "0"]
    result = cli(*args, "--warm-start", "small.json", "--widths", "filled", "--trials", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "widths: every candidate filled to the budgets (--widths filled)" in result.stderr
    report = (tmp_path / "studies" / "mnist_tiny-b5000" / "report.html").read_text()
    assert "filled: every candidate trained as its widest copy within the budgets" in report
    args.append("--no-report")
    study = optuna.load_study(study_name="mnist_tiny-b5000",
                              storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b5000.db")
    [record] = read_trials(study)
    wide, factor, params = filled(small, space, 5000)
    # the design widened (its weight decay 0 trains as the space's nearest, 1e-6: `moved`, as any warm start)
    assert Spec.from_dict(record.spec).arch == wide.arch and record.params == params > 4000 and factor > 1
    assert record.warm_start == "small.json" and study.trials[0].user_attrs["widths_factor"] == factor
    assert read_settings(study)["widths"] == "filled"
    refused = cli(*args, "--widths", "drawn", "--trials", "1", cwd=tmp_path)
    assert one_line_error(refused) and "was run with --widths filled, not drawn" in refused.stderr
    again = cli(*args, "--trials", "1", "--sampler", "random", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    first, second = read_trials(study)  # a random draw, filled as the first was
    drawn = space.spec_from_params(study.trials[1].params)
    assert Spec.from_dict(second.spec) == filled(drawn, space, 5000)[0]


def test_a_new_best_is_followed_by_its_neighbours(tmp_path, cli):
    """--neighbours 2: the first trial becomes the best; the next is the first of its two neighbours, queued by
    name and trained in full, never screened out at the cheap rungs; the other is left queued, and said so."""
    from nas.search.neighbours import neighbours

    args = ["search", "--space", TINY, "--budget", "5000", "--no-warm-start", "--trials", "2", "--epochs", "1",
            "--subset", "1500", "--finalists", "0", "--no-report", "--seed", "3"]  # 1,500: rungs of 300 and 750
    result = cli(*args, "--neighbours", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "each new best is followed by 2 of its neighbours, one parameter moved one step" in result.stderr
    study = optuna.load_study(study_name="mnist_tiny-b5000", storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b5000.db")
    first, second, *waiting = study.trials
    (name, params, _), (other, _, _) = neighbours(first, load_space(TINY), Budgets(5000), 2, seed=3)
    assert name.startswith("trial 0, ") and f"trial 0 is the new best, wrote studies/mnist_tiny-b5000/best.json; " \
                                           f"queued {name}; {other}" in result.stderr
    assert second.params == params != first.params
    drawn, neighbour, *_ = read_trials(study)
    # both climbed the two cheap rungs; the neighbour, never screened out there, trained in full
    assert len(drawn.rungs) == len(neighbour.rungs) == 2 and neighbour.warm_start == name
    assert neighbour.outcome == Outcome.COMPLETE and len(neighbour.curve) == 1
    assert waiting[0].user_attrs["warm_start"] == other and waiting[0].state == optuna.trial.TrialState.WAITING
    assert f"{len(waiting)} known design(s) queued, not trained yet" in result.stdout  # the summary
    # by default: none without a warm start (the first bests are weak draws), 2 where one is queued
    off = cli(*args, "--study", "off", cwd=tmp_path)
    assert off.returncode == 0 and "neighbours" not in off.stderr and "queued" not in off.stderr
    save_spec(next(load_space(TINY).lowest_specs()), tmp_path / "low.json")
    warm = cli(*args, "--trials", "0", "--warm-start", "low.json", "--study", "warm", cwd=tmp_path)  # (queued only)
    assert warm.returncode == 0 and "each new best is followed by 2 of its neighbours" in warm.stderr


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_a_search_under_a_tight_budget_starts_from_the_narrowed_reference(tmp_path, cli):
    args = ("search", "--space", "mnist", "--budget", "4000", "--trials", "3", "--epochs", "1", "--subset", "64",
            "--no-report", "--finalists", "0", "--neighbours", "0")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the model found at this budget, the one found at 2,000 widened to fill it, the hand-made design narrowed to fit
    assert ("warm start: found/b4000; found/b2000 at widths x1.54; 4_final at widths x0.68 (weight_decay 0.0 -> 1e-06"
            in result.stderr)
    study = optuna.load_study(study_name="mnist-b4000", storage=f"sqlite:///{tmp_path}/studies/mnist-b4000.db")
    found, wide, record = read_trials(study)
    assert found.warm_start == "found/b4000" and found.params == 3904
    assert wide.warm_start == "found/b2000 at widths x1.54" and 1842 < wide.params == 3758 < 4000
    assert record.warm_start == "4_final at widths x0.68" and record.params == 3764
    assert record.code.startswith("v c4-12 T4 c12-12-12 gapc bn d.05 | sgd .05 oc b128")
    # continued: the designs ran, so they are not queued again, and the header says so
    again = cli(*args[:6], "1", *args[7:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "warm start: found/b4000 (run before: not queued again); found/b2000 at widths x1.54 (run before: not " \
           "queued again); 4_final at widths x0.68 (weight_decay 0.0 -> " \
           "1e-06: the nearest the space draws; run before: not queued again)" in again.stderr
    study = optuna.load_study(study_name="mnist-b4000", storage=f"sqlite:///{tmp_path}/studies/mnist-b4000.db")
    assert [r.warm_start for r in read_trials(study)] == ["found/b4000", "found/b2000 at widths x1.54",
                                                          "4_final at widths x0.68", None]


def test_a_named_design_that_does_not_fit_is_refused(tmp_path, cli):
    from nas.bundled import reference_files

    before = tree_hashes(tmp_path)
    line = one_line_error(cli("search", "--budget", "7000", "--warm-start", str(reference_files()[-1]),
                              "--trials", "1", "--subset", "64", cwd=tmp_path))
    assert "7,416 parameters >= budget 7,000" in line and tree_hashes(tmp_path) == before


@pytest.mark.slow  # a search, then the winner retrained and exported: about 8 s on 2 cores
def test_search_then_retrain_the_winner_in_one_command(tmp_path, cli):
    args = ["--budget", "3000", "--space", TINY, "--trials", "2", "--epochs", "1", "--subset", "128", "-q",
            "--no-report", "--finalists", "0", "--retrain", "1"]
    result = cli("search", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    out = tmp_path / "studies" / "mnist_tiny-b3000" / f"trial{best['trial']}_retrain"
    metrics = json.loads((out / "metrics.json").read_text())  # what nas retrain writes, for the winner's spec
    assert metrics["spec"] == best["spec"] and metrics["seeds"] == [0] and metrics["test_images"] == 10_000
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.int8.onnx", "model.onnx", "model.pt2",
                                                     "seed0.pt"]
    assert "test accuracy, final epoch of 1, 1 seed(s)" in result.stdout


@pytest.mark.slow  # a search, its finalists and a retrain: about 10 s on 2 cores
def test_trials_0_only_finishes_the_finalists_and_the_retrain_of_a_stopped_run(tmp_path, cli):
    # a run stopped after its trials (here: one that had no finalists), continued with --trials 0
    first = cli("search", "--budget", "3000", "--space", TINY, "--trials", "3", "--epochs", "1", "--subset", "128",
                "-q", "--no-report", "--finalists", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "studies" / "mnist_tiny-b3000.db"
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="mnist_tiny-b3000",
                                                                        storage=f"sqlite:///{db}").trials]
    rest = cli("search", "--budget", "3000", "--space", TINY, "--trials", "0", "--epochs", "1", "--subset", "128",
               "--no-report", "--finalists", "2", "--finalist-seeds", "2", "--retrain", "1", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert "0 trials" in rest.stderr.splitlines()[3] and "this run: 0 trials" in rest.stdout
    study = optuna.load_study(study_name="mnist_tiny-b3000", storage=f"sqlite:///{db}")
    assert [(t.number, t.state, t.value) for t in study.trials] == before  # no trial started, none changed
    winner, reevaluation = select_winner(study)
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    assert best["trial"] == winner.number and len(best["reevaluation"]["seeds"]) == 2
    assert winner_lead(study).sentence() in rest.stdout  # the finalists' table says how far the winner leads
    metrics = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / f"trial{winner.number}_retrain"
                          / "metrics.json").read_text())
    assert metrics["spec"] == best["spec"] and metrics["seeds"] == [0]
    # the command that line gives: more seeds of each finalist, the winner named again from all of them
    more = cli("search", "--budget", "3000", "--space", TINY, "--trials", "0", "--epochs", "1", "--subset", "128",
               "--no-report", "--finalists", "2", "--finalist-seeds", "4", "-q", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert [len(a.val_accs) for a in read_reevaluations(study).values()] == [4, 4]
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    assert best["trial"] == select_winner(study)[0].number and len(best["reevaluation"]["seeds"]) == 4
