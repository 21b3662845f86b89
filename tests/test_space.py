import optuna
import pytest
import torch

from nas import build, count_params
from nas.space import SpaceError, load_space
from nas.spec import Spec

from nas.bundled import DEFAULT_SPACE, spaces

from conftest import ROOT

SPACES = list(spaces().values())


def test_there_is_a_default_space_and_the_top_level_folder_shows_the_bundled_ones():
    assert DEFAULT_SPACE in spaces() and load_space(DEFAULT_SPACE).name == "mnist"
    assert sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")) == sorted(p.name for p in SPACES)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_space_samples_specs_whose_modules_run(path):
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        trial = study.ask()
        spec = space.sample(trial)
        assert Spec.from_dict(spec.to_dict()) == spec
        out = build(spec)(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        study.tell(trial, 0.0)


def test_default_space_holds_the_classic_design_and_room_around_it():
    space = load_space("mnist")
    classic = {"stages": 2, "blocks_s1": 2, "blocks_s2": 3, "width_s1_b1": 8, "width_s1_b2": 16,
               "width_s2_b1": 16, "width_s2_b2": 16, "width_s2_b3": 16, "transition": "1x1_pool",
               "transition_width": 8, "padding": "valid", "head": "gap_conv", "batch_norm": True, "dropout": 0.05,
               "optimizer": "sgd", "lr_sgd": 0.05, "schedule": "onecycle", "batch_size": 128,
               "label_smoothing": 0.0, "weight_decay": 1e-4, "augment": 0.5}
    spec = space.sample(optuna.trial.FixedTrial(classic))
    assert 7300 <= count_params(build(spec)) <= 7600
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    sizes = [count_params(build(space.sample(study.ask()))) for _ in range(60)]
    assert min(sizes) < 3000 and max(sizes) > 12000


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _default_text():
    return spaces()["mnist"].read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("width: {low: 4, high: 24, step: 2}", "width: {low: 4}"), "arch.width: expected"),
    (lambda t: t.replace("head: [gap_conv, gap_linear]", "head: [gap_conv, softmax]"), "arch.head: expected one of"),
    (lambda t: t.replace("dropout: {low: 0.0, high: 0.15}", "dropout: {low: 0.5, high: 0.1}"), "arch.dropout"),
    (lambda t: t.replace("  batch_size: [64, 128, 256]\n", ""), "missing key.*train.batch_size"),
    (lambda t: t + "  momentum: 0.9\n", "train.momentum: unknown key"),
    (lambda t: t.replace("adamw: {low", "adam: {low"), "train.lr.adam: unknown optimizer"),
    (lambda t: "arch: [1, 2\n", "not a readable YAML file"),
    (lambda t: "- 1\n- 2\n", "expected a mapping"),
])
def test_malformed_spaces_name_the_file_and_the_key(tmp_path, edit, message):
    path = _write(tmp_path, edit(_default_text()))
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(tmp_path / "none.yaml")
