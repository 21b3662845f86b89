import json

import pytest

from nas import build, count_params, load_spec, save_spec
from nas.spec import Arch, Spec, SpecError, Train

CLASSIC = Spec(
    Arch(stages=((8, 16), (16, 16, 16)), transition="1x1_pool", transition_width=8, padding="valid",
         head="gap_conv", batch_norm=True, dropout=0.05),
    Train(optimizer="sgd", lr=0.05, schedule="onecycle", batch_size=128, label_smoothing=0.0,
          weight_decay=1e-4, augment=0.5),
)


def test_round_trip_through_json(tmp_path):
    path = tmp_path / "spec.json"
    save_spec(CLASSIC, path)
    assert load_spec(path) == CLASSIC
    assert Spec.from_dict(json.loads(json.dumps(CLASSIC.to_dict()))) == CLASSIC


def test_load_spec_reads_a_best_json_record(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"trial": 3, "params": 7416, "spec": CLASSIC.to_dict()}))
    assert load_spec(path) == CLASSIC


def test_spec_is_immutable_and_hashable():
    with pytest.raises(AttributeError):
        CLASSIC.arch.dropout = 0.1
    assert hash(CLASSIC) == hash(Spec.from_dict(CLASSIC.to_dict()))


def test_code_string_is_short_and_readable():
    assert CLASSIC.code == "v c8-16 T8 c16-16-16 gapc bn d.05 | sgd .05 oc b128 ls0 a.5"


def test_classic_design_counts_7416_parameters():
    assert count_params(build(CLASSIC)) == 7416


@pytest.mark.parametrize("change, message", [
    ({"arch": {"head": "softmax"}}, "arch.head"),
    ({"arch": {"stages": [[8, 16], []]}}, "every stage needs a block"),
    ({"arch": {"stages": [[16] * 8, [16] * 8]}}, "shrinks below 1 pixel"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"arch": {"colour": "red"}}, "unknown key"),
])
def test_invalid_specs_are_refused_with_the_key_named(tmp_path, change, message):
    data = CLASSIC.to_dict()
    for section, values in change.items():
        data[section].update(values)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SpecError, match="not a readable JSON"):
        load_spec(tmp_path / "broken.json")
