"""The one path from any source to the trainer's tensors: open the source, fit its images to one shape
(channels, size: the data's own unless asked, the rule said in the header), refuse what would not fit in memory
before loading, carve the validation split out of the training images, normalise with the training images'
mean and std per channel. Raw images are kept per process, so every trial reads them once.

Only `load_train_test` reads a test part; the search reads `load_search_data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DataError, SpecError
from ..spec import Spec
from .builtin import IDX_SETS, Cifar10Source, IdxSource, SvhnSource, did_you_mean
from .folder import FolderSource, NpzSource
from .source import MEAN, MNIST_INFO, SIZE, STD, DataInfo, DataSource, as_source
from .split import SPLIT_SEED, Split, Splits, random_split, stratified_split

VAL_SIZE = 5_000  # MNIST's validation images (and at most that many for other data)
VAL_SHARE = 0.1  # of the training images, for other data than MNIST
LUMA = (0.299, 0.587, 0.114)  # colour to grey, as Pillow's convert("L")


_RAW: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # per process: (source, part, shape) -> uint8 images, labels
_INFO: dict[tuple, DataInfo] = {}
_FOLDERS: dict[str, FolderSource] = {}


def open_source(ds: DataSource, part: str | None = "train"):
    """The source object for `ds`, its files checked (or, with download, fetched) for `part` (None: both)."""
    if not ds.builtin:
        path = Path(ds.name)
        if not path.is_dir():
            return NpzSource(path)
        cached = _FOLDERS.get(ds.name)
        if cached is None or not cached.unchanged():  # listed (and its headers read) once per process
            cached = _FOLDERS[ds.name] = FolderSource(path)
        return cached
    data_dir = Path(ds.data_dir)
    if not data_dir.is_dir() and not ds.download:
        raise DataError(f"data directory {data_dir} does not exist (use --data-dir or NAS_DATA_DIR, or --download)")
    if ds.name in IDX_SETS:
        source = IdxSource(ds.name, data_dir)
        hint = did_you_mean(data_dir, ds.name) if data_dir.is_dir() else None
        if ds.download and hint:  # else the download would put a second copy in <data dir>/<set>/raw/
            raise DataError(f"{data_dir} is not the data directory {source.set.folder}/raw/ sits in; {hint}")
    else:
        source, hint = (Cifar10Source(data_dir) if ds.name == "cifar10" else SvhnSource(data_dir)), None
    if ds.download:
        source.fetch(part or "train")
    source.check(part, hint)
    return source


def _target(source, ds: DataSource) -> tuple[int, int, str | None]:
    """(channels, size, the rule) the images are fitted to: the data's own unless asked otherwise."""
    c, h, w = source.shape()
    channels, size = ds.channels or c, ds.image_size or min(h, w)
    rules = []
    mixed = isinstance(source, FolderSource) and any(
        (iw, ih) != (size, size) for iw, ih, _ in source.headers().values())
    if mixed or (h, w) != (size, size):
        rules.append(f"resized to {size}x{size} (bilinear, antialiased; non-square images stretched)")
    if channels != c:
        rules.append("colour to grey (luma 0.299 R + 0.587 G + 0.114 B)" if channels == 1
                     else "grey to colour (the grey channel repeated)")
    if isinstance(source, FolderSource) and channels == c == 3 and any(
            mode != "RGB" for _, _, mode in source.headers().values()):
        rules.append("grey and palette images converted to RGB")
    return channels, size, "; ".join(rules) or None


def available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(what: str, images: int, channels: int, size: int) -> None:
    """Refuse, before loading, data whose uint8 images and float32 tensors would not fit in memory."""
    need = images * channels * size * size * (1 + 4)
    free = available_memory()
    if free is not None and need > free:
        raise DataError(f"{what}: {images:,} images of {channels}x{size}x{size} need about {need / 2**30:.1f} GiB of "
                        f"memory, {free / 2**30:.1f} GiB available: pass a smaller --image-size, or use fewer images")


def fit(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images to `channels` and size x size (bilinear, antialiased), in chunks."""
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            w = torch.tensor(LUMA).view(1, 3, 1, 1)
            x = torch.cat([(c.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
                           for c in x.split(4096)])
    if x.shape[2:] != (size, size):
        x = torch.cat([F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False).round().clamp(0, 255).to(torch.uint8) for c in x.split(4096)])
    return x.contiguous()


def _raw(ds: DataSource, part: str) -> tuple[torch.Tensor, torch.Tensor, DataInfo]:
    """The part's uint8 images fitted to the data's shape, its labels, and the data's DataInfo; once per process."""
    source = open_source(ds, part)
    channels, size, rule = _target(source, ds)
    key = (type(source).__name__, source.fingerprint(), ds.name, part, channels, size)
    if key not in _RAW:
        check_memory(ds.name if ds.builtin else Path(ds.name).name, source.count(part), channels, size)
        if isinstance(source, FolderSource):
            x, y = source.read(part, channels, size)
        else:
            x, y = source.read(part)
            x = fit(x, channels, size)
        _RAW[key] = (x, y)
    x, y = _RAW[key]
    info_key = key[:3] + (channels, size)
    if info_key not in _INFO:
        train_x = x if part == "train" else _raw(ds, "train")[0]
        _INFO[info_key] = _info(ds, source, train_x, channels, size, rule)
    return x, y, _INFO[info_key]


def _info(ds: DataSource, source, train_x: torch.Tensor, channels: int, size: int, rule: str | None) -> DataInfo:
    if ds.name == "mnist" and channels == 1 and size == SIZE:
        mean, std = (MEAN,), (STD,)
    else:
        mean, std = measure(train_x)
    return DataInfo(source.identity(), channels, size, tuple(source.classes()), mean, std, rule,
                    tuple(source.notes), len(train_x))


def measure(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images as pixels/255, rounded to 4 decimals (as MNIST's 0.1307/0.3081)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in x.split(4096):
        c = chunk.to(torch.float64) / 255.0
        total += c.sum((0, 2, 3))
        squares += (c * c).sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean * mean).clamp(min=1e-12).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(max(round(float(s), 4), 1e-4) for s in std)


def normalise(images: torch.Tensor, labels: torch.Tensor, device: torch.device, info: DataInfo) -> Split:
    x = images.to(device=device, dtype=torch.float32) / 255.0
    if info.channels == 1:  # Python floats, as MNIST always was: the same bits
        x = (x - info.mean[0]) / info.std[0]
    else:
        shape = (1, -1, 1, 1)
        x = (x - torch.tensor(info.mean, device=device).view(shape)) / torch.tensor(info.std, device=device).view(shape)
    black = None if info.mean == (MEAN,) and info.std == (STD,) else tuple(-m / s for m, s in zip(info.mean, info.std))
    return Split(x.contiguous(), labels.to(device=device, dtype=torch.int64), black)


def val_size(ds: DataSource, train_images: int) -> int:
    """--val-size, else 5,000 for MNIST (as ever), else 10 % of the training images (at most 5,000, at least 1)."""
    if ds.val_size is not None:
        n = ds.val_size
    elif ds.name == "mnist":
        n = VAL_SIZE
    else:
        n = min(VAL_SIZE, max(1, round(VAL_SHARE * train_images)))
    if not 0 < n < train_images:
        raise DataError(f"--val-size {n:,}: the validation split needs 1 to {train_images - 1:,} of the "
                        f"{train_images:,} training images")
    return n


def search_indices(ds: DataSource, labels: torch.Tensor, subset: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices: MNIST's fixed random split, stratified for any other data."""
    n = val_size(ds, len(labels))
    train_idx, val_idx = random_split(len(labels), n) if ds.name == "mnist" else stratified_split(labels, n)
    return (train_idx if subset is None else train_idx[:subset]), val_idx


def search_split(n: int = 60_000, subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of MNIST's fixed search split of its n training images.

    Public so that a pipeline that does not use these tensors (the benchmark's torchvision
    baseline) can validate on exactly the same 5,000 images.
    """
    train_idx, val_idx = random_split(n, VAL_SIZE, SPLIT_SEED)
    return (train_idx if subset is None else train_idx[:subset]), val_idx


def load_search_data(data: "DataSource | Path | str", device: torch.device, subset: int | None = None,
                     download: bool = False) -> Splits:
    """The training images split into train / validation (`subset` trims the train part); never the test part."""
    ds = as_source(data, download)
    images, labels, info = _raw(ds, "train")
    train_idx, val_idx = search_indices(ds, labels, subset)
    return Splits(normalise(images[train_idx], labels[train_idx], device, info),
                  normalise(images[val_idx], labels[val_idx], device, info))


def load_train_test(data: "DataSource | Path | str", device: torch.device, subset: int | None = None,
                    download: bool = False) -> Splits:
    """All training images (or the first `subset`; shuffled once by a seed for other data than MNIST, whose
    files come sorted by class) and the test images."""
    ds = as_source(data, download)
    train = load_train(ds, device, subset)
    test_images, test_labels, info = _raw(DataSource(**{**vars(ds), "download": False}), "test")
    return Splits(train, normalise(test_images, test_labels, device, info))  # info: the training images' statistics


def load_train(data: "DataSource | Path | str", device: torch.device, subset: int | None = None,
               download: bool = False) -> Split:
    """All training images (or the first `subset`, as load_train_test takes them); the test images are not read:
    what int8 calibration and `nas export --checkpoint` use."""
    ds = as_source(data, download)
    images, labels, info = _raw(ds, "train")
    if ds.name != "mnist":
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        images, labels = images[order], labels[order]
    return normalise(images, labels, device, info).first(subset)


def data_info(data: "DataSource | Path | str") -> DataInfo:
    """The data's shape, classes, preprocessing and identity (loading its training images once, if not yet)."""
    return _raw(as_source(data), "train")[2]


def search_sizes(subset: int | None = None, data: "DataSource | None" = None) -> tuple[int, int]:
    """(training, validation) images of the search split."""
    total = 60_000 if data is None or data.name == "mnist" and data.val_size is None else data_info(data).train_images
    n = VAL_SIZE if data is None else val_size(data, total)
    return (total - n if subset is None else min(subset, total - n)), n


def check_data(data: "DataSource | Path | str", download: bool = False) -> DataInfo:
    """Check (or with `download`, fetch) the training data, so that bad data is one line up front."""
    return data_info(as_source(data, download))


def check_fits(spec: Spec, where: str = "spec", info: DataInfo | None = None) -> None:
    """Refuse, before any training, a spec made for other images or classes than the data's, or one that flips
    digits or letters (DataInfo.mirrorable) (SpecError, one line).

    Such a spec builds and counts fine, but would fail inside the first batch with a shape error (in_channels),
    train on labels it cannot predict (num_classes) or on feature maps it was not sized for (input_size).
    """
    info = info or MNIST_INFO
    a = spec.arch
    wrong = [f"arch.{name} is {getattr(a, name)}, not {want}" for name, want in info.shape.items()
             if getattr(a, name) != want]
    if spec.train.flip and not info.mirrorable:
        raise SpecError(f"{where}: train.flip is {spec.train.flip:g}, but {info.title} holds digits or letters, which "
                        "a horizontal flip turns into other glyphs: set train.flip to 0")
    if wrong:
        raise SpecError(f"{where}: does not fit {info.title} ({info.channels}-channel {info.size}x{info.size} images, "
                        f"{len(info.classes)} classes): " + "; ".join(wrong))


def with_shape(spec: Spec, info: DataInfo) -> Spec:
    """The spec with the data's in_channels, input_size and num_classes (sampled specs take them from the data)."""
    from dataclasses import replace

    shape = info.shape
    if all(getattr(spec.arch, k) == v for k, v in shape.items()):
        return spec
    return replace(spec, arch=replace(spec.arch, **shape))


def study_data(ds: DataSource, info: DataInfo) -> dict[str, Any]:
    """What a study records of its data: its identity, and its validation images where not the default."""
    n = val_size(ds, info.train_images)
    default = val_size(DataSource(ds.name, ds.data_dir), info.train_images)
    return {**info.identity, **({} if n == default else {"val_images": n})}


def load_test(data: "DataSource | Path | str", device: torch.device, trained_on: DataInfo) -> Split:
    """The test images fitted and normalised as the model's training images were (`trained_on`: the preprocessing
    stored with the model), whatever the test images' own statistics."""
    ds = as_source(data)
    ds = DataSource(**{**vars(ds), "image_size": trained_on.size, "channels": trained_on.channels})
    info = data_info(ds)
    if len(info.classes) != len(trained_on.classes) and trained_on.classes:
        raise DataError(f"{ds.name}: {len(info.classes)} classes, but the model was trained on "
                        f"{len(trained_on.classes)}")
    images, labels, _ = _raw(DataSource(**{**vars(ds), "download": False}), "test")
    return normalise(images, labels, device, trained_on)
