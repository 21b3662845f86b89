"""Every source through the code users run: format-true small files written here for each built-in format
(IDX, gzip'd IDX, CIFAR-10's pickled batches, SVHN's .mat), MNIST as a PNG folder, .npz files; and bad data,
each one line."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import opened_files
from nas.data import DataError, DataSource, data_info, load_search_data, load_train_test, source_of
from nas.data import load as loader
from nas.data.builtin import CIFAR10_CLASSES, IDX_SETS

CPU = torch.device("cpu")


def patterns(n: int, shape: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images and labels 0..9 (each class a brightness band), reproducible."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 25, size=(n, *shape), dtype=np.uint8) + (labels * 23).astype(np.uint8).reshape(
        (n,) + (1,) * len(shape))
    return images, labels


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    head = b"".join(int(v).to_bytes(4, "big") for v in (magic, *array.shape))
    data = head + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_idx_set(root, key: str, n_train: int = 300, n_test: int = 100, gz: bool = False):
    s = IDX_SETS[key]
    train_images, train_labels = patterns(n_train, (28, 28))
    test_images, test_labels = patterns(n_test, (28, 28), 1)
    arrays = [train_images, train_labels, test_images, test_labels]
    for name, array in zip(s.files(), arrays):
        write_idx(root / s.folder / "raw" / name, array, gz)
    return arrays


@pytest.mark.parametrize("key,gz", [("fashion-mnist", False), ("kmnist", True), ("emnist-balanced", False)])
def test_idx_sets_load_through_the_same_reader(tmp_path, key, gz):
    train_images, train_labels, test_images, test_labels = write_idx_set(tmp_path, key, gz=gz)
    ds = DataSource(key, str(tmp_path))
    info = data_info(ds)
    assert info.identity == {"name": key} and info.channels == 1 and info.size == 28
    assert len(info.classes) == len(IDX_SETS[key].classes) and info.train_images == 300
    assert info.mean != (0.1307,)  # measured on these images, not MNIST's
    x, y, _ = loader._raw(ds, "train")
    expected = torch.from_numpy(train_images).unsqueeze(1)
    # EMNIST's files hold each image transposed: it is turned upright
    assert torch.equal(x, expected.transpose(2, 3) if key.startswith("emnist") else expected)
    assert torch.equal(y, torch.from_numpy(train_labels).long())
    splits = load_search_data(ds, CPU)
    assert len(splits.held_out) == 30 and len(splits.train) == 270  # 10 %, stratified: 3 of each class
    assert torch.bincount(splits.held_out.y, minlength=10).tolist() == [3] * 10
    mean = splits.train.x.mean().item()
    assert abs(mean) < 0.05  # normalised by the training images' own statistics
    test = load_train_test(ds, CPU).held_out
    assert len(test) == 100 and torch.equal(test.y, torch.from_numpy(test_labels).long())


def test_a_truncated_idx_file_is_one_line(tmp_path):
    write_idx_set(tmp_path, "fashion-mnist")
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"Fashion-MNIST file .* is corrupt: \d+ bytes, expected \d+"):
        data_info(DataSource("fashion-mnist", str(tmp_path)))


def write_cifar(root, per_batch: int = 20, test: int = 40):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = patterns(test if name == "test_batch" else per_batch, (3, 32, 32), seed=i)
        with (folder / name).open("wb") as f:  # as CIFAR-10 ships them: dicts of bytes keys, numpy data, list labels
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(),
                         b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}, f, 2)
        written.append((images, labels))
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_cases_per_batch": per_batch}, f, 2)
    return written


def test_cifar10_batches(tmp_path):
    written = write_cifar(tmp_path)
    ds = DataSource("cifar10", str(tmp_path))
    info = data_info(ds)
    assert (info.channels, info.size, info.classes[0], len(info.classes)) == (3, 32, "airplane", 10)
    assert len(info.mean) == 3 and info.train_images == 100
    x, y, _ = loader._raw(ds, "train")
    assert torch.equal(x, torch.from_numpy(np.concatenate([w[0] for w in written[:5]])))
    assert torch.equal(y, torch.from_numpy(np.concatenate([w[1] for w in written[:5]])).long())
    test = load_train_test(ds, CPU).held_out
    assert test.x.shape == (40, 3, 32, 32)
    assert load_search_data(ds, CPU).train.background is not None  # augmentation's black follows the data


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"data_batch_3 is corrupt or not a data batch .*posix.system is not allowed"):
        data_info(DataSource("cifar10", str(tmp_path)))
    assert not (tmp_path / "pwned").exists()


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "SVHN"
    folder.mkdir()
    for part, n in (("train", 60), ("test", 20)):
        images, labels = patterns(n, (3, 32, 32), seed=n)
        svhn_labels = np.where(labels == 0, 10, labels)  # SVHN labels the digit 0 as 10
        savemat(folder / f"{part}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": svhn_labels.reshape(-1, 1)})
        if part == "train":
            expected = images, labels
    x, y, info = loader._raw(DataSource("svhn", str(tmp_path)), "train")
    assert torch.equal(x, torch.from_numpy(expected[0])) and torch.equal(y, torch.from_numpy(expected[1]).long())
    assert info.classes == tuple(range(10)) and info.channels == 3


def write_folder(root, images: np.ndarray, labels, names=None, fmt="png") -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        d = root / str(names[label] if names else label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / f"{i:05d}.{fmt}")


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_mnist_as_a_png_folder_gives_the_idx_tensors(data_dir, tmp_path):
    mnist = DataSource("mnist", str(data_dir))
    x, y, _ = loader._raw(mnist, "train")
    tx, ty, _ = loader._raw(mnist, "test")
    n, m = 3000, 500
    write_folder(tmp_path / "digits" / "train", x[:n, 0].numpy(), y[:n].tolist())
    write_folder(tmp_path / "digits" / "test", tx[:m, 0].numpy(), ty[:m].tolist())
    ds = source_of(str(tmp_path / "digits"), None)
    fx, fy, info = loader._raw(ds, "train")
    # the folder lists class by class, file by file: the IDX images in that order are the same bits
    order = torch.from_numpy(np.lexsort((np.arange(n), y[:n].numpy())))
    assert torch.equal(fx, x[:n][order]) and torch.equal(fy, y[:n][order])
    assert info.classes == tuple(str(c) for c in range(10)) and info.resize is None
    assert info.identity["kind"] == "folder" and sum(info.identity["images_per_class"].values()) == n + m
    test = load_train_test(ds, CPU).held_out
    assert len(test) == m


def test_folder_without_test_sets_aside_a_fixed_stratified_test_part(tmp_path):
    images, labels = patterns(200, (16, 16))
    write_folder(tmp_path / "f", images, labels.tolist())
    ds = source_of(str(tmp_path / "f"), None)
    train_x, train_y, info = loader._raw(ds, "train")
    test_x, test_y, _ = loader._raw(ds, "test")
    assert len(train_y) == 160 and len(test_y) == 40 and torch.bincount(test_y).tolist() == [4] * 10
    assert any("test: 40 images (20% of each class, set aside by seed 0)" in n for n in info.notes)
    train_rows = {r.numpy().tobytes() for r in train_x.flatten(1)}
    assert not any(r.numpy().tobytes() in train_rows for r in test_x.flatten(1))
    loader._RAW.clear()
    assert torch.equal(loader._raw(ds, "test")[0], test_x)  # the same images every time


def test_mixed_sizes_and_modes_follow_the_rule(tmp_path):
    root = tmp_path / "mixed"
    for c, (size, mode) in enumerate([((32, 32), "RGB"), ((32, 32), "L"), ((40, 24), "P")]):
        for i in range(4):
            d = root / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.new(mode, size, color=40 * c + i).save(d / f"{i}.png")
    (root / "class0" / "notes.txt").write_text("not an image")
    info = data_info(source_of(str(root), None))
    assert (info.channels, info.size) == (3, 32)
    assert "resized to 32x32" in info.resize and "converted to RGB" in info.resize
    assert any("1 file(s)" in n and "skipped" in n for n in info.notes)
    small = data_info(source_of(str(root), None, image_size=16, channels=1))
    assert (small.channels, small.size) == (1, 16) and "colour to grey" in small.resize
    x, _, _ = loader._raw(source_of(str(root), None, image_size=16, channels=1), "train")
    assert x.shape[1:] == (1, 16, 16)


def test_npz_with_and_without_a_test_part(tmp_path):
    images, labels = patterns(120, (20, 20, 3))
    np.savez(tmp_path / "own.npz", x_train=images, y_train=labels, x_test=images[:30], y_test=labels[:30])
    ds = source_of(str(tmp_path / "own.npz"), None)
    info = data_info(ds)
    assert (info.channels, info.size, len(info.classes)) == (3, 20, 10) and info.identity["kind"] == "npz"
    x, _, _ = loader._raw(ds, "train")
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert len(load_train_test(ds, CPU).held_out) == 30
    grey, glabels = patterns(100, (12, 12))
    np.savez(tmp_path / "grey.npz", x_train=grey, y_train=glabels.astype(np.uint8),
             class_names=np.array(list("abcdefghij")))
    ds = source_of(str(tmp_path / "grey.npz"), None)
    assert data_info(ds).classes[:2] == ("a", "b") and len(load_train_test(ds, CPU).held_out) == 20


def test_a_stratified_validation_split_and_val_size(tmp_path):
    images, labels = patterns(200, (8, 8))
    np.savez(tmp_path / "d.npz", x_train=images, y_train=labels, x_test=images[:10], y_test=labels[:10])
    splits = load_search_data(source_of(str(tmp_path / "d.npz"), None, val_size=50), CPU)
    assert len(splits.held_out) == 50 and sorted(torch.bincount(splits.held_out.y).tolist()) == [5] * 10
    with pytest.raises(DataError, match=r"--val-size 200: the validation split needs 1 to 199"):
        load_search_data(source_of(str(tmp_path / "d.npz"), None, val_size=200), CPU)


# ---- bad data: one line each


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and len(text) < 300, text
    return text


def _small_folder(root, classes=("a", "b"), n=3, size=(8, 8)):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", size, 10 * i).save(root / c / f"{i}.png")
    return root


def _refused(path, match, **kwargs) -> str:
    with pytest.raises(DataError) as exc_info:
        data_info(source_of(str(path), None, **kwargs))
    line = one_line(exc_info)
    assert match in line, line
    return line


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "no class folders")
    _refused(_small_folder(tmp_path / "one", classes=("only",)), "a single class (only)")
    root = _small_folder(tmp_path / "hollow")
    (root / "c").mkdir()
    (root / "c" / "readme.md").write_text("x")
    _refused(root, "c: a class folder with no PNG/JPEG/BMP images")
    root = _small_folder(tmp_path / "corrupt")
    (root / "a" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _refused(root, f"{root / 'a' / '9.png'}: not a readable image")
    root = _small_folder(tmp_path / "truncated")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "b" / "t.png")
    (root / "b" / "t.png").write_bytes((root / "b" / "t.png").read_bytes()[:200])
    _refused(root, f"{root / 'b' / 't.png'}: a corrupt or truncated image")
    root = _small_folder(tmp_path / "loop")
    os.symlink(root, root / "a" / "back")
    _refused(root, "a symlink loop")
    root = _small_folder(tmp_path / "selfloop")
    os.symlink(root / "a" / "x.png", root / "a" / "x.png")
    _refused(root, "x.png")
    _refused(_small_folder(tmp_path / "lonely", n=1), "one image; a class needs at least two")


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    root = _small_folder(tmp_path / "bomb", size=(8, 8))
    Image.new("L", (200, 200)).save(root / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels: over twice the limit
    _refused(root, "big.png: more pixels than Pillow's decompression-bomb limit (10,000): refused")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # between the limit and twice it: Pillow only warns
    _refused(root, "big.png: more pixels than Pillow's decompression-bomb limit")


def test_bad_npz_files(tmp_path):
    images, labels = patterns(40, (8, 8))
    cases = {
        "outside": dict(x_train=images, y_train=labels, x_test=images[:5], y_test=labels[:5] + 20),
        "negative": dict(x_train=images, y_train=labels - 1),
        "float": dict(x_train=images, y_train=labels.astype(np.float32)),
        "lengths": dict(x_train=images, y_train=labels[:-3]),
        "not_uint8": dict(x_train=images.astype(np.float32), y_train=labels),
        "no_y": dict(x_train=images),
        "half_test": dict(x_train=images, y_train=labels, x_test=images[:4]),
        "gap": dict(x_train=images, y_train=np.where(labels == 3, 4, labels)),
    }
    expected = {"outside": "y_test has labels outside 0..9 (2", "negative": "labels outside 0..8 (-1 to 8)",
                "float": "y_train must be a 1-D integer array (it is float32", "lengths": "40 images but y_train 37",
                "not_uint8": "x_train must be uint8 images", "no_y": "no y_train array",
                "half_test": "x_test and y_test come together", "gap": "class 3 has no training images"}
    for name, arrays in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        _refused(tmp_path / f"{name}.npz", expected[name])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _refused(tmp_path / "junk.npz", "not a readable .npz file")
    objects = tmp_path / "objects.npz"
    np.savez(objects, x_train=images, y_train=np.array([object()] * 40, dtype=object))
    _refused(objects, "array y_train cannot be read")


def test_names_and_paths_that_are_not_data(tmp_path):
    with pytest.raises(DataError, match="neither a built-in set"):
        source_of("imagenet", None)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="must be an .npz"):
        source_of(str(tmp_path / "x.csv"), None)
    with pytest.raises(DataError, match="--channels 2: 1 .grey. or 3"):
        source_of("mnist", None, channels=2)


def test_data_too_large_for_memory_is_refused_before_loading(tmp_path, monkeypatch):
    root = _small_folder(tmp_path / "f", n=4)
    monkeypatch.setattr(loader, "available_memory", lambda: 1000)
    reads = []
    monkeypatch.setattr(loader.FolderSource, "read", lambda *a, **k: reads.append(1))
    line = _refused(root, "images of 1x8x8 need about", image_size=None)
    assert "GiB of memory" in line and not reads


@pytest.mark.slow
def test_a_folder_of_a_hundred_thousand_tiny_files_loads(tmp_path):
    root = tmp_path / "tiny"
    png = {}
    for c in range(10):
        buf = __import__("io").BytesIO()
        Image.new("L", (4, 4), 20 * c).save(buf, format="PNG")
        png[c] = buf.getvalue()
        (root / str(c)).mkdir(parents=True)
    for i in range(100_000):
        (root / str(i % 10) / f"{i}.png").write_bytes(png[i % 10])
    info = data_info(source_of(str(root), None))
    assert info.train_images == 80_000 and info.size == 4


def test_the_search_split_never_opens_a_folders_test_images(tmp_path):
    images, labels = patterns(100, (8, 8))
    write_folder(tmp_path / "f", images, labels.tolist())
    ds = source_of(str(tmp_path / "f"), None)
    with opened_files() as opened:
        splits = load_search_data(ds, CPU)
    test_files = {str(p) for p in loader.open_source(ds)._files["test"][0]}
    assert len(splits.train) + len(splits.held_out) == 80 and len(test_files) == 20
    assert any(p.endswith(".png") for p in opened) and not test_files & set(opened)


@pytest.mark.parametrize("key,cls,attr,where", [
    ("fashion-mnist", "FashionMNIST", "mirrors", "FashionMNIST/raw/"),
    ("cifar10", "CIFAR10", "url", ""),
])
def test_a_failed_download_of_another_set_is_one_line_and_leaves_no_folders(tmp_path, monkeypatch, key, cls, attr,
                                                                          where):
    import socket

    import torchvision.datasets

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    url = f"http://127.0.0.1:{port}/"
    monkeypatch.setattr(getattr(torchvision.datasets, cls), attr, [url] if attr == "mirrors" else url + "c.tar.gz")
    monkeypatch.setattr("nas.data.download.DOWNLOAD_TIMEOUT", 1.0)
    with pytest.raises(DataError) as exc_info:
        data_info(source_of(key, str(tmp_path / "fresh"), download=True))
    line = one_line(exc_info)
    assert line.startswith(f"cannot download {IDX_SETS[key].title if key in IDX_SETS else 'CIFAR-10'} (") \
        and "Connection refused" in line, line
    assert f"{tmp_path / 'fresh'}/{where}" in line, line
    assert not (tmp_path / "fresh").exists()


def test_a_test_folder_without_images_is_one_line(tmp_path):
    root = tmp_path / "split"
    _small_folder(root / "train")
    (root / "test" / "a").mkdir(parents=True)
    _refused(root, "test: no PNG/JPEG/BMP images in its class folders")
    _small_folder(root / "test", classes=("a",))  # one class with test images is enough
    assert data_info(source_of(str(root), None)).classes == ("a", "b")
    (root / "test" / "zebra").mkdir()
    _refused(root, "class folder zebra is not in train/")
