"""Your own images through the commands: a tiny 32x32 colour folder searched, exported, retrained and evaluated
(the ONNX file carrying the data's preprocessing); a study that refuses other data; bad data as one line with
nothing stored."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from conftest import ROOT, TINY, one_line_error, tree_hashes

CLASSES = ("blue_h", "blue_v", "red_h", "red_v")


def shapes_folder(root, per_class: int = 40):
    """32x32 RGB noise with red or blue stripes, horizontal or vertical: four classes a small CNN tells apart."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
            channel, offset = (2 if name.startswith("blue") else 0), rng.integers(0, 4)
            if name.endswith("h"):
                image[offset::4, :, channel] = 220
            else:
                image[:, offset::4, channel] = 220
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


SEARCH = ["--budget", "3000", "--space", TINY, "--trials", "2", "--epochs", "2", "--rungs", "none",
          "--finalists", "1", "--finalist-seeds", "1", "--no-warm-start", "--device", "cpu", "-q"]


@pytest.mark.slow
def test_a_colour_folder_end_to_end(cli, tmp_path):
    shapes_folder(tmp_path / "shapes")
    result = cli("search", *SEARCH, "--data", "shapes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = tmp_path / "studies" / "mnist_tiny-shapes-b3000"  # the data in the default study name
    best = json.loads((study / "best.json").read_text())
    assert best["spec"]["arch"]["in_channels"] == 3 and best["spec"]["arch"]["input_size"] == 32
    assert best["spec"]["arch"]["num_classes"] == 4 and best["data"]["kind"] == "folder"
    assert best["data"]["images_per_class"] == dict.fromkeys(CLASSES, 40)
    assert best["preprocessing"]["class_labels"] == list(CLASSES) and len(best["preprocessing"]["mean"]) == 3

    # continuing the study on other data is one line, and changes nothing
    before = tree_hashes(tmp_path / "studies")
    other = cli("search", *SEARCH, "--data", "shapes", "--image-size", "16", "--study", "mnist_tiny-shapes-b3000",
                cwd=tmp_path)
    assert "was run on 3x32x32 images, not 3x16x16" in one_line_error(other)
    shapes_folder(tmp_path / "more", per_class=41)
    moved = cli("search", *SEARCH, "--data", "more", "--study", "mnist_tiny-shapes-b3000", cwd=tmp_path)
    assert "was run on data shapes (folder, 4 classes, 160 images" in one_line_error(moved)
    assert tree_hashes(tmp_path / "studies") == before

    exported = cli("export", "--study", "mnist_tiny-shapes-b3000", "--out", "found.json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "found.json").read_text())["data"] == best["data"]
    refused = cli("retrain", "found.json", "--epochs", "1", "--seeds", "1", cwd=tmp_path)  # which folder? it says
    assert "was found on your own data shapes" in one_line_error(refused)
    retrained = cli("retrain", "found.json", "--data", "shapes", "--epochs", "2", "--seeds", "1", cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr
    metrics = json.loads((tmp_path / "found_retrain" / "metrics.json").read_text())
    assert metrics["test_images"] == 32 and metrics["data"] == best["data"]  # 20 % of each class set aside

    session = onnxruntime.InferenceSession(str(tmp_path / "found_retrain" / "model.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_labels"]) == list(CLASSES) and meta["channels"] == "3"
    mean, std = np.array(json.loads(meta["mean"])), np.array(json.loads(meta["std"]))
    assert list(mean) == best["preprocessing"]["mean"] and list(std) == best["preprocessing"]["std"]
    pixels = np.asarray(Image.open(tmp_path / "shapes" / "red_v" / "0.png"), dtype=np.float32)  # as a user would
    x = ((pixels / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    assert session.run(["logits"], {"images": x})[0].shape == (1, 4)

    # a found-model record of it says its data, as best.json does
    shipped = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ship_found.py"), "--study",
                              "mnist_tiny-shapes-b3000", "--retrain-dir", "found_retrain", "--command", "nas search ...",
                              "--search-seconds", "1", "--out", "shipped.json"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300,
                             env={**{k: v for k, v in os.environ.items() if k != "NAS_STUDIES_DIR"},
                                  "PYTHONPATH": str(ROOT)})
    assert shipped.returncode == 0, shipped.stderr
    record = json.loads((tmp_path / "shipped.json").read_text())
    assert record["data"] == best["data"] and record["preprocessing"] == best["preprocessing"]

    # evaluate finds the data the checkpoint names, prepared as it was trained
    evaluated = cli("evaluate", "found_retrain/seed0.pt", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy: {metrics['test_acc'][0]:.2f} %" in evaluated.stdout and "red_v" in evaluated.stdout


@pytest.mark.parametrize("case,make,message", [
    ("empty folder", lambda d: d.mkdir(), "no class folders"),
    ("one class", lambda d: shapes_folder(d) and [p.unlink() for c in CLASSES[1:] for p in (d / c).iterdir()]
     and [(d / c).rmdir() for c in CLASSES[1:]], "a single class (blue_h)"),
    ("corrupt image", lambda d: shapes_folder(d) and [(d / "red_h" / f"{i}.png").write_bytes(b"\x89PNG broken")
                                                      for i in range(10)],  # some in the training part, surely
     ".png: not a readable image"),
    ("bad npz", lambda d: np.savez(d, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 2, 9])),
     "class 3 has no training images"),
    ("unknown name", lambda d: None, "neither a built-in set"),
])
@pytest.mark.parametrize("command", ["search", "retrain", "bench", "evaluate"])
def test_bad_data_is_one_line_exit_2_and_stores_nothing(cli, tmp_path, case, make, message, command):
    data = tmp_path / ("d.npz" if case == "bad npz" else "d")
    make(data)
    if command == "evaluate":  # an MNIST model's checkpoint (random weights), measured on the bad data
        from nas.bundled import find_spec
        from nas.checkpoint import save_checkpoint
        from nas.model import build
        from nas.spec import load_spec

        spec = load_spec(find_spec("reference/4_final"))
        save_checkpoint(tmp_path / "m.pt", spec, build(spec), {})
    before = tree_hashes(tmp_path)
    args = {"search": ["search", *SEARCH], "retrain": ["retrain", "reference/4_final", "--epochs", "1"],
            "bench": ["bench", "--ablation"], "evaluate": ["evaluate", "m.pt"]}[command]
    result = cli(args[0], *args[1:], "--data", str(data), cwd=tmp_path)
    assert message in one_line_error(result)
    assert tree_hashes(tmp_path) == before and not (tmp_path / "studies").exists()


def test_a_spec_for_other_data_is_refused_in_one_line(cli, tmp_path):
    shapes_folder(tmp_path / "shapes", per_class=3)
    result = cli("retrain", "reference/4_final", "--data", "shapes", "--epochs", "1", cwd=tmp_path)
    line = one_line_error(result)
    assert "does not fit shapes (3-channel 32x32 images, 4 classes)" in line and "arch.in_channels is 1, not 3" in line


def test_a_reference_for_mnist_is_adapted_to_the_data_for_a_warm_start():
    from nas.cost import count_params
    from nas.model import build
    from nas.search.warm_start import warm_starts
    from nas.space import load_space

    space = load_space("mnist").for_data({"in_channels": 3, "input_size": 32, "num_classes": 4})
    found, (name, params, _) = warm_starts(space, 8000, [])  # found/b4000 widened: the same design, queued once
    assert found[0] == "found/b8000 (first and last layer adapted to the data) at widths x0.97"  # 3 channels: over
    assert name == "4_final (first and last layer adapted to the data)"
    spec = space.spec_from_params(params)  # what the queued trial draws
    assert (spec.arch.in_channels, spec.arch.input_size, spec.arch.num_classes) == (3, 32, 4)
    assert count_params(build(spec)) == 7416 + 2 * 9 * 8 - 6 * 16  # 3 input channels; 4 classes, not 10 (no bias)
    assert [n for n, *_ in warm_starts(load_space("mnist"), 8000, [])] == ["found/b8000", "4_final"]  # MNIST: as made
