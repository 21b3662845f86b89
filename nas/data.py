"""MNIST, loaded once per process into tensors (on the training device), with a fixed split.

The search sees 55,000 training and 5,000 validation images carved out of the 60,000 training
images by a fixed seed; the 10,000 test images are loaded only by `load_train_test`, which the
final retrain and evaluation use. The IDX files are read here; torchvision is imported only to download them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from .errors import DataError, SpecError, first_line
from .spec import Spec

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, the usual normalisation
CHANNELS, SIZE, CLASSES = 1, 28, 10  # MNIST: grey 28x28 images of 10 digits
# what a model expects of its input, in the checkpoint and the ONNX file's metadata: _to_split does exactly this
PREPROCESSING = {"mean": MEAN, "std": STD, "input_size": SIZE, "channels": CHANNELS,
                 "transform": "pixels/255, then (x - mean) / std"}
VAL_SIZE = 5_000
SPLIT_SEED = 0  # fixed, so every trial and every study validates on the same 5,000 images
DEFAULT_DATA_DIR = "./data"
# seconds a download waits for a connection or for the next bytes: torchvision's urllib calls set no
# timeout, so a network that drops packets (or a server that never answers) would hang it for good
DOWNLOAD_TIMEOUT = 20.0

# file name -> (IDX magic number, item count, item shape)
_FILES = {
    "train-images-idx3-ubyte": (2051, 60_000, (SIZE, SIZE)),
    "train-labels-idx1-ubyte": (2049, 60_000, ()),
    "t10k-images-idx3-ubyte": (2051, 10_000, (SIZE, SIZE)),
    "t10k-labels-idx1-ubyte": (2049, 10_000, ()),
}
_BY_HAND = f"by hand, put {', '.join(_FILES)} (unzipped) in"  # the hint when torchvision cannot fetch them


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, 1, 28, 28) float32, normalised
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def first(self, n: int | None) -> "Split":
        """The first `n` images (all for None): views, no copy. Splits are shuffled once when loaded,
        so the first n are a fixed random sample: smoke runs, cheap rungs and warm-ups take these."""
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Splits:
    """What the trainer needs: images to train on and held-out images to measure each epoch."""

    train: Split
    held_out: Split


def resolve_data_dir(flag: str | None) -> Path:
    """--data-dir, else $NAS_DATA_DIR, else ./data."""
    return Path(flag or os.environ.get("NAS_DATA_DIR") or DEFAULT_DATA_DIR)


def check_raw_files(data_dir: Path, train: bool | None = None) -> None:
    """Check that the IDX files exist with the right magic number, shape and size: the training files
    (train=True), the test files (False) or all four (None). The search never opens the test files."""
    raw = data_dir / "MNIST" / "raw"
    for name, (magic, count, shape) in _FILES.items():
        if train is not None and name.startswith("train") != train:
            continue
        path = raw / name
        if not path.is_file():
            hint = _did_you_mean(data_dir) or f"pass --download to fetch MNIST into {data_dir}"
            raise DataError(f"MNIST file {path} is missing; {hint}")
        expected = 4 + 4 * (1 + len(shape)) + count * (shape[0] * shape[1] if shape else 1)
        with path.open("rb") as f:
            header = f.read(4 + 4 * (1 + len(shape)))
        words = [int.from_bytes(header[i:i + 4], "big") for i in range(0, len(header), 4)]
        if len(header) < 8 or words[0] != magic or words[1:] != [count, *shape]:
            raise DataError(f"MNIST file {path} is corrupt: bad IDX header")
        if path.stat().st_size != expected:
            raise DataError(f"MNIST file {path} is corrupt: {path.stat().st_size} bytes, expected {expected}")


def _did_you_mean(data_dir: Path) -> str | None:
    """The hint for a --data-dir that points at MNIST/raw (or MNIST) itself instead of the folder above it."""
    if (data_dir / "MNIST" / "raw").is_dir():
        return None
    real = data_dir.resolve()  # "raw" or "." name nothing: their real path does

    def up(n: int) -> Path:  # the folder n levels above, as the user wrote it when it says so
        as_written = len(data_dir.parts) >= n and ".." not in data_dir.parts
        return (data_dir if as_written else real).parents[n - 1]
    named = (real.name == "raw" and real.parent.name == "MNIST", real.name == "MNIST")
    holds = any((data_dir / name).is_file() for name in _FILES)
    if named[0] or (named[1] and (data_dir / "raw").is_dir()):
        return f"did you mean --data-dir {up(2) if named[0] else up(1)}?"
    if holds:  # the files, in a folder of another name: they must sit in <data dir>/MNIST/raw/
        return f"{data_dir} holds MNIST files: move them into {data_dir / 'MNIST' / 'raw'}/"
    return None


def _read_idx(path: Path, count: int, shape: tuple[int, ...]) -> torch.Tensor:
    """An IDX file already checked by check_raw_files -> uint8 tensor (count, *shape); no torchvision needed."""
    header = 4 + 4 * (1 + len(shape))
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8, offset=header).view(count, *shape)


def _load_raw(data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not data_dir.is_dir() and not download:
        raise DataError(f"data directory {data_dir} does not exist (use --data-dir or NAS_DATA_DIR, or --download)")
    hint = _did_you_mean(data_dir) if data_dir.is_dir() else None
    if download and hint:  # else the download would put a second copy in <data dir>/MNIST/raw/
        raise DataError(f"{data_dir} is not the data directory MNIST/raw/ sits in; {hint}")
    if download and not (data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        _download(data_dir, train)
    check_raw_files(data_dir, train)
    prefix = "train" if train else "t10k"
    raw = data_dir / "MNIST" / "raw"
    images, labels = (_read_idx(raw / name, count, shape) for name, (_, count, shape) in _FILES.items()
                      if name.startswith(prefix))
    labels = labels.long()
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"MNIST labels in {data_dir} are corrupt: values outside 0-9")
    return images, labels


def _download(data_dir: Path, train: bool) -> None:
    """torchvision's download, bounded in time; a failure is one DataError line and leaves no empty folders."""
    MNIST = _torchvision_mnist()
    made = [p for p in (data_dir, data_dir / "MNIST", data_dir / "MNIST" / "raw") if not p.exists()]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # process-wide, so only for the download, before any training
    try:
        MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # no network, a mirror down or silent, a checksum that does not match
        for folder in reversed(made):  # deepest first; a folder the download put files into stays
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raw = data_dir / "MNIST" / "raw"
        raise DataError(f"cannot download MNIST ({_download_reason(exc)}); {_BY_HAND} {raw}/") from None
    finally:
        socket.setdefaulttimeout(previous)


def _download_reason(exc: BaseException, limit: int = 50) -> str:
    """Why a download failed, short. torchvision's message is "Error downloading F:" and then, for each mirror,
    "Tried URL, got:" and urllib's error: its last line is the reason ("[Errno 111] Connection refused")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if len(lines) > 1 and lines[0].endswith(":") else first_line(exc, 1000)
    if text.startswith("<urlopen error ") and text.endswith(">"):
        text = text[len("<urlopen error "):-1]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _torchvision_mnist():
    """torchvision's MNIST class, imported only for a download: a torchvision that is missing or built for
    another torch (its import fails with "operator torchvision::nms does not exist") is one DataError line."""
    try:
        from torchvision.datasets import MNIST
    except Exception as exc:
        def version(name: str) -> str:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return "(not installed)"
        torch_v, vision_v = version("torch"), version("torchvision")
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torchvision":
            raise DataError(f"--download needs torchvision, which is not installed (torch {torch_v}); "
                            "install it, or place the MNIST files by hand") from None
        raise DataError(f"torchvision {vision_v} does not match torch {torch_v}: importing it fails "
                        f"({first_line(exc, 60)}); install the torchvision built for torch {torch_v}") from None
    return MNIST


def check_fits(spec: Spec, where: str = "spec") -> None:
    """Refuse, before any training, a spec made for other images or classes than MNIST's (SpecError, one line).

    Such a spec builds and counts fine, but would fail inside the first batch with a shape error (in_channels),
    train on labels it cannot predict (num_classes) or on feature maps it was not sized for (input_size).
    """
    a = spec.arch
    wrong = [f"arch.{name} is {got}, not {want}" for name, got, want in
             (("in_channels", a.in_channels, CHANNELS), ("input_size", a.input_size, SIZE),
              ("num_classes", a.num_classes, CLASSES)) if got != want]
    if wrong:
        raise SpecError(f"{where}: does not fit MNIST ({CHANNELS}-channel {SIZE}x{SIZE} images, {CLASSES} classes): "
                        + "; ".join(wrong))


def _to_split(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Split:
    x = ((images.to(device=device, dtype=torch.float32) / 255.0 - MEAN) / STD).unsqueeze(1)
    return Split(x.contiguous(), labels.to(device=device, dtype=torch.int64))


def search_split(n: int = 60_000, subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of the fixed search split of the n training images.

    Public so that a pipeline that does not use these tensors (the benchmark's torchvision
    baseline) can validate on exactly the same 5,000 images.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[:VAL_SIZE], order[VAL_SIZE:]
    return (train_idx if subset is None else train_idx[:subset]), val_idx


def search_sizes(subset: int | None = None) -> tuple[int, int]:
    """(training, validation) images of the search split, without loading them."""
    train = 60_000 - VAL_SIZE
    return (train if subset is None else min(subset, train)), VAL_SIZE


def check_data(data_dir: Path, download: bool = False) -> None:
    """Check (or with `download`, fetch) the training files, so that a bad data dir is one line up front."""
    _load_raw(data_dir, train=True, download=download)


def load_search_data(data_dir: Path, device: torch.device, subset: int | None = None,
                     download: bool = False) -> Splits:
    """55,000 train / 5,000 validation images from the training set (`subset` trims the train part)."""
    images, labels = _load_raw(data_dir, train=True, download=download)
    train_idx, val_idx = search_split(len(labels), subset)
    return Splits(_to_split(images[train_idx], labels[train_idx], device),
                  _to_split(images[val_idx], labels[val_idx], device))


def load_train(data_dir: Path, device: torch.device, subset: int | None = None, download: bool = False) -> Split:
    """All 60,000 training images (or the first `subset`); the test files are not opened."""
    train_images, train_labels = _load_raw(data_dir, train=True, download=download)
    return _to_split(train_images, train_labels, device).first(subset)


def load_train_test(data_dir: Path, device: torch.device, subset: int | None = None,
                    download: bool = False) -> Splits:
    """All 60,000 training images (or the first `subset`) and the 10,000 test images."""
    train = load_train(data_dir, device, subset, download)
    test_images, test_labels = _load_raw(data_dir, train=False, download=False)
    return Splits(train, _to_split(test_images, test_labels, device))
