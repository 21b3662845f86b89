from dataclasses import replace

import optuna
import pytest
import torch

from nas import build, count_params
from nas.bundled import DEFAULT_SPACE, reference_files, spaces
from nas.space import SpaceError, load_space
from nas.spec import Spec, load_spec

from conftest import ROOT
from test_spec import V1

SPACES = list(spaces().values())
# the budgets each bundled space is aimed at: (low, high) parameters
AIMED = {"mnist": (4000, 8000), "mnist_classic": (4000, 8000), "mnist_small": (1000, 4000), "mnist_tiny": (500, 3000)}


def test_there_is_a_default_space_and_the_top_level_folder_shows_the_bundled_ones():
    assert DEFAULT_SPACE in spaces() and load_space(DEFAULT_SPACE).name == "mnist2"
    assert sorted(spaces()) == sorted(AIMED) and load_space("mnist_classic").name == "mnist"
    assert load_space("mnist_small").name == "mnist-small"
    assert sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")) == sorted(p.name for p in SPACES)


def _draws(space, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, space.sample(trial)
        study.tell(trial, 0.0)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_space_samples_specs_whose_modules_run_and_fit_its_budgets(path):
    space = load_space(path)
    low, high = AIMED[path.stem]
    sizes = []
    for _, spec in _draws(space, 30):
        assert Spec.from_dict(spec.to_dict()) == spec
        model = build(spec)
        out = model(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        sizes.append(count_params(model))
    assert any(low <= size < high for size in sizes), sorted(sizes)
    # the lowest specs hold the smallest model: none of the draws is smaller
    assert min(count_params(build(spec)) for spec in space.lowest_specs()) <= min(sizes)


def test_the_lowest_specs_vary_only_the_architecture():
    lowest = list(load_space("mnist").lowest_specs())
    assert len({spec.train for spec in lowest}) == 1 and len({spec.arch for spec in lowest}) == len(lowest)
    smallest = min(lowest, key=lambda spec: count_params(build(spec)))
    assert smallest.arch.stages == ((4,), (4,)) and count_params(build(smallest)) == 76  # 1x1 blocks, GAP + 1x1
    assert min(count_params(build(spec)) for spec in load_space("mnist_classic").lowest_specs()) == 80


@pytest.mark.parametrize("name", ["mnist_classic", "mnist_tiny"])
def test_version_1_spaces_draw_what_they_drew_before(name):
    """Same seed, same parameter names and values, same designs: their studies resume as they were."""
    space = load_space(name)
    for (trial, spec), before in zip(_draws(space, 5), V1["space_draws"][name]):
        assert trial.params == before["params"] and spec.code == before["code"]
        assert {k.split("_")[0] for k in trial.params} & {"block", "activation", "ema", "rotation"} == set()
        assert spec.arch.activation == "relu" and spec.train.ema == 0
        a = trial.params["augment"]
        assert (spec.train.rotation, spec.train.shift, spec.train.scale) == (15 * a, 0.1 * a, 0.1 * a)


def test_default_space_holds_the_classic_design_and_room_around_it():
    space = load_space("mnist")
    final = load_spec(reference_files()[-1])
    params, moved = space.params_for(final)
    assert moved == {"weight_decay": (0.0, 1e-06)}  # 0 lies below the space's log range: its nearest value
    assert params["block_s2_b3"] == "conv3" and params["activation"] == "relu" and params["ema"] == 0
    drawn = space.sample(optuna.trial.FixedTrial(params))
    assert drawn.arch == final.arch and count_params(build(drawn)) == 7416
    assert (drawn.train.rotation, drawn.train.shift, drawn.train.scale) == (7.5, 0.05, 0.05)
    sizes = [count_params(build(spec)) for _, spec in _draws(space, 60, seed=1)]
    assert min(sizes) < 3000 and max(sizes) > 12000


def test_a_rich_design_is_drawn_by_the_default_space_but_not_by_the_classic_one():
    space = load_space("mnist")
    rich = next(spec for _, spec in _draws(space, 100, seed=2)
                if spec.train.ema and spec.arch.head == "gap_mlp" and spec.arch.activation == "prelu"
                and {"sep3", "conv1"} <= {k for kinds in spec.arch.kinds for k in kinds})
    params, moved = space.params_for(rich)
    assert moved == {} and space.spec_from_params(params) == rich
    assert load_space("mnist_classic").params_for(rich) is None  # no separable blocks there


def test_a_version_2_spec_in_a_version_1_space_moves_onto_one_augment_strength():
    final = load_spec(reference_files()[-1])
    params, moved = load_space("mnist_classic").params_for(final)
    assert params["augment"] == 0.5 and moved == {"weight_decay": (0.0, 1e-06)}
    uneven = Spec(final.arch, replace(final.train, rotation=12.0, shift=0.0))
    params, moved = load_space("mnist_classic").params_for(uneven)
    assert params["augment"] == pytest.approx(0.8) and moved["augment"][0] == "rotation 12, shift 0, scale 0.05"


def test_a_training_value_the_space_fixes_is_compared_not_replayed(tmp_path):
    """One choice is never suggested, so only a comparison sees it: a fixed schedule or optimizer that
    differs means the space cannot draw the design; a fixed number that differs is moved, and said."""
    gap, final = (load_spec(reference_files()[i]) for i in (2, 3))  # a constant LR; a one-cycle one
    assert load_space("mnist_small").params_for(gap) is None  # mnist_small fixes schedule: onecycle
    fixed = _write(tmp_path, _default_text().replace("batch_size: [64, 128, 256]", "batch_size: 256"))
    params, moved = load_space(fixed).params_for(final)
    assert moved == {"weight_decay": (0.0, 1e-06), "batch_size": (128, 256)}
    assert load_space(fixed).spec_from_params(params).train.batch_size == 256


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _default_text():
    return spaces()["mnist"].read_text()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("width: {low: 4, high: 32, step: 2}", "width: {low: 4}"), "arch.width: expected"),
    (lambda t: t.replace("head: [gap_conv, gap_linear, gap_mlp]", "head: [gap_conv, softmax]"),
     "arch.head: expected one of"),
    (lambda t: t.replace("dropout: {low: 0.0, high: 0.1}", "dropout: {low: 0.5, high: 0.1}"), "arch.dropout"),
    (lambda t: t.replace("  batch_size: [64, 128, 256]\n", ""), "missing key.*train.batch_size"),
    (lambda t: t + "  momentum: 0.9\n", "train.momentum: unknown key"),
    (lambda t: t.replace("adamw: {low", "adam: {low"), "train.lr.adam: unknown optimizer"),
    (lambda t: "arch: [1, 2\n", "not a readable YAML file"),
    (lambda t: "- 1\n- 2\n", "expected a mapping"),
    (lambda t: t.replace("block: [conv3, sep3, conv1]", "block: [conv3, conv5]"),
     "arch.block: expected one of conv3, sep3, conv1"),
    (lambda t: t.replace("activation: [relu,", "activation: [tanh,"), "arch.activation: expected one of relu"),
    (lambda t: t.replace("ema: [0.0, 0.99, 0.999]", "ema: [-0.1, 0.99]"), r"train.ema: expected a number in \[0, 1\)"),
    (lambda t: t.replace("ema: [0.0, 0.99, 0.999]", "ema: 1.0"), r"train.ema: expected a number in \[0, 1\)"),
    (lambda t: t.replace("rotation: {low: 0.0,", "rotation: {low: -5.0,"), "train.rotation: expected a range"),
    (lambda t: t.replace("scale: {low: 0.0, high: 0.15}", "scale: 1.0"), "train.scale: expected"),
    (lambda t: t + "  augment: 0.5\n", "train.augment .* and train.rotation, train.shift, train.scale exclude"),
    (lambda t: t.replace("  head_width: {low: 8, high: 32, step: 4}", ""), "missing key.*arch.head_width"),
])
def test_malformed_spaces_name_the_file_and_the_key(tmp_path, edit, message):
    path = _write(tmp_path, edit(_default_text()))
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_keys_left_out_take_version_1_values(tmp_path):
    text = _default_text()
    for line in ("  block: [conv3, sep3, conv1]", "  activation: [relu, leaky_relu, prelu, silu]",
                 "  ema: [0.0, 0.99, 0.999]", "  rotation: {low: 0.0, high: 15.0}", "  shift: {low: 0.0, high: 0.15}",
                 "  scale: {low: 0.0, high: 0.15}"):
        assert line in text
        text = "\n".join(row for row in text.splitlines() if not row.startswith(line))
    space = load_space(_write(tmp_path, text))
    for trial, spec in _draws(space, 10):
        assert {k for kinds in spec.arch.kinds for k in kinds} == {"conv3"} and spec.arch.activation == "relu"
        assert spec.train.ema == spec.train.rotation == spec.train.shift == spec.train.scale == 0
        assert not {"ema", "rotation", "shift", "scale", "activation", "block_s1_b1"} & set(trial.params)


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(tmp_path / "none.yaml")
