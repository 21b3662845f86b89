"""What a newcomer gets from the files: an ONNX model and a checkpoint that say how to prepare an image,
and data errors that are one line with the way out (download failed, a --data-dir one level too deep,
a torchvision built for another torch)."""

import builtins
import json
import socket
from importlib import metadata

import numpy as np
import onnxruntime
import pytest
import torch

from nas import __version__
from nas.bundled import reference_files
from nas.checkpoint import ONNX_FILE, export_models, load_checkpoint, save_checkpoint
from nas.cost import count_params
from nas.data import (_FILES, MEAN, PREPROCESSING, STD, DataError, _load_raw, check_data, load_search_data,
                      load_train_test)
from nas.model import build
from nas.spec import Spec
from nas.version import commit

FINAL = next(p for p in reference_files() if p.name == "4_final.json")
KEYS = {"mean", "std", "input_size", "channels", "transform", "class_labels", "code", "spec", "params", "version",
        "commit"}


def _final():
    spec = Spec.from_dict(json.loads(FINAL.read_text())["spec"])
    torch.manual_seed(0)
    return spec, build(spec).eval()  # random weights: enough for the metadata and the logits check


def readme_snippet(path, image):
    """The README's snippet, as a user runs it: `image` is a 28x28 uint8 array."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map  # preprocessing, class_labels, code, spec, params, ...
    mean, std, size = float(meta["mean"]), float(meta["std"]), int(meta["input_size"])
    x = ((image.astype(np.float32) / 255.0 - mean) / std).reshape(1, 1, size, size)  # pixels/255, then (x - mean) / std
    logits = session.run(["logits"], {"images": x})[0]
    return json.loads(meta["class_labels"])[int(logits.argmax())], logits


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_onnx_file_carries_its_metadata(tmp_path, data_dir):
    spec, model = _final()
    params = count_params(model)
    test = load_train_test(data_dir, torch.device("cpu"), subset=64).held_out
    export_models(model, test.x[:32], tmp_path, spec=spec, params=params)  # the call nas/retrain.py makes
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert set(meta) == KEYS
    assert float(meta["mean"]) == MEAN == 0.1307 and float(meta["std"]) == STD == 0.3081
    assert int(meta["input_size"]) == 28 and int(meta["channels"]) == 1
    assert meta["transform"] == "pixels/255, then (x - mean) / std"
    assert json.loads(meta["class_labels"]) == list(range(10))
    assert meta["code"] == spec.code and Spec.from_dict(json.loads(meta["spec"])) == spec
    assert int(meta["params"]) == params == 7416
    assert meta["version"] == __version__ and meta["commit"] == (commit() or "unknown")

    # the README's snippet, from raw pixels, gives the logits PyTorch gives on the loader's normalised tensor
    raw = _load_raw(data_dir, False, False)[0][0].numpy()  # the first test image, uint8
    label, logits = readme_snippet(tmp_path / ONNX_FILE, raw)
    with torch.no_grad():
        expected = model(test.x[:1])
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4) and label == int(expected.argmax())


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_old_export_call_still_works_without_a_spec(tmp_path):
    _, model = _final()
    diffs = export_models(model, torch.randn(8, 1, 28, 28), tmp_path)
    assert set(diffs) == {"pt2_max_abs_diff", "onnx_max_abs_diff"}
    meta = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE)).get_modelmeta().custom_metadata_map
    assert set(meta) == KEYS - {"code", "spec"} and meta["params"] == "7416"  # counted from the model


def test_checkpoint_carries_the_preprocessing_and_old_ones_still_load(tmp_path):
    spec, model = _final()
    save_checkpoint(tmp_path / "new.pt", spec, model, {})
    payload, loaded, _ = load_checkpoint(tmp_path / "new.pt")
    assert payload["preprocessing"] == PREPROCESSING and loaded == spec
    assert payload["preprocessing"] == {"mean": 0.1307, "std": 0.3081, "input_size": 28, "channels": 1,
                                        "transform": "pixels/255, then (x - mean) / std"}
    del payload["preprocessing"]  # as written before the key existed
    torch.save(payload, tmp_path / "old.pt")
    payload, loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert "preprocessing" not in payload and loaded == spec


# ---- data errors


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


def test_failed_download_is_one_line_with_the_files_to_place_by_hand(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/again/"])
    monkeypatch.setattr("nas.data.download.DOWNLOAD_TIMEOUT", 1.0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as exc_info:
        check_data(tmp_path / "nomnist", download=True)
    line = _one_line(exc_info)
    assert line.startswith("cannot download MNIST (") and "Connection refused" in line, line
    assert "<urlopen" not in line and "Tried http" not in line, line  # the reason only, not each mirror's story
    assert line.endswith(f"by hand, put {', '.join(_FILES)} (unzipped) in {tmp_path / 'nomnist'}/MNIST/raw/"), line
    assert len(line) - len(str(tmp_path / "nomnist")) <= 200, len(line)
    assert not (tmp_path / "nomnist").exists()  # no empty folders left
    with pytest.raises(DataError) as exc_info:  # relative, as typed: `--data-dir nomnist` -> ~200 characters
        check_data(type(tmp_path)("nomnist"), download=True)
    assert len(_one_line(exc_info)) <= 200


@pytest.fixture
def misplaced(tmp_path):
    """A data dir laid out right (tmp/data/MNIST/raw/ with the four file names, empty), to point one level too deep."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in _FILES:
        (raw / name).touch()
    return tmp_path / "data"


@pytest.mark.parametrize("download", [False, True])
def test_data_dir_one_level_too_deep_says_did_you_mean(misplaced, download):
    before = sorted(misplaced.rglob("*"))
    for given in (misplaced / "MNIST" / "raw", misplaced / "MNIST"):
        with pytest.raises(DataError) as exc_info:
            check_data(given, download=download)
        assert _one_line(exc_info).endswith(f"did you mean --data-dir {misplaced}?"), exc_info.value
    assert sorted(misplaced.rglob("*")) == before  # nothing downloaded into MNIST/raw/MNIST/raw/


def test_data_dir_holding_the_files_under_another_name_says_where_they_go(misplaced, tmp_path):
    flat = tmp_path / "mnist_files"
    (misplaced / "MNIST" / "raw").rename(flat)
    with pytest.raises(DataError) as exc_info:
        check_data(flat)
    assert _one_line(exc_info).endswith(f"{flat} holds MNIST files: move them into {flat}/MNIST/raw/"), exc_info.value
    with pytest.raises(DataError, match="is missing; pass --download"):  # an unrelated empty folder: as before
        check_data(misplaced)


def _break_torchvision(monkeypatch, error: Exception) -> None:
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise error
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_torchvision_built_for_another_torch_is_one_line_and_only_needed_to_download(monkeypatch, data_dir, tmp_path):
    _break_torchvision(monkeypatch, RuntimeError("operator torchvision::nms does not exist"))
    assert len(load_search_data(data_dir, torch.device("cpu"), subset=64).train) == 64  # reading needs no torchvision
    with pytest.raises(DataError) as exc_info:
        check_data(tmp_path / "fresh", download=True)
    torch_v, vision_v = metadata.version("torch"), metadata.version("torchvision")
    assert _one_line(exc_info) == (f"torchvision {vision_v} does not match torch {torch_v}: importing it fails "
                                   f"(operator torchvision::nms does not exist); install the torchvision built "
                                   f"for torch {torch_v}")
    assert not (tmp_path / "fresh").exists()


def test_torchvision_missing_is_one_line(monkeypatch, tmp_path):
    _break_torchvision(monkeypatch, ModuleNotFoundError("No module named 'torchvision'", name="torchvision"))
    with pytest.raises(DataError, match=r"^--download needs torchvision, which is not installed \(torch "):
        check_data(tmp_path / "fresh", download=True)
