import json
import math
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas import build, count_params, load_spec, save_spec
from nas.augment import BACKGROUND, random_affine
from nas.bundled import reference_files
from nas.spec import Arch, Spec, SpecError, Train, augment_strengths, feature_sizes

CLASSIC = Spec(
    Arch(stages=((8, 16), (16, 16, 16)), transition="1x1_pool", transition_width=8, padding="valid",
         head="gap_conv", batch_norm=True, dropout=0.05),
    Train(optimizer="sgd", lr=0.05, schedule="onecycle", batch_size=128, label_smoothing=0.0,
          weight_decay=1e-4, rotation=7.5, shift=0.05, scale=0.05),
)
# What version 1 built for each reference file (its code and state_dict shapes), and what the version-1
# spaces drew for RandomSampler(seed=0): recorded with the code before spec version 2.
V1 = json.loads((Path(__file__).parent / "v1_fixtures.json").read_text())


def test_round_trip_through_json(tmp_path):
    path = tmp_path / "spec.json"
    save_spec(CLASSIC, path)
    assert load_spec(path) == CLASSIC
    assert Spec.from_dict(json.loads(json.dumps(CLASSIC.to_dict()))) == CLASSIC


def test_version_2_is_written_and_its_round_trip_is_the_identity():
    rich = Spec(
        Arch(stages=((8, 16), (16, 12)), transition="pool", transition_width=0, padding="same", head="gap_mlp",
             batch_norm=True, dropout=0.0, kinds=(("conv3", "sep3"), ("conv1", "sep3")), activation="prelu",
             head_width=12),
        Train(optimizer="adamw", lr=0.01, schedule="onecycle", batch_size=64, label_smoothing=0.05,
              weight_decay=1e-5, rotation=10.0, shift=0.1, scale=0.0, ema=0.999))
    data = json.loads(json.dumps(rich.to_dict()))
    assert list(data) == ["version", "arch", "train"] and data["version"] == 2
    assert data["arch"]["kinds"] == [["conv3", "sep3"], ["conv1", "sep3"]] and "augment" not in data["train"]
    assert Spec.from_dict(data) == rich and Spec.from_dict(data).to_dict() == rich.to_dict()
    assert rich.code == "s c8-s16 M cp16-s12 gapm12 bn prelu d0 | adamw .01 oc b64 ls.05 wd1e-05 rot10 sh.1 sc0 ema.999"


def without_wd(code: str) -> str:
    """A code as written before the weight decay was in it."""
    return re.sub(r" wd\S+", "", code)


def test_load_spec_reads_a_best_json_record(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"trial": 3, "params": 7416, "spec": CLASSIC.to_dict()}))
    assert load_spec(path) == CLASSIC


def test_spec_is_immutable_and_hashable():
    with pytest.raises(AttributeError):
        CLASSIC.arch.dropout = 0.1
    assert hash(CLASSIC) == hash(Spec.from_dict(CLASSIC.to_dict()))


def test_code_string_is_short_and_readable():
    assert CLASSIC.code == "v c8-16 T8 c16-16-16 gapc bn d.05 | sgd .05 oc b128 ls0 wd.0001 a.5"


# a second value for every field of Arch and Train: a design that differs in any one field has its own code
OTHER = {"stages": ((8, 16), (16, 12, 16)), "transition": "pool_1x1", "transition_width": 10, "padding": "same",
         "head": "gap_linear", "batch_norm": False, "dropout": 0.1, "kinds": (("conv3", "sep3"), ("conv3",) * 3),
         "activation": "silu", "head_width": 16, "in_channels": 3, "input_size": 32, "num_classes": 100,
         "optimizer": "adamw", "lr": 0.01, "schedule": "cosine", "batch_size": 64, "label_smoothing": 0.1,
         "weight_decay": 1e-5, "rotation": 10.0, "shift": 0.1, "scale": 0.1, "ema": 0.99, "flip": 0.5, "crop": 4,
         "stem": "stride2"}


def test_specs_that_differ_in_any_one_field_have_different_codes():
    # the gap_mlp head, so that its width is used (as the transition's width is, with a 1x1 transition)
    base = Spec(replace(CLASSIC.arch, head="gap_mlp", head_width=12), CLASSIC.train)
    assert {f.name for part in (Arch, Train) for f in fields(part)} == set(OTHER)
    for part in ("arch", "train"):
        for f in fields(getattr(base, part)):
            other = replace(base, **{part: replace(getattr(base, part), **{f.name: OTHER[f.name]})})
            if f.name == "stem":  # the stem halves 28 px: the 'valid' design no longer fits; compare at 'same'
                base = replace(base, arch=replace(base.arch, padding="same"))
                other = replace(other, arch=replace(other.arch, padding="same"))
            assert other != base and Spec.from_dict(other.to_dict()) == other
            assert other.code != base.code, f.name
    # MNIST's shape is not said; another one is
    base = Spec(replace(CLASSIC.arch, head="gap_mlp", head_width=12), CLASSIC.train)
    assert base.code == "v c8-16 T8 c16-16-16 gapm12 bn d.05 | sgd .05 oc b128 ls0 wd.0001 a.5"
    shaped = replace(base.arch, in_channels=3, input_size=32, num_classes=100)
    assert Spec(shaped, base.train).code == ("in3x32 v c8-16 T8 c16-16-16 gapm12 cls100 bn d.05 | "
                                             "sgd .05 oc b128 ls0 wd.0001 a.5")
    assert Spec(base.arch, replace(base.train, weight_decay=0.0)).code.endswith(" ls0 wd0 a.5")


def test_classic_design_counts_7416_parameters():
    assert count_params(build(CLASSIC)) == 7416


@pytest.mark.parametrize("path", reference_files(), ids=lambda p: p.stem)
def test_version_1_reference_files_load_and_build_exactly_as_before(path):
    record, before = json.loads(path.read_text()), V1["reference_modules"][path.stem]
    assert "version" not in record["spec"]  # the files stay version 1
    spec = load_spec(path)
    model = build(spec)
    assert count_params(model) == record["params"]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == before["state_dict"]  # keys, order, shapes
    assert without_wd(spec.code) == record["code"] == before["code"]  # written before the weight decay was in codes
    a = record["spec"]["train"]["augment"]
    assert (spec.train.rotation, spec.train.shift, spec.train.scale) == augment_strengths(a) == (15 * a, 0.1 * a, 0.1 * a)
    assert spec.arch.kinds == tuple(("conv3",) * len(s) for s in spec.arch.stages) and spec.arch.activation == "relu"
    assert spec.train.ema == 0 and Spec.from_dict(spec.to_dict()) == spec  # upgraded, then a v2 round trip


def _v1_random_affine(x, strength):
    """nas.augment.random_affine as version 1 had it (one strength), to compare with."""
    n = x.shape[0]

    def uniform(limit):
        return (torch.rand(n, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(15.0) * strength)
    scale = 1 + uniform(0.10 * strength)
    shift = torch.stack([uniform(2 * 0.10 * strength), uniform(2 * 0.10 * strength)], 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([theta, shift.unsqueeze(2)], 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + BACKGROUND


@pytest.mark.parametrize("a", [0.5, 1.0, 0.3, 0.774, 2.0])
def test_an_upgraded_augment_strength_augments_exactly_as_version_1(a):
    x = torch.randn(32, 1, 28, 28)
    v1 = json.loads(reference_files()[-1].read_text())["spec"]
    t = Spec.from_dict({**v1, "train": {**v1["train"], "augment": a}}).train
    torch.manual_seed(7)
    before = _v1_random_affine(x, a)
    torch.manual_seed(7)
    assert torch.equal(random_affine(x, t.rotation, t.shift, t.scale), before)
    assert random_affine(x, 0.0, 0.0, 0.0) is x  # no augmentation: no random numbers drawn


def _case(**arch):
    base = dict(stages=((16,),), transition="pool", transition_width=0, padding="valid", head="gap_conv",
                batch_norm=True, dropout=0.0, in_channels=8)
    return Arch(**{**base, **arch})


# counted by hand: a block from 8 to 16 channels, then the head (gap_conv from 16 channels: 16*10)
@pytest.mark.parametrize("arch, expected", [
    (_case(kinds=(("conv3",),)), 8 * 9 * 16 + 2 * 16 + 160),  # 3x3 conv (no bias before BN), BN
    (_case(kinds=(("sep3",),)), 8 * 9 + 8 * 16 + 2 * 16 + 160),  # depthwise 3x3, pointwise 1x1, BN
    (_case(kinds=(("sep3",),), batch_norm=False), 8 * 9 + 8 * 16 + 16 + 160),  # the pointwise conv gets the bias
    (_case(kinds=(("conv1",),)), 8 * 16 + 2 * 16 + 160),
    (_case(activation="prelu"), 8 * 9 * 16 + 2 * 16 + 16 + 160),  # one PReLU slope per channel
    (_case(activation="leaky_relu"), 8 * 9 * 16 + 2 * 16 + 160),
    (_case(activation="silu"), 8 * 9 * 16 + 2 * 16 + 160),
    (_case(head="gap_mlp", head_width=12), 8 * 9 * 16 + 2 * 16 + (16 * 12 + 12) + (12 * 10 + 10)),
    (_case(head="gap_mlp", head_width=12, activation="prelu"),
     8 * 9 * 16 + 2 * 16 + 16 + (16 * 12 + 12) + 12 + (12 * 10 + 10)),
])
def test_new_blocks_activations_and_heads_count_as_computed_by_hand(arch, expected):
    model = build(arch)
    assert count_params(model) == expected == sum(p.numel() for p in model.parameters())
    assert model(torch.randn(2, 8, 28, 28)).shape == (2, 10)


def test_fvcore_counts_prelu_slopes():
    assert count_params(nn.PReLU(7)) == 7


def test_a_1x1_block_does_not_shrink_a_valid_map():
    arch = _case(stages=((8, 8, 8), (8,)), kinds=(("conv3", "conv1", "sep3"), ("conv1",)), head="flatten_linear")
    assert feature_sizes(arch) == [24, 12]  # 28 - 2 - 0 - 2, then pooled and kept
    assert build(arch)(torch.randn(2, 8, 28, 28)).shape == (2, 10)
    assert count_params(build(arch)) == (8 * 9 * 8 + 16) + (8 * 8 + 16) + (8 * 9 + 8 * 8 + 16) + (8 * 8 + 16) + (8 * 144 * 10 + 10)


@pytest.mark.parametrize("change, message", [
    ({"arch": {"head": "softmax"}}, "arch.head"),
    ({"arch": {"stages": [[8, 16], []]}}, "every stage needs a block"),
    ({"arch": {"stages": [[16] * 8, [16] * 8], "kinds": []}}, "shrinks below 1 pixel"),
    ({"train": {"lr": -1}}, "train.lr must be a positive number"),
    ({"train": {"weight_decay": 1.5}}, r"train.weight_decay must be in \[0, 1\]"),
    ({"train": {"batch_size": 100000}}, "train.batch_size must be an integer from 1 to 65536"),
    ({"arch": {"stages": [[8]] * 5, "kinds": []}}, "arch.stages: 5 stages, expected 1 to 4"),
    ({"arch": {"stages": [[8], [2048]], "kinds": []}}, "arch.stages: each width must be an integer from 1 to 1024"),
    ({"arch": {"in_channels": 0}}, "arch.in_channels must be a positive integer"),
    ({"arch": {"colour": "red"}}, "unknown key"),
    ({"arch": {"kinds": [["conv3", "conv5"], ["conv3"] * 3]}}, "arch.kinds: each must be one of conv3, sep3, conv1"),
    ({"arch": {"kinds": [["conv3"], ["conv3"] * 3]}}, "one block kind per width"),
    ({"arch": {"kinds": "conv3"}}, "arch.kinds must be a list of lists"),
    ({"arch": {"activation": "tanh"}}, "arch.activation must be one of relu, leaky_relu, prelu, silu"),
    ({"arch": {"head": "gap_mlp", "head_width": 0}}, "arch.head_width must be >= 1 with the gap_mlp head"),
    ({"arch": {"head_width": -1}}, "arch.head_width must be an integer from 0 to 1024"),
    ({"train": {"ema": -0.1}}, r"train.ema must be in \[0, 1\)"),
    ({"train": {"ema": 1.0}}, r"train.ema must be in \[0, 1\)"),
    ({"train": {"rotation": -1}}, r"train.rotation must be in \[0, 180\]"),
    ({"train": {"shift": 1.5}}, r"train.shift must be in \[0, 1\]"),
    ({"train": {"scale": 1.0}}, r"train.scale must be in \[0, 1\)"),
    ({"train": {"augment": 0.5}}, "train: unknown key.s. augment"),  # version 2 has the three strengths instead
    ({"version": 3}, "unknown spec version 3: this nas-budget reads spec versions 1 and 2"),
    ({"version": "2"}, "unknown spec version '2'"),
])
def test_invalid_specs_are_refused_with_the_key_named(tmp_path, change, message):
    data = CLASSIC.to_dict()
    for section, values in change.items():
        if section == "version":
            data["version"] = values
        else:
            data[section].update(values)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert len(str(info.value).splitlines()) == 1


def test_a_version_1_spec_with_version_2_keys_is_refused_with_a_hint():
    data = json.loads(reference_files()[-1].read_text())["spec"]
    with pytest.raises(SpecError, match='train: ema: only in spec version 2; add "version": 2'):
        Spec.from_dict({**data, "train": {**data["train"], "ema": 0.99}})
    with pytest.raises(SpecError, match="train: missing key.s. augment"):
        Spec.from_dict({**data, "train": {k: v for k, v in data["train"].items() if k != "augment"}})
    with pytest.raises(SpecError, match=r"train.augment must be in \[0, 2\]"):
        Spec.from_dict({**data, "train": {**data["train"], "augment": 3}})


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SpecError, match="not a readable JSON"):
        load_spec(tmp_path / "broken.json")
