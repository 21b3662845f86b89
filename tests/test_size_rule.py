"""The size rule: images above 32 px get a stem and enough stages for a small map before the head, drawn from
the bundled spaces without a hand-written one; 28 and 32 px data draws what it always drew."""

import json

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TINY
from nas.cost import _walk, costs, peak_ram, spec_costs
from nas.model import build
from nas.size_rule import size_rule
from nas.space import load_space
from nas.spec import Arch, Spec, feature_sizes
from test_spec import CLASSIC


@pytest.mark.parametrize("size, stem, stages", [(64, "stride2", 3), (33, "stride2", 2), (96, "stride2_pool", 3),
                                                (128, "stride2_pool", 3), (256, "stride2_pool", 4)])
def test_the_rule_picks_the_stem_and_the_fewest_stages_from_the_size(size, stem, stages):
    rule = size_rule(size)
    assert (rule.stem, rule.stages) == (stem, stages)
    assert f"{size} px images" in str(rule)


@pytest.mark.parametrize("name", ["mnist", "colour32"])
@pytest.mark.parametrize("size", [28, 32])
def test_28_and_32_px_data_draws_what_it_always_drew(name, size):
    space = load_space(name)
    shaped = space.for_data({"in_channels": 3, "input_size": size, "num_classes": 10})
    assert size_rule(size) is None and shaped.rule == "" and shaped.domains == space.domains
    assert shaped.content_hash == space.content_hash and "stem" not in dict(shaped.shape)


def _head_input(spec: Spec) -> tuple[int, ...]:
    """The shape the head's first layer (GAP, or Flatten for flatten_linear) takes."""
    return next(shape for m, shape, _, _ in _walk(spec) if isinstance(m, (nn.AdaptiveAvgPool2d, nn.Flatten)))


@pytest.mark.parametrize("name", ["mnist", "colour32"])
@pytest.mark.parametrize("size", [64, 96])
def test_specs_drawn_for_large_images_build_and_reach_the_head_at_8_px_or_less(name, size):
    space = load_space(name).for_data({"in_channels": 3, "input_size": size, "num_classes": 7})
    assert f"{size} px images" in space.rule
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=size))
    for _ in range(12):
        trial = study.ask()
        spec = space.sample(trial)
        study.tell(trial, 0.0)
        assert spec.arch.stem == size_rule(size).stem and Spec.from_dict(spec.to_dict()) == spec
        out = build(spec).eval()(torch.randn(2, 3, size, size))
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        assert _head_input(spec)[-1] <= 8 and feature_sizes(spec.arch)[-1] == _head_input(spec)[-1]
        cost = costs(spec)
        assert cost == spec_costs(spec) and min(cost.to_dict().values()) > 0
        assert space.spec_from_params(trial.params) == spec
    assert all(s.arch.stem != "none" for s in space.lowest_specs())


def test_the_stem_is_counted_in_every_cost():
    arch = Arch(((8,), (8,), (8,)), "pool", 0, "same", "gap_conv", True, 0.0, in_channels=3, input_size=64,
                stem="stride2")
    plain = Spec(Arch(((8,), (8,), (8,)), "pool", 0, "same", "gap_conv", True, 0.0, in_channels=8, input_size=32),
                 CLASSIC.train)
    spec = Spec(arch, CLASSIC.train)
    assert spec.code.startswith("in3x64 stem2 s c8 M c8 M c8 gapc")
    with_stem, without = costs(spec), costs(plain)
    # the same stages on the stem's output, beside the stem: a 3x3 conv of 3 -> 8 channels (no bias: BN follows)
    # and its batch norm, at 32x32 outputs
    assert with_stem.params - without.params == 3 * 8 * 9 + 2 * 8
    assert with_stem.macs - without.macs == 32 * 32 * 8 * 3 * 9 + 2 * 8 * 32 * 32
    assert peak_ram(spec) == 3 * 64 * 64 + 8 * 32 * 32  # the image and the stem's output, at int8
    pooled = Spec(Arch(((8,),), "pool", 0, "same", "gap_conv", True, 0.0, in_channels=3, input_size=96,
                       stem="stride2_pool"), CLASSIC.train)
    assert feature_sizes(pooled.arch) == [24] and _head_input(pooled) == (1, 8, 24, 24)
    assert costs(pooled) == spec_costs(pooled)


def _folder(root, size: int = 64, per_class: int = 12) -> None:
    """size x size RGB noise with bright stripes along one axis or the other: two classes."""
    rng = np.random.default_rng(0)
    for name in ("h", "v"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            if name == "h":
                image[::4] = 220
            else:
                image[:, ::4] = 220
            Image.fromarray(image).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_a_64_px_folder_is_searched_with_the_size_rule(cli, tmp_path):
    _folder(tmp_path / "big")
    result = cli("search", "--data", "big", "--budget", "20000", "--space", TINY, "--trials", "2", "--epochs", "1",
                 "--subset", "16", "--rungs", "none", "--finalists", "0", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header = "space: size rule: 64 px images: a 3x3 stride-2 conv stem (to 32 px), at least 3 stages"
    assert header in result.stderr  # the header goes to stderr
    best = json.loads((tmp_path / "studies" / "mnist_tiny-big-b20000" / "best.json").read_text())
    assert best["spec"]["arch"]["stem"] == "stride2" and best["spec"]["arch"]["input_size"] == 64
    assert len(best["spec"]["arch"]["stages"]) == 3 and best["params"] < 20000
