import hashlib
import json
import shutil

import optuna
import pytest

from conftest import ROOT, run_cli

TINY = str(ROOT / "search_spaces" / "mnist_tiny.yaml")


def test_small_search_end_to_end_then_continue(tmp_path):
    args = ["--budget", "3000", "--space", TINY, "--trials", "3", "--epochs", "2", "--subset", "256", "--device", "cpu"]
    first = run_cli("nas.search", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "rejected before training" in first.stdout and "val acc" in first.stdout
    db = tmp_path / "studies" / "mnist-tiny-b3000.db"
    study = optuna.load_study(study_name="mnist-tiny-b3000", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3 and study.user_attrs["budget"] == 3000
    for trial in study.trials:
        assert trial.user_attrs["params"] > 0 and "spec" in trial.user_attrs and "macs" in trial.user_attrs
        if trial.user_attrs["outcome"] == "complete":
            assert trial.user_attrs["params"] < 3000 and len(trial.user_attrs["epoch_seconds"]) == 2
    best = json.loads((tmp_path / "studies" / "mnist-tiny-b3000" / "best.json").read_text())
    assert best["val_acc"] == study.best_value and best["trial"] == study.best_trial.number
    assert best["params"] < 3000 and best["spec"]["arch"]

    again = run_cli("nas.search", *args, "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # quiet
    study = optuna.load_study(study_name="mnist-tiny-b3000", storage=f"sqlite:///{db}")
    assert len(study.trials) == 6  # continued, not restarted


def _one_line_error(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A study on disk, so bad-input runs can show they leave it untouched."""
    root = tmp_path_factory.mktemp("stored")
    result = run_cli("nas.search", "--budget", "3000", "--space", TINY, "--trials", "1", "--epochs", "1",
                     "--subset", "128", "-q", "--study", "keep", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


@pytest.mark.parametrize("args, message", [
    (["--budget", "-3"], "positive integer"),
    (["--budget", "abc"], "positive integer"),
    (["--budget", "0"], "positive integer"),
    (["--budget", "8000", "--space", "nowhere.yaml"], "no such search-space file"),
    (["--budget", "8000", "--space", "broken.yaml"], "not a readable YAML"),
    (["--budget", "8000", "--data-dir", "no/such/dir"], "does not exist"),
    (["--budget", "8000", "--storage", "notaurl"], "bad storage URL"),
    (["--budget", "8000", "--storage", "sqlite:///no/such/dir/x.db"], "bad storage URL"),
    (["--budget", "8000", "--storage", "sqlite:///studies/keep.db", "--study", "keep"], "was run with budget 3000"),
    (["--budget", "3000", "--study", "keep"], "was run with space mnist-tiny"),
])
def test_bad_input_is_one_line_and_damages_nothing(stored, args, message):
    (stored / "broken.yaml").write_text("arch: [1, 2\n")
    db = stored / "studies" / "keep.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert message in _one_line_error(run_cli("nas.search", *args, "--trials", "1", "--subset", "64", cwd=stored))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_corrupt_data_is_one_line(data_dir, tmp_path):
    shutil.copytree(data_dir / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    stderr = _one_line_error(run_cli("nas.search", "--budget", "8000", "--data-dir", str(tmp_path), cwd=tmp_path))
    assert "corrupt" in stderr
