import shutil

import pytest
import torch

from nas.augment import BACKGROUND, random_affine
from nas.data import DataError, VAL_SIZE, load_search_data, resolve_data_dir


def test_split_is_fixed_disjoint_and_sized(small_data, data_dir):
    assert len(small_data.train) == 512 and len(small_data.held_out) == VAL_SIZE
    again = load_search_data(data_dir, torch.device("cpu"), subset=512)
    assert torch.equal(again.held_out.x, small_data.held_out.x)
    # no validation image is also a training image
    train_rows = {row.numpy().tobytes() for row in small_data.train.x.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in small_data.held_out.x.flatten(1)[:500])
    assert small_data.train.x.shape[1:] == (1, 28, 28) and small_data.train.x.dtype == torch.float32


def test_data_dir_comes_from_flag_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert str(resolve_data_dir("elsewhere")) == "elsewhere"


def _copy_mnist(data_dir, tmp_path):
    shutil.copytree(data_dir / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    return tmp_path


def test_missing_dir_and_missing_or_corrupt_files_are_clear_errors(data_dir, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_search_data(tmp_path / "nowhere", torch.device("cpu"))
    root = _copy_mnist(data_dir, tmp_path)
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupt"):
        load_search_data(root, torch.device("cpu"))
    labels.unlink()
    with pytest.raises(DataError, match="missing"):
        load_search_data(root, torch.device("cpu"))


def test_bad_magic_number_is_corrupt(data_dir, tmp_path):
    root = _copy_mnist(data_dir, tmp_path)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = bytearray(images.read_bytes())
    raw[3] = 0x01
    images.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="bad IDX header"):
        load_search_data(root, torch.device("cpu"))


def test_augmentation_is_batched_seeded_and_keeps_the_background(small_data):
    x = small_data.train.x[:64]
    assert random_affine(x, 0.0, 0.0, 0.0) is x
    torch.manual_seed(0)
    a = random_affine(x, 15.0, 0.1, 0.1)
    torch.manual_seed(0)
    b = random_affine(x, 15.0, 0.1, 0.1)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.allclose(a, x)
    # the corners stay black after a shift or rotation
    assert torch.allclose(a[:, :, 0, 0], torch.full_like(a[:, :, 0, 0], BACKGROUND), atol=1e-4)
