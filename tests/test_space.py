import re
from dataclasses import replace

import optuna
import pytest
import torch
import yaml

from nas import build, count_params
from nas.bundled import DEFAULT_SPACE, canonical_space_name, reference_files, spaces, spec_files
from nas.store.record import StudySettings, read_settings, write_settings
from nas.space import SpaceError, load_space
from nas.spec import RANGES, Spec, SpecError, load_spec

from conftest import ROOT
from test_spec import CLASSIC, V1, without_wd

SPACES = list(spaces().values())
# the budgets each bundled space is aimed at: (low, high) parameters
AIMED = {"mnist": (4000, 8000), "mnist_focused": (4000, 8000), "mnist_lean": (4000, 8000),
         "mnist_classic": (4000, 8000), "mnist_small": (1000, 4000), "mnist_tiny": (500, 3000),
         "colour32": (10_000, 100_000)}
SHAPES = {"colour32": {"in_channels": 3, "input_size": 32, "num_classes": 10}}  # spaces aimed at other data than MNIST


def test_there_is_a_default_space_and_the_top_level_folder_shows_the_bundled_ones():
    assert DEFAULT_SPACE in spaces() and load_space(DEFAULT_SPACE).name == DEFAULT_SPACE == "mnist"
    assert sorted(spaces()) == sorted(AIMED) and all(load_space(path).name == name for name, path in spaces().items())
    assert load_space("mnist-tiny").path == str(spaces()["mnist_tiny"])  # '-' for '_' still finds a bundled space
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
    shape = SHAPES.get(path.stem, {"in_channels": 1, "input_size": 28, "num_classes": 10})
    space = space.for_data(shape) if path.stem in SHAPES else space
    low, high = AIMED[path.stem]
    sizes = []
    for _, spec in _draws(space, 30):
        assert Spec.from_dict(spec.to_dict()) == spec
        model = build(spec)
        out = model(torch.randn(2, shape["in_channels"], shape["input_size"], shape["input_size"]))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        sizes.append(count_params(model))
    # aimed at budgets from low to high: not one lucky draw, but a quarter or more of them, lies in that range
    # (a search there trains them), and a search under the lowest aimed budget has candidates too
    assert sum(low <= size < high for size in sizes) >= len(sizes) // 4, sorted(sizes)
    assert any(size < low for size in sizes), sorted(sizes)
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
        assert trial.params == before["params"] and without_wd(spec.code) == before["code"]
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


def _spec_with(key: str, value):
    """CLASSIC's JSON form with the field of `key` (a key of nas.spec.RANGES) set to `value`."""
    data = CLASSIC.to_dict()
    section, name = key.split(".")
    shape = {"arch.stages": [[8]] * value if key == "arch.stages" else None,
             "arch.blocks_per_stage": [[8] * value] if key == "arch.blocks_per_stage" else None,
             "arch.width": [[value]] if key == "arch.width" else None}
    if shape.get(key):
        data["arch"].update(stages=shape[key], kinds=[])
    elif key == "train.augment":  # version 1's one strength: a version-1 spec
        del data["version"]
        data["arch"] = {k: v for k, v in data["arch"].items() if k not in ("kinds", "activation", "head_width")}
        data["train"] = {k: v for k, v in data["train"].items() if k not in ("rotation", "shift", "scale", "ema")}
        data["train"]["augment"] = value
    else:
        data[section][name] = value
    return data


@pytest.mark.parametrize("key", [k for k in RANGES if k not in ("arch.in_channels", "arch.input_size",
                                                                 "arch.num_classes")])  # not in spaces
def test_a_value_outside_the_table_of_ranges_is_refused_by_the_space_parser_and_by_spec_validation(tmp_path, key):
    """One table (nas.spec.RANGES) for both: a space cannot offer a value no spec may hold, nor the reverse."""
    interval = RANGES[key]
    # a width that is 0 where unused (no 1x1 transition, no gap_mlp head) is drawn only where used: from 1
    drawn = replace(interval, low=1) if key in ("arch.transition_width", "arch.head_width") else interval
    beyond = interval.high * 2 if interval.high is not None else interval.low - 1  # e.g. weight decay 2, lr -1
    inside = interval.low + (1 if interval.integer else 0.001)
    raw = yaml.safe_load(_default_text())
    section, name = key.split(".")
    if key == "train.augment":  # one strength or the three: not both
        raw["train"] = {k: v for k, v in raw["train"].items() if k not in ("rotation", "shift", "scale")}
    raw[section][name] = {"low": inside, "high": beyond} if beyond > inside else {"low": beyond, "high": inside}
    path = _write(tmp_path, yaml.safe_dump(raw))
    expected = re.escape(drawn.expected())
    with pytest.raises(SpaceError, match=rf"{key}: expected a range with low <= high, each {expected}"):
        load_space(path)
    with pytest.raises(SpecError, match="arch.stages" if key in ("arch.blocks_per_stage", "arch.width") else key):
        Spec.from_dict(_spec_with(key, beyond))
    raw[section][name] = beyond  # a fixed value, too
    with pytest.raises(SpaceError, match=rf"{key}: expected {expected}"):
        load_space(_write(tmp_path, yaml.safe_dump(raw)))


def test_the_weight_decay_and_the_lr_have_one_range_in_spaces_and_specs(tmp_path):
    text = _default_text().replace("weight_decay: {low: 1.0e-6, high: 1.0e-3, log: true}",
                                   "weight_decay: {low: 1.0e-6, high: 2.0, log: true}")
    with pytest.raises(SpaceError, match=r"train.weight_decay: expected a range .* in \[0, 1\]"):
        load_space(_write(tmp_path, text))
    with pytest.raises(SpecError, match=r"train.weight_decay must be in \[0, 1\]"):
        Spec.from_dict(_spec_with("train.weight_decay", 2.0))
    text = _default_text().replace("sgd: {low: 0.01, high: 0.5, log: true}", "sgd: {low: 0.0, high: 0.5}")
    with pytest.raises(SpaceError, match="train.lr: expected a range .* each a positive number"):
        load_space(_write(tmp_path, text))
    with pytest.raises(SpecError, match="train.lr must be a positive number"):
        Spec.from_dict(_spec_with("train.lr", 0))
    assert Spec.from_dict(_spec_with("train.weight_decay", 1)).train.weight_decay == 1  # the closed end holds
    # no upper bound on the LR, in either: a diverging one is the trainer's to report (test_bad_input's lr 1000)
    text = _default_text().replace("sgd: {low: 0.01, high: 0.5, log: true}", "sgd: {low: 0.01, high: 1000, log: true}")
    assert load_space(_write(tmp_path, text)).domains["train.lr.sgd"].high == 1000
    assert Spec.from_dict(_spec_with("train.lr", 1000.0)).train.lr == 1000


@pytest.mark.parametrize("stored, stored_file, before_rungs, name", [
    ("mnist2", "/old/nas/search_spaces/mnist.yaml", False, "mnist"),
    ("mnist-small", "nas/search_spaces/mnist_small.yaml", False, "mnist_small"),
    ("mnist-tiny", None, False, "mnist_tiny"),
    ("mnist", "/old/nas/search_spaces/mnist_classic.yaml", False, "mnist_classic"),  # the classic space's
    ("mnist", "/old/nas/search_spaces/mnist.yaml", True, "mnist_classic"),  # before v2, mnist.yaml was the classic one
    ("mnist", "/new/nas/search_spaces/mnist.yaml", False, "mnist"),  # the default space, named after its file
    ("mnist", None, False, "mnist"),
    ("mnist_classic", "nas/search_spaces/mnist_classic.yaml", False, "mnist_classic"),
    ("mnist_tiny", "nas/search_spaces/mnist_tiny.yaml", True, "mnist_tiny"),
    ("my-space", "/home/me/mnist_classic.yaml", False, "my-space"),  # a space of one's own: as it is
])
def test_old_space_names_map_onto_todays(stored, stored_file, before_rungs, name):
    assert canonical_space_name(stored, stored_file, before_rungs=before_rungs) == name
    if not before_rungs:
        assert canonical_space_name(stored, stored_file) == name


def test_an_old_study_reads_as_made_with_todays_space_name():
    def study(space, space_file, **more):
        made = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        write_settings(made, StudySettings(budget=8000, space=space, space_file=space_file, epochs=15, **more))
        return made

    new, classic = str(spaces()["mnist"]), str(spaces()["mnist_classic"])
    # a mnist2-b8000 study continues with --space mnist; a classic mnist-b8000 study is not taken for one of mnist
    assert read_settings(study("mnist2", new, rungs=[[1, 10000]]))["space"] == load_space("mnist").name == "mnist"
    assert read_settings(study("mnist", classic, rungs=[]))["space"] == load_space("mnist_classic").name
    assert read_settings(study("mnist", "studies/old/search_spaces/mnist.yaml"))["space"] == "mnist_classic"  # pre-v2
    assert read_settings(study("mnist", new, rungs=[]))["space"] == "mnist"  # made with today's mnist
    settings = read_settings(study("mnist-small", str(spaces()["mnist_small"]), rungs=[], finalists=3))
    assert settings == {"budget": 8000, "space": "mnist_small", "space_file": str(spaces()["mnist_small"]),
                        "epochs": 15, "rungs": [], "finalists": 3}


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


def test_a_space_extends_another_and_replaces_only_the_keys_it_writes(tmp_path):
    (tmp_path / "own.yaml").write_text("extends: mnist\narch:\n  head: [gap_conv, gap_linear]\n  head_width: null\n"
                                       "train:\n  lr: {low: 0.1, high: 0.3}\n  batch_size: 64\n")
    own, base = load_space(tmp_path / "own.yaml"), load_space("mnist")
    assert own.name == "own"  # a name is never inherited: the file's stem, as for any file without one
    changed = {"arch.head": ("gap_conv", "gap_linear"), "train.batch_size": (64,)}
    assert {k: v for k, v in own.domains.items() if k in changed} == changed
    assert "arch.head_width" not in own.domains  # null drops the base's key
    # train.lr is one key: the file's one range replaces the base's range per optimizer
    assert own.domains["train.lr"].low == 0.1 and not [k for k in own.domains if k.startswith("train.lr.")]
    untouched = set(base.domains) - set(changed) - {"arch.head_width", "train.lr.sgd", "train.lr.adamw"}
    assert {k: own.domains[k] for k in untouched} == {k: base.domains[k] for k in untouched}
    spec = next(_draws(own, 1))[1]
    assert spec.train.batch_size == 64 and 0.1 <= spec.train.lr <= 0.3


def test_the_bundled_lean_space_is_the_focused_one_with_two_priors_narrowed():
    lean, focused = load_space("mnist_lean"), load_space("mnist_focused")
    assert "extends: mnist_focused" in spaces()["mnist_lean"].read_text()
    differ = {k for k in focused.domains if lean.domains[k] != focused.domains[k]}
    assert differ == {"arch.dropout", "train.lr.sgd"} and set(lean.domains) == set(focused.domains)
    # what the studies made with each stored (the file was written out in full before it extended)
    assert lean.content_hash == "de2c962cf0599854ae9c43d89bb25aa85850ff079ac1d2bcbcaa2fc56727b644"
    assert focused.content_hash == "db7ad9fa0f272400ae29a4cb545ede520bcac62d80a71640c9ec7222f575dccd"


def test_a_chain_of_bases_resolves_from_each_files_folder(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "tune.yaml").write_text("arch: b8000.json\ntrain:\n  optimizer: sgd\n"
                                                  "  lr: {low: 0.1, high: 0.2}\n  schedule: onecycle\n"
                                                  "  batch_size: 128\n  label_smoothing: 0.0\n  weight_decay: 0.0\n")
    (tmp_path / "bases" / "b8000.json").write_text(spec_files()["found/b8000"].read_text())
    (tmp_path / "middle.yaml").write_text("extends: bases/tune.yaml\ntrain:\n  batch_size: [64, 128]\n")
    (tmp_path / "top.yaml").write_text("extends: middle.yaml\nname: top\ntrain:\n  weight_decay: 1.0e-5\n")
    top = load_space(tmp_path / "top.yaml")  # the spec beside the base, not beside top.yaml
    assert top.arch == load_spec("found/b8000").arch and top.name == "top"
    assert (top.domains["train.batch_size"], top.domains["train.weight_decay"]) == ((64, 128), (1e-5,))


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: a.yaml\n"}, r"a.yaml: extends: a.yaml: a loop \(a.yaml -> a.yaml\)"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: b.yaml\n"},
     r"a.yaml: extends: .*b.yaml: extends: .*c.yaml: extends: b.yaml: a loop \(a.yaml -> b.yaml -> c.yaml -> b.yaml\)"),
    ({"a.yaml": "extends: nowhere.yaml\n"}, r"a.yaml: extends: nowhere.yaml: no such search-space file"),
    ({"a.yaml": "extends: [mnist]\n"},
     r"a.yaml: extends: expected a space file or a bundled space's name, got \['mnist'\]"),
    ({"a.yaml": 'extends: "mnist\\0"\n'}, r"a.yaml: extends: expected a space file .*, got 'mnist\\x00'"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: mnist\narch:\n  width: {low: 4}\n"},
     r"a.yaml: extends: .*b.yaml: arch.width: expected"),  # a base must be a space by itself
    ({"a.yaml": "extends: mnist\ntrain:\n  momentum: 0.9\n"}, r"a.yaml: train.momentum: unknown key"),
    ({"a.yaml": "extends: mnist\ntrain:\n  augment: 0.5\n"}, r"a.yaml: train.augment .* exclude each other"),
    ({f"{i}.yaml": f"extends: {i + 1}.yaml\n" for i in range(12)}, r"0.yaml: extends: .*7.yaml: extends: more than 8"),
])
def test_a_bad_extends_names_the_file_and_the_chain(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(tmp_path / next(iter(files)))
    assert len(str(info.value).splitlines()) == 1
