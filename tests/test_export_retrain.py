"""study -> spec file (nas.export) -> checkpoints, ONNX and torch.export programs (nas.retrain) -> nas.evaluate;
and the hand-made reference ladder in search_spaces/reference/."""

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import onnxruntime
import optuna
import pytest
import torch
from plotly.offline import get_plotlyjs

from conftest import ROOT, SHARED_BUDGET, SHARED_STUDY, one_line_error, tree_hashes
from nas import build, count_macs, count_params, load_spec
from nas.cost import costs
from nas.bundled import found_files, reference_files
from nas.checkpoint import FORMAT as CHECKPOINT_FORMAT
from nas.data import load_train_test
from nas.fidelity import Fidelity
from nas.errors import UsageError
from nas.quantize import onnx_accuracy
from nas.retrain import refuse_over_budget
from nas.store.record import Outcome, read_trial, record_candidate, record_outcome
from nas.store.winner import best_record, select_winner
from nas.spec import Spec

REFERENCE = reference_files()
FINAL = REFERENCE[-1]
FOUND = found_files()


@pytest.fixture(scope="module")
def tiny_study(shared_copy):
    """A real study on disk (the shared one: tiny space, 128 images, 1 epoch, every trial under the budget)."""
    study = optuna.load_study(study_name=SHARED_STUDY, storage=f"sqlite:///{shared_copy}/studies/{SHARED_STUDY}.db")
    assert study.best_trials, "the tiny study should have a completed trial"
    return shared_copy, study


def test_export_writes_the_winner_and_trial_n(tiny_study, cli):
    root, study = tiny_study
    best = root / "studies" / SHARED_STUDY / "best.json"
    written_by_search = json.loads(best.read_text())
    best.unlink()  # the search wrote one already: show that export writes the same
    result = cli("export", "--study", SHARED_STUDY, cwd=root)
    assert result.returncode == 0, result.stderr
    winner, reevaluation = select_winner(study)
    assert reevaluation is not None and len(reevaluation.val_accs) == 3  # the search re-evaluated its finalists
    assert json.loads(best.read_text()) == json.loads(json.dumps(best_record(winner, study, reevaluation)))
    assert json.loads(best.read_text()) == written_by_search
    spec = load_spec(best)
    assert count_params(build(spec)) == json.loads(best.read_text())["params"]

    other = study.trials[0]
    result = cli("export", "--study", SHARED_STUDY, "--trial", "0", "--out", "picked/zero.json", cwd=root)
    assert result.returncode == 0, result.stderr
    record = json.loads((root / "picked" / "zero.json").read_text())
    assert record["trial"] == 0 and record["spec"] == read_trial(other).spec and record["val_acc"] == other.value


def test_export_refuses_what_it_cannot_export(tmp_path, cli):
    storage = f"sqlite:///{tmp_path}/api.db"
    study = optuna.create_study(study_name="api", storage=storage, direction="maximize")
    trial = study.ask()
    record_candidate(trial, load_spec(FINAL), 7416, 1, Fidelity(1, 128))
    record_outcome(trial, Outcome.PRUNED)
    trial.report(50.0, 1)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    (tmp_path / "keep.json").write_text("precious\n")
    before = tree_hashes(tmp_path)
    cases = [
        (["--study", "api", "--storage", storage], "no completed trial"),
        (["--study", "api", "--storage", storage, "--trial", "0"], "did not complete (pruned)"),
        (["--study", "api", "--storage", storage, "--trial", "7"], "has no trial 7"),
        (["--study", "nothere"], "no study 'nothere'"),
        (["--study", "api", "--storage", storage, "--trial", "x"], "invalid int"),
    ]
    for args, message in cases:
        assert message in one_line_error(cli("export", *args, "--out", "keep.json", cwd=tmp_path))
    assert tree_hashes(tmp_path) == before


@pytest.fixture(scope="module")
def retrained(tiny_study, shared_study):
    """The tiny study's winner retrained: 256 images, 1 epoch, 2 seeds (default --out, next to the spec);
    the shared study's own retrain, and what it printed."""
    root, _ = tiny_study
    spec_file = root / "studies" / SHARED_STUDY / "best.json"
    out = root / "studies" / SHARED_STUDY / "best_retrain"
    return spec_file, out, shared_study.retrain


def test_retrain_writes_checkpoints_and_metrics(retrained):
    spec_file, out, result = retrained
    spec = load_spec(spec_file)
    params, macs = count_params(build(spec)), count_macs(build(spec))
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.int8.onnx", "model.onnx", "model.pt2",
                                                     "seed0.pt", "seed1.pt"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == params and metrics["macs"] == macs
    device = costs(spec)  # peak RAM and flash beside them
    assert (metrics["ram_int8"], metrics["ram_float32"], metrics["flash_int8"]) == (
        device.ram_int8, device.ram_float32, device.flash_int8)
    assert f"peak RAM {device.ram_int8:,} B at int8" in result.stdout
    assert metrics["seeds"] == [0, 1] and metrics["epochs"] == 1 and len(metrics["test_acc"]) == 2
    # the means, stds and drop to 4 decimals, float and int8 alike: no float noise (99.42000000000002)
    assert metrics["mean"] == round(statistics.fmean(metrics["test_acc"]), 4)
    assert metrics["std"] == round(statistics.stdev(metrics["test_acc"]), 4)
    assert metrics["min"] == min(metrics["test_acc"])
    assert metrics["train_images"] == 256 and metrics["test_images"] == 10_000
    assert "CPU" in metrics["device"] and metrics["wall_seconds"] > 0
    # int8 beside float: per seed, mean ± std, min and the drop; calibrated on the 256 training images (fewer than
    # CALIBRATION_IMAGES); the written file's size and its check against the fake-quantised model
    int8 = metrics["int8"]
    assert len(metrics["int8_test_acc"]) == 2
    assert [r["int8_test_acc"] for r in metrics["per_seed"]] == metrics["int8_test_acc"]
    assert int8["mean"] == round(statistics.fmean(metrics["int8_test_acc"]), 4)
    assert int8["min"] == min(metrics["int8_test_acc"])
    assert int8["std"] == round(statistics.stdev(metrics["int8_test_acc"]), 4)
    assert int8["drop"] == round(statistics.fmean(metrics["test_acc"]) - statistics.fmean(metrics["int8_test_acc"]), 4)
    assert int8["calibration_images"] == 256
    assert metrics["int8_onnx_bytes"] == (out / "model.int8.onnx").stat().st_size
    exported = metrics["exported"]
    assert exported["int8_onnx"] == "model.int8.onnx" and exported["int8_argmax_agreement"] >= 0.99
    assert exported["int8_max_abs_diff"] <= exported["int8_diff_bound"]

    for k in (0, 1):
        ckpt = torch.load(out / f"seed{k}.pt", weights_only=True)
        assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["version"] and ckpt["spec"] == spec.to_dict()
        assert ckpt["metrics"]["test_acc"] == metrics["test_acc"][k] and ckpt["metrics"]["seed"] == k
        build(Spec.from_dict(ckpt["spec"])).load_state_dict(ckpt["state_dict"])  # the weights fit the spec

    # the printed report: a row per seed, mean ± std and min (float and int8), params and MACs
    assert "± " in result.stdout and "min" in result.stdout and f"{params:,} params" in result.stdout
    assert f"int8 {metrics['int8']['mean']:.2f} ± {metrics['int8']['std']:.2f} %" in result.stdout
    assert "int8 acc" in result.stdout and "model.int8.onnx" in result.stdout
    assert f"{macs:,} MACs" in result.stdout
    # progress on stderr: seed, epoch, loss, running accuracy, time left
    assert "seed 1 (2/2) epoch 1/1 loss" in result.stderr and "train acc" in result.stderr and "left" in result.stderr


def test_a_stopped_retrain_resumes_keeping_the_seeds_it_finished(retrained, cli, tmp_path):
    spec_file, out, _ = retrained
    first = json.loads((out / "metrics.json").read_text())
    stopped = tmp_path / "stopped"  # what a retrain stopped during seed 1 leaves: seed0.pt only
    stopped.mkdir()
    (stopped / "seed0.pt").write_bytes((out / "seed0.pt").read_bytes())
    (stopped / "seed2.pt").write_bytes(b"a seed this run does not train")  # kept as it is, never read
    before = tree_hashes(tmp_path)
    args = [str(spec_file), "--out", str(stopped), "--subset", "256", "--seeds", "2", "--device", "cpu"]
    assert "already holds results (seed0.pt, seed2.pt): pass --overwrite, --resume" in one_line_error(
        cli("retrain", *args, "--epochs", "1", cwd=tmp_path))
    # a seed trained otherwise (here: for 1 epoch, not 2) is refused before any training, nothing written
    assert one_line_error(cli("retrain", *args, "--epochs", "2", "--resume", cwd=tmp_path)).endswith(
        "seed0.pt was trained otherwise (epochs 1, not 2): pass --overwrite too to train it again, or another --out\n")
    assert tree_hashes(tmp_path) == before

    result = cli("retrain", *args, "--epochs", "1", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seed 0 (1/2): kept from seed0.pt" in result.stderr and "seed 1 (2/2) epoch 1/1" in result.stderr
    assert "seed 0 (1/2) epoch" not in result.stderr
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["kept_seeds"] == [0] and (stopped / "seed0.pt").read_bytes() == (out / "seed0.pt").read_bytes()
    # seed 0's results as the stopped run measured them (its time too); seed 1 trained as an unstopped run trains it
    assert metrics["per_seed"][0] == first["per_seed"][0]
    untimed = [{k: v for k, v in run["per_seed"][1].items() if k != "seconds_per_epoch"} for run in (metrics, first)]
    assert untimed[0] == untimed[1] and metrics["test_acc"] == first["test_acc"]
    assert {"model.onnx", "model.int8.onnx", "model.pt2", "seed1.pt"} <= {p.name for p in stopped.iterdir()}
    assert (stopped / "seed2.pt").read_bytes() == b"a seed this run does not train"  # only --overwrite drops it

    # with --overwrite too, checkpoints beyond --seeds go; a run whose every seed is kept trains nothing
    one = [str(spec_file), "--out", str(stopped), "--subset", "256", "--seeds", "1", "--epochs", "1", "--device", "cpu"]
    result = cli("retrain", *one, "--resume", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seed 0 (1/1): kept from seed0.pt" in result.stderr and " epoch " not in result.stderr
    assert sorted(p.name for p in stopped.glob("seed*.pt")) == ["seed0.pt"]
    assert json.loads((stopped / "metrics.json").read_text())["test_acc"] == first["test_acc"][:1]


def _best_model(out):
    metrics = json.loads((out / "metrics.json").read_text())
    ckpt = torch.load(out / f"seed{metrics['best_seed']}.pt", weights_only=True)
    model = build(Spec.from_dict(ckpt["spec"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def test_onnx_model_matches_pytorch(retrained, data_dir):
    _, out, _ = retrained
    images = load_train_test(data_dir, torch.device("cpu"), subset=1).held_out.x[-100:]  # not the export's check batch
    with torch.no_grad():
        expected = _best_model(out)(images).numpy()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_int8_model_scores_what_metrics_json_says(retrained, data_dir):
    """The int8 file is the best seed's model quantised: onnxruntime scores it as recorded for that seed."""
    _, out, _ = retrained
    metrics = json.loads((out / "metrics.json").read_text())
    test = load_train_test(data_dir, torch.device("cpu"), subset=1).held_out
    acc = onnx_accuracy(out / "model.int8.onnx", test.x, test.y)
    assert acc == metrics["int8_test_acc"][metrics["best_seed"]]


@pytest.mark.slow  # a new Python process imports torch and loads the program
def test_torch_export_program_runs_without_this_package(retrained, tmp_path):
    _, out, _ = retrained
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.save({"x": images, "y": _best_model(out)(images)}, tmp_path / "io.pt")
    code = ("import sys, torch\n"
            f"program = torch.export.load({str(out / 'model.pt2')!r})\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
            "got = program.module()(io['x'])\n"
            "assert torch.allclose(got, io['y'], atol=1e-5), (got - io['y']).abs().max()\n"
            "assert not any(m == 'nas' or m.startswith('nas.') for m in sys.modules), 'nas was imported'\n"
            "print('ok', tuple(got.shape))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ok (5, 10)" in result.stdout


def test_evaluate_reports_per_class_accuracy_and_writes_the_figure(retrained, cli):
    _, out, _ = retrained
    result = cli("evaluate", str(out / "seed0.pt"), "--device", "cpu", cwd=out)
    assert result.returncode == 0, result.stderr
    recorded = torch.load(out / "seed0.pt", weights_only=True)["metrics"]["test_acc"]
    assert f"test accuracy: {recorded:.2f} %" in result.stdout  # the same model, the same test set
    class_rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert [int(row[0]) for row in class_rows] == list(range(10))
    assert sum(int(row[1]) for row in class_rows) == 10_000
    figure = out / "seed0_confusion.html"
    page = figure.read_text()
    # plotly.js once per folder, beside the page (shared with its other pages), not inside it
    assert 'src="plotly.min.js"' in page and len(page) < 1_000_000 and "Plotly.newPlot" in page
    assert (out / "plotly.min.js").read_text() == get_plotlyjs()


def test_evaluate_refuses_a_foreign_checkpoint(tmp_path, cli):
    torch.save({"model": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "spec.json").write_text(FINAL.read_text())
    before = tree_hashes(tmp_path)
    for name, message in (("foreign.pt", "not a nas-budget-checkpoint"), ("corrupt.pt", "cannot read it"),
                          ("spec.json", "cannot read it"), ("missing.pt", "no such checkpoint")):
        assert message in one_line_error(cli("evaluate", name, cwd=tmp_path))
    assert tree_hashes(tmp_path) == before  # no figure written


OVER = {"over_budget": ["--budget", "7000"], "over_ram": ["--max-ram", "12KB"],
        "over_several": ["--budget", "7000", "--max-macs", "1M", "--max-flash", "8k", "--max-ram", "16KB"],
        "bad_size": ["--max-flash", "12XB"]}


@pytest.mark.parametrize("case, message", [
    ("missing", "no such spec file"),
    ("malformed", "not a readable JSON spec file"),
    ("unknown_layer", "arch.head must be one of"),
    ("over_budget", "over_budget.json: 7,416 parameters >= budget 7,000"),
    ("over_ram", "over_ram.json: 14,624 bytes of peak RAM at int8 > 12,000 (over by 2,624)\n"),
    ("over_several", "over_several.json: 7,416 parameters >= budget 7,000; 1,167,936 MACs > 1,000,000 (over by "
                     "167,936); 8,060 bytes of flash at int8 > 8,000 (over by 60)\n"),  # within --max-ram: not named
    ("bad_size", "argument --max-flash: expected a positive size such as 20000"),
    ("results_exist", "already holds results"),
])
def test_retrain_bad_input_is_one_line_and_overwrites_nothing(tmp_path, cli, case, message):
    """4_final: 7,416 parameters, 1,167,936 MACs, 14,624 B of peak RAM and 8,060 B of flash at int8."""
    spec = json.loads(FINAL.read_text())
    (tmp_path / "malformed.json").write_text('{"spec": {"arch": ')
    spec["spec"]["arch"]["head"] = "transformer"
    (tmp_path / "unknown_layer.json").write_text(json.dumps(spec))
    for name in (*OVER, "results_exist"):
        (tmp_path / f"{name}.json").write_text(FINAL.read_text())
    # earlier results, in the default --out of every case and in an explicit one
    for folder in [f"{name}_retrain" for name in ("missing", "malformed", "unknown_layer", *OVER,
                                                   "results_exist")] + ["explicit"]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text('{"mean": 99.5}\n')
        (tmp_path / folder / "seed0.pt").write_bytes(b"earlier weights")
    before = tree_hashes(tmp_path)
    args = [f"{case}.json", *OVER.get(case, [])]
    assert message in one_line_error(cli("retrain", *args, "--subset", "64", "--epochs", "1", cwd=tmp_path))
    if case != "results_exist":  # --overwrite does not let bad input through either
        extra = ["--out", "explicit", "--overwrite", "--subset", "64", "--epochs", "1"]
        assert message in one_line_error(cli("retrain", *args, *extra, cwd=tmp_path))
    assert tree_hashes(tmp_path) == before


def test_retrain_takes_a_spec_within_its_device_budgets():
    """At its costs exactly (a device budget is a maximum) 4_final passes; one byte or MAC less and it is refused."""
    cost = costs(load_spec(FINAL))
    refuse_over_budget(cost, "4_final", 7417, max_macs=1_167_936, max_ram=14_624, max_flash=8060)
    for limits in ({"max_macs": 1_167_935}, {"max_ram": 14_623}, {"max_flash": 8059}):
        with pytest.raises(UsageError, match=r"^4_final: [\d,]+ .* > [\d,]+ \(over by 1\)$"):
            refuse_over_budget(cost, "4_final", None, **limits)


def _ship_found(root, *args):
    env = {k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ship_found.py"), *args],
                          cwd=root, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a benchmark script, run in its own processes
def test_ship_found_writes_the_winner_with_its_retrain_and_refuses_another_spec(tiny_study, retrained, tmp_path):
    root, study = tiny_study
    _, out, _ = retrained
    found_file = tmp_path / "found" / f"b{SHARED_BUDGET}.json"
    result = _ship_found(root, "--study", SHARED_STUDY, "--retrain-dir", str(out),
                         "--command", f"nas search --budget {SHARED_BUDGET} ...",
                         "--search-seconds", "12.5", "--out", str(found_file))
    assert result.returncode == 0, result.stderr
    found, metrics = json.loads(found_file.read_text()), json.loads((out / "metrics.json").read_text())
    winner, reevaluation = select_winner(study)
    assert load_spec(found_file) == Spec.from_dict(winner.spec)  # any command that reads a spec reads it
    assert found["params"] == count_params(build(load_spec(found_file))) == metrics["params"]
    assert {k: found["retrain"][k] for k in ("test_acc", "mean", "std", "min")} == \
        {k: metrics[k] for k in ("test_acc", "mean", "std", "min")}
    assert {k: found["retrain"][k] for k in ("int8_test_acc", "int8", "int8_onnx_bytes")} == \
        {k: metrics[k] for k in ("int8_test_acc", "int8", "int8_onnx_bytes")}
    search = found["search"]
    assert search["trials"] == len(study.trials) and search["wall_seconds"] == 12.5
    assert "data" not in found  # MNIST: as the bundled found models, its data is read from its shape (nas list)
    assert search["budget"] == SHARED_BUDGET
    assert sum(search["trials_per_fidelity"].values()) <= len(study.trials)
    assert search["reevaluation"] == json.loads(json.dumps(reevaluation.to_dict()))
    assert search["val_acc"] == winner.value
    span = max(t.datetime_complete for t in study.trials) - min(t.datetime_start for t in study.trials)
    assert 0 < search["trials_busy_seconds"] <= round(span.total_seconds(), 1)  # ship_found rounds to tenths

    # bad input: one line, exit status 2, nothing written
    other = tmp_path / "other_retrain"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({**metrics, "spec": json.loads(FINAL.read_text())["spec"],
                                                    "code": "the 4_final spec"}))
    before = tree_hashes(tmp_path)
    for args, message in (
        (["--retrain-dir", str(other), "--out", str(tmp_path / "new.json")], "not the winner"),
        (["--retrain-dir", str(tmp_path / "none"), "--out", str(tmp_path / "new.json")], "no retrain results"),
        (["--retrain-dir", str(out), "--out", str(found_file)], "exists: pass --overwrite"),
    ):
        assert message in one_line_error(_ship_found(root, "--study", SHARED_STUDY, *args, "--command", "c"))
    assert tree_hashes(tmp_path) == before


@pytest.mark.slow  # a benchmark script, run in its own processes
def test_ship_found_writes_a_design_chosen_on_validation_with_the_runs_it_was_chosen_on(retrained, tmp_path):
    """--design: a spec file (a warm start's widened copy, say) with recipe_seeds.py's lines for it: only its own
    runs with its own recipe count."""
    spec_file, out, _ = retrained
    spec, metrics = load_spec(spec_file), json.loads((out / "metrics.json").read_text())
    params = metrics["params"]

    def run(seed, val_acc, code=spec.code, changes=None, speed=""):  # a line as recipe_seeds.py writes it
        return json.dumps({"code": code, "changes": changes or {}, "speed": speed, "seed": seed, "epochs": 15,
                           "val_acc": val_acc, "train_images": 55000, "val_images": 5000,
                           "hardware": "CPU: test, 2 cores, 1 threads"})
    runs = tmp_path / "reevaluation.jsonl"
    runs.write_text("\n".join([run(0, 90.0), run(2, 99.3), run(0, 99.5), run(1, 99.4),  # seed 0 again: the last
                               run(0, 98.0, code="another design"),
                               run(3, 97.0, changes={"lr": 0.5}), run(4, 96.0, speed="amp=bf16"), ""]) + "\n")
    found_file = tmp_path / "found" / "b9000.json"
    design = ["--design", str(spec_file), "--space", "mnist_tiny", "--description", "a widened copy",
              "--reevaluation", str(runs), "--retrain-dir", str(out), "--command", "how it was made"]
    result = _ship_found(tmp_path, *design, "--budget", str(params + 1), "--out", str(found_file))
    assert result.returncode == 0, result.stderr
    found = json.loads(found_file.read_text())
    assert load_spec(found_file) == spec and found["params"] == params and found["description"] == "a widened copy"
    assert found["retrain"]["test_acc"] == metrics["test_acc"] and found["retrain"]["int8"] == metrics["int8"]
    search = found["search"]
    assert (search["budget"], search["space"], search["command"]) == (params + 1, "mnist_tiny", "how it was made")
    assert {k: search["reevaluation"][k] for k in ("seeds", "val_acc", "mean", "min")} == {
        "seeds": [0, 1, 2], "val_acc": [99.5, 99.4, 99.3], "mean": 99.4, "min": 99.3}

    # bad input: one line, exit status 2, nothing written
    other_runs = tmp_path / "other.jsonl"
    other_runs.write_text(run(0, 99.0, code="another design") + "\n")
    (tmp_path / "bad.jsonl").write_text(run(0, 99.0) + "\nnot a line of recipe_seeds.py\n")
    before = tree_hashes(tmp_path)
    for args, message in (
        (["--budget", str(params)], f"{params:,} parameters >= budget {params:,}"),
        (["--budget", str(params + 1), "--reevaluation", str(other_runs)], "has no run of"),
        (["--budget", str(params + 1), "--reevaluation", str(tmp_path / "none.jsonl")], "no re-evaluation file"),
        (["--budget", str(params + 1), "--reevaluation", str(tmp_path / "bad.jsonl")], "line 2 is not JSON"),
    ):
        assert message in one_line_error(_ship_found(tmp_path, *design, *args, "--out", str(tmp_path / "new.json")))
    assert "--design needs --budget" in one_line_error(_ship_found(tmp_path, *design, "--out", str(tmp_path / "n.json")))
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("path", REFERENCE + FOUND, ids=[p.stem for p in REFERENCE + FOUND])
def test_reference_spec_builds_and_declares_its_fvcore_count(path):
    record = json.loads(path.read_text())
    assert {"name", "spec", "params", "macs"} <= set(record) and ("published" in record or "retrain" in record)
    model = build(load_spec(path))
    assert count_params(model) == record["params"]
    assert count_macs(model) == record["macs"]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("path", FOUND, ids=[p.stem for p in FOUND])
def test_found_model_is_under_its_budget_with_a_five_seed_final_epoch_retrain(path):
    record = json.loads(path.read_text())
    budget = int(path.stem.removeprefix("b"))
    assert record["params"] < budget == record["search"]["budget"]
    retrain = record["retrain"]
    assert len(retrain["test_acc"]) == len(retrain["seeds"]) == 5 and retrain["epochs"] == 15
    assert retrain["train_images"] == 60_000 and retrain["test_images"] == 10_000
    # recorded to 4 decimals since retrains write them so (earlier models: in full)
    assert retrain["mean"] == pytest.approx(np.mean(retrain["test_acc"]), abs=5e-5)
    assert retrain["std"] == pytest.approx(np.std(retrain["test_acc"], ddof=1), abs=5e-5)
    assert retrain["min"] == min(retrain["test_acc"])
    search = record["search"]
    assert {"command", "space", "reevaluation", "hardware"} <= set(search)
    if "study" in search:  # a search's winner: how that search ran
        assert {"wall_seconds", "trials_per_fidelity", "val_acc"} <= set(search)
    else:  # a design chosen outside a search's finalists (ship_found --design): on validation over seeds
        assert len(search["reevaluation"]["val_acc"]) == len(search["reevaluation"]["seeds"]) >= 3


def test_reference_ladder_is_the_classic_one():
    ladder = {p.stem: (load_spec(p), json.loads(p.read_text())) for p in REFERENCE}
    assert list(ladder) == ["1_basic", "2_bn_dropout", "3_gap", "4_final"]
    basic, basic_record = ladder["1_basic"]
    assert 190_000 <= basic_record["params"] <= 200_000
    assert not basic.arch.batch_norm and basic.arch.dropout == 0 and basic.train.rotation == basic.train.shift == basic.train.scale == 0
    lighter, lighter_record = ladder["2_bn_dropout"]
    assert lighter.arch.batch_norm and lighter.arch.dropout > 0 and lighter_record["params"] < basic_record["params"]
    gap, gap_record = ladder["3_gap"]
    assert gap.arch.head.startswith("gap") and 5_000 <= gap_record["params"] <= 6_000
    final, final_record = ladder["4_final"]
    assert 7_300 <= final_record["params"] <= 7_600 < 8_000
    assert final.train.rotation > 0 and final.train.schedule != "constant"
    assert [r["published"] for _, r in ladder.values()] == ["99.05 %", None, "98.79 %", "99.42–99.50 %"]
