"""Flip and crop: the spec's fields (left out of its JSON at their defaults), the space keys, the batch
augmentation itself, and no flips for digits or letters."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import one_line_error
from nas.augment import augment, random_affine, random_crop, random_flip
from nas.data import MNIST_INFO, check_fits
from nas.errors import SpecError
from nas.space import load_space
from nas.spec import Spec, save_spec
from nas.train import train
from test_spec import CLASSIC

FLIPPED = replace(CLASSIC, train=replace(CLASSIC.train, flip=0.5, crop=4))
# each bundled MNIST space's content hash before flip and crop existed: their studies continue
HASHES = {"mnist": "1a6a1e10d155e5d4cd7aa17336fed903d3bdf9e0c59914918b1fab173549cc3e",
          "mnist_classic": "12b60c8c15dd1e68bffaf07e5e96431e4e6011193f53a222c6eda5d6ecb0ac7e",
          "mnist_small": "9b2efd4a18be632d3875150744ee6450d5ad1d596ba46078ed5757125eaaaee0",
          "mnist_tiny": "134655f68833f65c1fc9f3858c4428190d04e33b6197540ef836e2b4a0a1e6a2"}


def test_a_flip_mirrors_the_images_it_draws_and_no_others():
    x = torch.arange(4 * 2 * 5 * 7, dtype=torch.float32).view(4, 2, 5, 7)  # no image is its own mirror
    assert torch.equal(random_flip(x, 1.0), torch.flip(x, [3]))
    assert random_flip(x, 0.0) is x
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    out = random_flip(x, 0.5)
    mirrored = [torch.equal(o, torch.flip(i, [2])) for i, o in zip(x, out)]
    assert all(m or torch.equal(o, i) for m, i, o in zip(mirrored, x, out))
    assert 16 < sum(mirrored) < 48  # about half


def test_a_crop_keeps_the_size_and_moves_each_image_within_the_padding():
    torch.manual_seed(1)
    x, pad, black = torch.rand(40, 3, 10, 12) + 1, 3, (-0.5, -1.0, -2.0)
    out = random_crop(x, pad, black)
    assert out.shape == x.shape
    fill = torch.tensor(black).view(3, 1, 1)
    moves = []
    for image, cropped in zip(x, out):
        padded = fill.expand(3, 10 + 2 * pad, 12 + 2 * pad).clone()
        padded[:, pad:pad + 10, pad:pad + 12] = image
        found = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                 if torch.equal(padded[:, pad + dy:pad + dy + 10, pad + dx:pad + dx + 12], cropped)]
        assert len(found) == 1  # the image moved by whole pixels within the padding, filled with the data's black
        moves.append(found[0])
    assert len(set(moves)) > 10 and random_crop(x, 0) is x


def test_without_flip_or_crop_the_augmentation_draws_what_it_always_drew():
    x = torch.randn(16, 1, 28, 28)
    torch.manual_seed(3)
    before = random_affine(x, 10.0, 0.1, 0.05), torch.rand(3)  # the images, and the generator's next draws
    torch.manual_seed(3)
    now = augment(x, replace(CLASSIC.train, rotation=10.0, shift=0.1, scale=0.05)), torch.rand(3)
    assert all(torch.equal(a, b) for a, b in zip(before, now))


def test_flip_and_crop_are_left_out_of_the_json_at_their_defaults(tmp_path):
    data = CLASSIC.to_dict()
    assert not {"flip", "crop"} & set(data["train"]) and "stem" not in data["arch"]
    assert json.dumps(Spec.from_dict(data).to_dict()) == json.dumps(data)
    save_spec(FLIPPED, tmp_path / "f.json")
    stored = json.loads((tmp_path / "f.json").read_text())
    assert (stored["train"]["flip"], stored["train"]["crop"]) == (0.5, 4) and Spec.from_dict(stored) == FLIPPED
    assert FLIPPED.code == CLASSIC.code + " fl.5 cr4"


@pytest.mark.parametrize("change, message", [
    ({"flip": 1.5}, "train.flip must be in [0, 1] (the probability of a horizontal flip)"),
    ({"flip": True}, "train.flip must be"),
    ({"crop": -1}, "train.crop must be an integer from 0 to 16"),
    ({"crop": 2.5}, "train.crop must be an integer from 0 to 16")])
def test_out_of_range_flips_and_crops_are_refused(change, message):
    data = CLASSIC.to_dict()
    data["train"].update(change)
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        Spec.from_dict(data)


def test_a_space_draws_flips_and_crops_and_replays_them(tmp_path):
    own = tmp_path / "flips.yaml"
    own.write_text(Path(load_space("mnist").path).read_text().replace("name: mnist", "name: flips")
                   + "  flip: [0.0, 0.5]\n  crop: [0, 4]\n")
    space = load_space(own)
    params, moved = space.params_for(FLIPPED)
    assert (params["flip"], params["crop"], moved) == (0.5, 4, {})
    assert space.spec_from_params(params) == FLIPPED
    # a space without them (every MNIST space) moves both to 0, and keeps its content hash
    params, moved = load_space("mnist").params_for(FLIPPED)
    assert "flip" not in params and moved == {"flip": (0.5, 0.0), "crop": (4, 0)}
    assert {name: load_space(name).content_hash for name in HASHES} == HASHES


def test_digits_and_letters_are_never_flipped(cli, tmp_path):
    colour = load_space("colour32")
    svhn = colour.for_data({"in_channels": 3, "input_size": 32, "num_classes": 10}, flips=False)
    assert colour.domains["train.flip"] == (0.0, 0.5) and svhn.domains["train.flip"] == (0.0,)
    assert "no horizontal flips" in svhn.rule and colour.for_data(MNIST_INFO.shape, flips=True) is colour
    assert not MNIST_INFO.mirrorable
    with pytest.raises(SpecError, match="train.flip is 0.5, but MNIST holds digits or letters"):
        check_fits(FLIPPED)
    check_fits(replace(FLIPPED, train=replace(FLIPPED.train, flip=0.0)))  # a crop is fine
    save_spec(FLIPPED, tmp_path / "flipped.json")
    result = cli("retrain", "flipped.json", "--epochs", "1", "--seeds", "1", cwd=tmp_path)
    assert "set train.flip to 0" in one_line_error(result)
    assert not (tmp_path / "flipped_retrain").exists()


def test_a_spec_with_flip_and_crop_trains(small_data):
    torch.manual_seed(0)
    result = train(FLIPPED, small_data, epochs=1, seed=0)
    assert len(result.history) == 1 and 0 <= result.history[0].train_acc <= 100
