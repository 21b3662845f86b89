"""The built-in sets, read from their own file formats (no torchvision needed to read them):
MNIST, Fashion-MNIST, KMNIST and EMNIST (balanced) as IDX files (plain, or gzip'd as `.gz`), CIFAR-10 as its
pickled batches (unpickled with numpy arrays as the only objects allowed), SVHN as MATLAB `.mat` files.

Each source reads one part at a time ("train" or "test"), so the search never opens a test file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .download import download

PARTS = ("train", "test")


@dataclass(frozen=True)
class IdxSet:
    title: str  # in messages: "MNIST file ... is missing"
    folder: str  # <data dir>/<folder>/raw/, as torchvision lays it out
    prefix: str  # of the four file names
    counts: tuple[int, int] | None  # (train, test) images, checked; None: as the files' headers say
    classes: tuple
    torchvision: tuple[str, dict] = ("MNIST", {})
    transpose: bool = False  # EMNIST stores its images column by column

    def files(self) -> dict[str, tuple[int, int | None, tuple[int, ...]]]:
        """file name -> (IDX magic number, item count or None: any, item shape)"""
        (train, test), p = self.counts or (None, None), self.prefix
        return {f"{p}train-images-idx3-ubyte": (2051, train, (28, 28)),
                f"{p}train-labels-idx1-ubyte": (2049, train, ()),
                f"{p}t10k-images-idx3-ubyte" if not p else f"{p}test-images-idx3-ubyte": (2051, test, (28, 28)),
                f"{p}t10k-labels-idx1-ubyte" if not p else f"{p}test-labels-idx1-ubyte": (2049, test, ())}


_EMNIST_BALANCED = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
IDX_SETS = {
    "mnist": IdxSet("MNIST", "MNIST", "", (60_000, 10_000), tuple(range(10))),
    "fashion-mnist": IdxSet("Fashion-MNIST", "FashionMNIST", "", None,
                            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                             "Bag", "Ankle boot"), ("FashionMNIST", {})),
    "kmnist": IdxSet("KMNIST", "KMNIST", "", None,
                     ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), ("KMNIST", {})),
    "emnist-balanced": IdxSet("EMNIST", "EMNIST", "emnist-balanced-", None, _EMNIST_BALANCED,
                              ("EMNIST", {"split": "balanced"}), transpose=True),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _is_test(name: str) -> bool:
    return "t10k" in name or "-test-" in name


@dataclass
class IdxSource:
    """One of IDX_SETS in <data dir>/<folder>/raw/."""

    key: str
    data_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def set(self) -> IdxSet:
        return IDX_SETS[self.key]

    @property
    def raw(self) -> Path:
        return self.data_dir / self.set.folder / "raw"

    def classes(self) -> list:
        return list(self.set.classes)

    def identity(self) -> dict:
        return {"name": self.key}

    def shape(self) -> tuple[int, int, int]:
        return 1, 28, 28

    def count(self, part: str) -> int:
        name = next(n for n in self.set.files() if _is_test(n) == (part == "test") and "images" in n)
        if self.set.counts:
            return self.set.counts[PARTS.index(part)]
        path = self._path(name)  # its header's count (the first 16 bytes, even of a gzip'd file)
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            return int.from_bytes(f.read(8)[4:8], "big")

    def fingerprint(self) -> tuple:
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.raw.iterdir()) \
            if self.raw.is_dir() else ()

    def fetch(self, part: str) -> None:
        """--download: torchvision's own class fetches the set unless its files are here."""
        if all(self._path(name).is_file() for name in self.set.files()):
            return
        cls, kwargs = self.set.torchvision
        download(cls, self.data_dir, {**kwargs, "train": part == "train"}, self.set.title,
                 f"by hand, put {', '.join(self.set.files())} (unzipped) in {self.raw}/")

    def _path(self, name: str) -> Path:
        """The file, or its gzip'd form where only that is there."""
        path = self.raw / name
        return path if path.is_file() or not (self.raw / (name + ".gz")).is_file() else self.raw / (name + ".gz")

    def check(self, part: str | None, hint: str | None = None) -> None:
        """The files of `part` (None: both) exist, with the right IDX header and size (read only if gzip'd)."""
        for name, (magic, count, shape) in self.set.files().items():
            if part is None or _is_test(name) == (part == "test"):
                self._read(name, magic, count, shape, header_only=True, hint=hint)

    def read(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = (self._read(name, *spec) for name, spec in self.set.files().items()
                          if _is_test(name) == (part == "test"))
        if len(images) != len(labels):
            raise DataError(f"{self.set.title} files in {self.raw} are corrupt: {len(images):,} {part} images but "
                            f"{len(labels):,} labels")
        labels = labels.long()
        k = len(self.set.classes)
        if labels.min() < 0 or labels.max() >= k:
            raise DataError(f"{self.set.title} labels in {self.data_dir} are corrupt: values outside 0-{k - 1}")
        images = images.unsqueeze(1)
        return (images.transpose(2, 3).contiguous() if self.set.transpose else images), labels

    def _read(self, name: str, magic: int, count: int | None, shape: tuple[int, ...], header_only: bool = False,
              hint: str | None = None) -> torch.Tensor:
        path = self._path(name)
        if not path.is_file():
            raise DataError(f"{self.set.title} file {path} is missing; "
                            f"{hint or f'pass --download to fetch {self.set.title} into {self.data_dir}'}")
        head = 4 + 4 * (1 + len(shape))
        gz = path.suffix == ".gz"
        if gz:
            try:
                with gzip.open(path, "rb") as f:
                    data = f.read()
            except (OSError, EOFError) as exc:
                raise DataError(f"{self.set.title} file {path} is corrupt: not gzip data ({exc})") from None
            size = len(data)
        else:
            size = path.stat().st_size
            with path.open("rb") as f:
                data = f.read(head) if header_only else f.read()
        words = [int.from_bytes(data[i:i + 4], "big") for i in range(0, min(head, len(data)) - 3, 4)]
        if len(words) * 4 == head and count is None:
            count = words[1]
        if len(words) * 4 < head or words[0] != magic or words[1:] != [count, *shape]:
            raise DataError(f"{self.set.title} file {path} is corrupt: bad IDX header")
        expected = head + count * int(np.prod(shape, dtype=np.int64))
        if size != expected:
            raise DataError(f"{self.set.title} file {path} is corrupt: {size} bytes, expected {expected}")
        if header_only:
            return torch.empty(0)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=head).view(count, *shape)


class _NumpyOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles of dicts of numpy arrays, lists, bytes and numbers: nothing else is built."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data batch")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return _NumpyOnly(io.BufferedReader(f), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"CIFAR-10 file {path} is corrupt or not a data batch ({type(exc).__name__}: "
                        f"{str(exc)[:80]})") from None


@dataclass
class Cifar10Source:
    """<data dir>/cifar-10-batches-py/: data_batch_1..5 (training), test_batch, batches.meta (class names)."""

    data_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def _files(self, part: str) -> list[Path]:
        if part == "train":
            return [self.folder / f"data_batch_{i}" for i in range(1, 6)]
        return [self.folder / "test_batch"]

    def classes(self) -> list:
        meta = self.folder / "batches.meta"
        if meta.is_file():
            names = load_pickle(meta).get(b"label_names") or load_pickle(meta).get("label_names")
            if names:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return list(CIFAR10_CLASSES)

    def identity(self) -> dict:
        return {"name": "cifar10"}

    def shape(self) -> tuple[int, int, int]:
        return 3, 32, 32

    def count(self, part: str) -> int:  # from the files' sizes (3,072 bytes an image), before unpickling them
        return sum(p.stat().st_size for p in self._files(part) if p.is_file()) // 3073

    def fingerprint(self) -> tuple:
        files = self._files("train") + self._files("test")
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file())

    def fetch(self, part: str) -> None:
        if not all(p.is_file() for p in self._files("train") + self._files("test")):
            download("CIFAR10", self.data_dir, {"train": part == "train"}, "CIFAR-10",
                     f"by hand, unpack cifar-10-python.tar.gz into {self.data_dir}/")

    def check(self, part: str | None, hint: str | None = None) -> None:
        for path in self._files("train") + self._files("test") if part is None else self._files(part):
            if not path.is_file():
                raise DataError(f"CIFAR-10 file {path} is missing; "
                                f"{hint or f'pass --download to fetch CIFAR-10 into {self.data_dir}'}")

    def read(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(part)
        xs, ys = [], []
        for path in self._files(part):
            batch = load_pickle(path)
            data, labels = batch.get(b"data"), batch.get(b"labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                    or not isinstance(labels, list) or len(labels) != len(data):
                raise DataError(f"CIFAR-10 file {path} is corrupt: expected uint8 data (N, 3072) and N labels")
            xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            ys.append(torch.tensor(labels, dtype=torch.int64))
        y = torch.cat(ys)
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"CIFAR-10 labels in {self.folder} are corrupt: values outside 0-9")
        return torch.cat(xs), y


@dataclass
class SvhnSource:
    """<data dir>/SVHN/train_32x32.mat and test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""

    data_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.data_dir / "SVHN"

    def _file(self, part: str) -> Path:
        return self.folder / f"{part}_32x32.mat"

    def classes(self) -> list:
        return list(range(10))

    def identity(self) -> dict:
        return {"name": "svhn"}

    def shape(self) -> tuple[int, int, int]:
        return 3, 32, 32

    def count(self, part: str) -> int:  # from the file's size (3,072 bytes an image, maybe compressed)
        return self._file(part).stat().st_size // 3072 if self._file(part).is_file() else 0

    def fingerprint(self) -> tuple:
        return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in map(self._file, PARTS) if p.is_file())

    def fetch(self, part: str) -> None:
        if not self._file(part).is_file():
            download("SVHN", self.folder, {"split": part}, "SVHN",
                     f"by hand, put train_32x32.mat and test_32x32.mat in {self.folder}/")

    def check(self, part: str | None, hint: str | None = None) -> None:
        for p in PARTS if part is None else (part,):
            if not self._file(p).is_file():
                raise DataError(f"SVHN file {self._file(p)} is missing; "
                                f"{hint or f'pass --download to fetch SVHN into {self.folder}'}")

    def read(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        from scipy.io import loadmat  # only for SVHN

        self.check(part)
        path = self._file(part)
        try:
            mat = loadmat(str(path), variable_names=["X", "y"])
        except Exception as exc:
            raise DataError(f"SVHN file {path} is corrupt: not a readable .mat file ({type(exc).__name__})") from None
        x, y = mat.get("X"), mat.get("y")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) \
                or not isinstance(y, np.ndarray) or y.size != x.shape[3]:
            raise DataError(f"SVHN file {path} is corrupt: expected X uint8 (32, 32, 3, N) and N labels y")
        labels = torch.from_numpy(y.reshape(-1).astype(np.int64)) % 10  # SVHN labels the digit 0 as 10
        return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), labels


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def did_you_mean(data_dir: Path, key: str = "mnist") -> str | None:
    """The hint for a --data-dir that points at <set>/raw (or <set>) itself instead of the folder above it."""
    folder, names = IDX_SETS[key].folder, IDX_SETS[key].files()
    if (data_dir / folder / "raw").is_dir():
        return None
    real = data_dir.resolve()  # "raw" or "." name nothing: their real path does

    def up(n: int) -> Path:  # the folder n levels above, as the user wrote it when it says so
        as_written = len(data_dir.parts) >= n and ".." not in data_dir.parts
        return (data_dir if as_written else real).parents[n - 1]
    named = (real.name == "raw" and real.parent.name == folder, real.name == folder)
    holds = any((data_dir / name).is_file() or (data_dir / (name + ".gz")).is_file() for name in names)
    if named[0] or (named[1] and (data_dir / "raw").is_dir()):
        return f"did you mean --data-dir {up(2) if named[0] else up(1)}?"
    if holds:  # the files, in a folder of another name: they must sit in <data dir>/<set>/raw/
        return f"{data_dir} holds {IDX_SETS[key].title} files: move them into {data_dir / folder / 'raw'}/"
    return None
