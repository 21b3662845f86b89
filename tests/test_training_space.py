"""A space whose `arch:` names a spec: every candidate has that architecture, only the training is drawn."""

import json

import optuna

from nas import build, count_params
from nas.space import load_space
from nas.spec import load_spec
from nas.search.warm_start import warm_starts

from conftest import one_line_error
from test_space import _draws

TRAINING = """name: {name}
arch: {arch}
train:
  optimizer: sgd
  lr: {{low: 0.05, high: 0.5, log: true}}
  schedule: onecycle
  batch_size: [64, 128]
  label_smoothing: {{low: 0.0, high: 0.1}}
  weight_decay: {{low: 1.0e-6, high: 1.0e-4, log: true}}
  rotation: {{low: 0.0, high: 15.0}}
  shift: {{low: 0.0, high: 0.15}}
  scale: {{low: 0.0, high: 0.15}}
  ema: [0.0, 0.99]
"""


def write_space(folder, arch: str, name: str = "tune") -> str:
    path = folder / f"{name}.yaml"
    path.write_text(TRAINING.format(name=name, arch=arch))
    return str(path)


def test_a_space_naming_a_spec_draws_only_the_training_of_that_architecture(tmp_path):
    found = load_spec("found/b8000")
    space = load_space(write_space(tmp_path, "found/b8000"))
    assert space.arch == found.arch and not [key for key in space.domains if key.startswith("arch.")]
    recipes = set()
    for trial, spec in _draws(space, 20):
        assert spec.arch == found.arch
        assert set(trial.params) == {"lr", "batch_size", "label_smoothing", "weight_decay", "rotation", "shift",
                                      "scale", "ema"}
        recipes.add(spec.train)
    assert len(recipes) == 20  # the training is drawn: no two alike
    # its smallest model is the architecture itself, counted once
    assert [spec.arch for spec in space.lowest_specs()] == [found.arch]


def test_the_specs_own_recipe_is_its_warm_start_and_other_designs_are_not_drawable(tmp_path):
    found = load_spec("found/b8000")
    space = load_space(write_space(tmp_path, "found/b8000"))
    params, moved = space.params_for(found)
    assert space.spec_from_params(params) == found and moved == {}  # its own recipe lies in the ranges
    assert space.params_for(load_spec("reference/4_final")) is None  # another architecture: not in this space
    dropout = found.arch.__class__(**{**found.arch.__dict__, "dropout": 0.05})
    assert space.params_for(found.__class__(dropout, found.train)) is None  # the architecture is fixed, dropout too
    # a search at 8,000 starts from found/b8000 (the references are other architectures: left out)
    assert [name for name, _, _ in warm_starts(space, 8000, [])] == ["found/b8000"]


def test_the_spec_is_found_beside_the_space_file_and_its_architecture_is_in_the_content_hash(tmp_path, monkeypatch):
    spec = json.loads(json.dumps(load_spec("reference/4_final").to_dict()))  # lists, to change
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    space_file = write_space(tmp_path, "mine.json")
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the spec is read from the space file's folder
    first = load_space(space_file)
    assert first.arch == load_spec("reference/4_final").arch
    spec["train"]["lr"] = 0.3  # the training of the spec file does not count: only its architecture
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    assert load_space(space_file).content_hash == first.content_hash
    spec["arch"]["stages"][0][0] += 2  # another architecture under the same file name: another space
    (tmp_path / "mine.json").write_text(json.dumps(spec))
    assert load_space(space_file).content_hash != first.content_hash
    assert load_space(write_space(tmp_path, "found/b8000")).content_hash != first.content_hash


def test_a_search_of_the_training_runs_and_says_the_architecture_is_fixed(cli, tmp_path):
    tiny = {"version": 2, "arch": {"stages": [[4], [8]], "transition": "pool", "transition_width": 0,
                                   "padding": "same", "head": "gap_conv", "batch_norm": True, "dropout": 0.0},
            "train": {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "batch_size": 64,
                      "label_smoothing": 0.0, "weight_decay": 1e-5, "rotation": 5.0}}
    (tmp_path / "tiny.json").write_text(json.dumps(tiny))
    space = write_space(tmp_path, "tiny.json")
    result = cli("search", "--budget", "2000", "--space", space, "--trials", "3", "--epochs", "1", "--subset", "128",
                 "--rungs", "none", "--finalists", "0", "--device", "cpu", "--no-report", "--neighbours", "0",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "every candidate has the architecture s c4 M c8 gapc bn d0; only the training is drawn" in result.stderr
    assert "warm start: tiny.json\n" in result.stderr  # the spec's own recipe first
    study = optuna.load_study(study_name="tune-b2000", storage=f"sqlite:///{tmp_path}/studies/tune-b2000.db")
    specs = {t.user_attrs["spec"]["arch"]["stages"].__repr__() for t in study.trials}
    assert specs == {"[[4], [8]]"} and len({t.params["lr"] for t in study.trials}) == 3
    assert count_params(build(load_spec(tmp_path / "tiny.json"))) < 2000


def test_a_missing_spec_or_an_architecture_over_the_budget_is_one_line(cli, tmp_path):
    missing = cli("search", "--budget", "8000", "--space", write_space(tmp_path, "nowhere.json"), cwd=tmp_path)
    assert "tune.yaml: arch: " in one_line_error(missing) and "nowhere.json" in missing.stderr
    over = cli("search", "--budget", "4000", "--space", write_space(tmp_path, "found/b8000"), cwd=tmp_path)
    assert "7,926" in one_line_error(over) and not (tmp_path / "studies").exists()
    fixed = cli("search", "--budget", "9000", "--space", write_space(tmp_path, "found/b8000"), "--widths", "filled",
                cwd=tmp_path)  # nothing drawn to scale: refused before any study is made
    assert "--widths filled: space tune has a fixed architecture" in one_line_error(fixed)
    assert not (tmp_path / "studies").exists()
