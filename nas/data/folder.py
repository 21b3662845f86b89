"""Your own images: a folder in ImageFolder layout (one subfolder per class, PNG/JPEG/BMP of any size, grey or
colour; `train/` and `test/` subfolders, or a fixed stratified test split set aside by a seed), or a `.npz` with
x_train, y_train[, x_test, y_test].

Without a test part, TEST_SHARE of each class is set aside as the test images by SPLIT_SEED, from the sorted
file list, so the same files are the test images every time, and the search never decodes them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .builtin import file_hash
from .split import SPLIT_SEED, stratified_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TEST_SHARE = 0.2  # of each class, when the data has no test part of its own


def test_split_note(n: int) -> str:
    return f"test: {n:,} images ({TEST_SHARE:.0%} of each class, set aside by seed {SPLIT_SEED})"


def _scan(root: Path, counts: Counter, dirs: list | None = None) -> list[Path]:
    """The image files under `root` (subfolders too), sorted; other files counted in `counts["skipped"]`.
    A symlink loop (a folder that leads back to one above it) is one line, not a hang."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            raise DataError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
        if (st.st_dev, st.st_ino) in seen:
            raise DataError(f"{folder}: a symlink loop (it leads back to a folder above it); remove the link")
        seen.add((st.st_dev, st.st_ino))
        if dirs is not None:
            dirs.append((folder, st.st_mtime_ns))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"{folder}: cannot be listed ({exc.strerror or exc})") from None
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError as exc:  # ELOOP: a link to itself
                raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); remove it") from None
            if is_dir:
                walk(path)
            elif is_file and path.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."):
                found.append(path)
            elif entry.is_symlink() and not path.exists():
                raise DataError(f"{path}: a broken or looping symlink; remove it")
            else:
                counts["skipped"] += 1
    walk(root)
    return found


def _class_dirs(root: Path, what: str, single_ok: bool = False) -> list[Path]:
    dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not dirs:
        raise DataError(f"{root}: no class folders in {what} (ImageFolder layout: one subfolder of images per class)")
    if len(dirs) == 1 and not single_ok:
        raise DataError(f"{root}: a single class ({dirs[0].name}); a classifier needs at least two class folders")
    return dirs


@dataclass
class FolderSource:
    root: Path
    notes: list[str] = field(default_factory=list)
    _files: dict = field(default_factory=dict)  # part -> (paths, labels)
    _classes: list = field(default_factory=list)
    _skipped: int = 0
    _headers: dict = field(default_factory=dict)  # path -> (width, height, mode), train part only
    _identity: dict = field(default_factory=dict)
    _shape: tuple = ()
    _dirs: list = field(default_factory=list)  # (folder, mtime) of every folder listed: a file added or removed
    # changes its folder's mtime, so `unchanged` tells whether this listing still holds

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder")
        self._root_mtime = self.root.stat().st_mtime_ns
        own_test = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        counts: Counter = Counter()
        train_root = self.root / "train" if own_test else self.root
        # the folders that hold class folders: one added or removed changes their mtime (see `unchanged`)
        self._dirs += [(p, p.stat().st_mtime_ns) for p in (self.root / "train", self.root / "test") if own_test]
        dirs = _class_dirs(train_root, "it")
        self._classes = [d.name for d in dirs]
        paths, labels = self._listed(dirs, counts)
        if own_test:
            test_dirs = _class_dirs(self.root / "test", "test/", single_ok=True)
            unknown = [d.name for d in test_dirs if d.name not in self._classes]
            if unknown:
                raise DataError(f"{self.root / 'test'}: class folder {unknown[0]} is not in train/")
            test_paths, test_labels = self._listed(test_dirs, counts, empty_ok=True)  # a class may lack test images
            if not test_paths:
                raise DataError(f"{self.root / 'test'}: no PNG/JPEG/BMP images in its class folders")
            self._files = {"train": (paths, labels), "test": (test_paths, test_labels)}
        else:
            y = torch.tensor(labels)
            few = [self._classes[c] for c, n in enumerate(torch.bincount(y, minlength=len(dirs)).tolist()) if n < 2]
            if few:
                raise DataError(f"{self.root / few[0]}: one image; a class needs at least two (one is set aside for "
                                "the test), or give the folder train/ and test/ subfolders")
            keep, test = stratified_split(y, max(len(dirs), round(TEST_SHARE * len(y))))
            keep, test = keep.sort().values, test.sort().values
            self._files = {"train": ([paths[i] for i in keep], [labels[i] for i in keep]),
                           "test": ([paths[i] for i in test], [labels[i] for i in test])}
        self._skipped = counts["skipped"]
        if self._skipped:
            self.notes.append(f"{self._skipped:,} file(s) in {self.root} are not PNG/JPEG/BMP images: skipped")
        if not own_test:
            self.notes.append(test_split_note(len(self._files["test"][0])))

    def _listed(self, dirs: list[Path], counts: Counter, empty_ok: bool = False) -> tuple[list[Path], list[int]]:
        paths, labels = [], []
        for d in dirs:
            found = _scan(d, counts, self._dirs)
            if not found and not empty_ok:
                raise DataError(f"{d}: a class folder with no PNG/JPEG/BMP images")
            paths += found
            labels += [self._classes.index(d.name)] * len(found)
        return paths, labels

    def unchanged(self) -> bool:
        try:
            return all(folder.stat().st_mtime_ns == mtime for folder, mtime in self._dirs) and \
                self.root.stat().st_mtime_ns == self._root_mtime
        except OSError:
            return False

    def classes(self) -> list:
        return list(self._classes)

    def identity(self) -> dict:
        """The folder's images per class and a hash of its file list and sizes: another folder, or the same
        folder with files added, removed or changed in size, is other data."""
        if self._identity:
            return self._identity
        digest = hashlib.sha256()
        per_class = Counter()
        for part in ("train", "test"):
            for path, label in zip(*self._files[part]):
                digest.update(f"{part}/{path.relative_to(self.root)}\0{path.stat().st_size}\n".encode())
                per_class[self._classes[label]] += 1
        self._identity = {"name": self.root.name, "kind": "folder", "images_per_class": dict(per_class),
                          "hash": digest.hexdigest()[:16]}
        return self._identity

    def fingerprint(self) -> tuple:
        return (str(self.root.resolve()), self.identity()["hash"])

    def count(self, part: str) -> int:
        return len(self._files[part][0])

    def headers(self) -> dict:
        """(width, height, mode) of every training image, read from its header only."""
        if not self._headers:
            paths = self._files["train"][0]
            with ThreadPoolExecutor(max_workers=4) as pool:
                self._headers = dict(zip(paths, pool.map(_header, paths, chunksize=256)))
        return self._headers

    def shape(self) -> tuple[int, int, int]:
        """Channels: 3 if any training image is in colour, else 1; size: the most common (shorter) side."""
        if self._shape:
            return self._shape
        headers = self.headers().values()
        channels = 3 if any(mode not in GREY_MODES for _, _, mode in headers) else 1
        sizes = Counter((w, h) for w, h, _ in headers)
        (w, h), _ = sizes.most_common(1)[0]
        if len(sizes) > 1:
            self.notes.append(f"{len(sizes)} image sizes; the most common is {w}x{h}")
        self._shape = channels, min(w, h), min(w, h)
        return self._shape

    def fetch(self, part: str) -> None:
        pass

    def check(self, part: str | None, hint: str | None = None) -> None:
        self.headers()

    def read(self, part: str, channels: int | None = None, size: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, _ = self.shape()
        channels, size = channels or c, size or h
        paths, labels = self._files[part]
        mode = "L" if channels == 1 else "RGB"
        with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow decodes without the GIL
            arrays = list(pool.map(lambda p: _decode(p, mode, size), paths, chunksize=64))
        x = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, size, size, channels, dtype=torch.uint8)
        x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.tensor(labels, dtype=torch.int64)


def _open(path: Path):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's limit, not a warning we let pass
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DataError(f"{path}: more pixels than Pillow's decompression-bomb limit "
                            f"({Image.MAX_IMAGE_PIXELS:,}): refused") from None
        except Exception as exc:
            raise DataError(f"{path}: not a readable image ({type(exc).__name__}); remove or replace it") from None


def _header(path: Path) -> tuple[int, int, str]:
    with _open(path) as image:
        return image.width, image.height, image.mode


def _decode(path: Path, mode: str, size: int) -> np.ndarray:
    """The image as uint8 (H, W) or (H, W, 3), converted to `mode` and, if another size, resized to size x size
    (bilinear, antialiased; a non-square image is stretched)."""
    from PIL import Image

    with _open(path) as image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                if image.mode == "P":  # a palette (maybe with transparency): to colour first, then to `mode`
                    image = image.convert("RGBA")
                if image.mode != mode:
                    image = image.convert(mode)
                if image.size != (size, size):
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # truncated or corrupt pixel data
            raise DataError(f"{path}: a corrupt or truncated image ({type(exc).__name__}: {str(exc)[:60]}); "
                            "remove or replace it") from None


@dataclass
class NpzSource:
    """x_train (uint8, NHW or NHWC), y_train (integers 0..K-1)[, x_test, y_test][, class_names]."""

    path: Path
    notes: list[str] = field(default_factory=list)
    _test_idx: torch.Tensor | None = None
    _classes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._arrays = self._open()
        keys = set(self._arrays.files)
        missing = [k for k in ("x_train", "y_train") if k not in keys]
        if missing:
            raise DataError(f"{self.path}: no {missing[0]} array (an .npz needs x_train, y_train[, x_test, y_test])")
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{self.path}: x_test and y_test come together (one of them is missing)")
        y = self._labels("train")
        names = self._array("class_names") if "class_names" in keys else None
        k = len(names) if names is not None else int(y.max()) + 1
        self._classes = [str(n) for n in names] if names is not None else list(range(k))
        for part in ("train", "test") if "y_test" in keys else ("train",):
            labels = self._labels(part)
            if labels.min() < 0 or labels.max() >= k:
                raise DataError(f"{self.path}: y_{part} has labels outside 0..{k - 1} "
                                f"({int(labels.min())} to {int(labels.max())})")
        counts = torch.bincount(y, minlength=k)
        if (counts == 0).any():
            raise DataError(f"{self.path}: class {int(torch.nonzero(counts == 0)[0])} has no training images "
                            f"(labels must be 0..K-1 with every class present)")
        if k < 2:
            raise DataError(f"{self.path}: a single class; a classifier needs at least two")
        if "y_test" not in keys:
            keep, test = stratified_split(y, max(k, round(TEST_SHARE * len(y))))
            self._keep, self._test_idx = keep.sort().values, test.sort().values
            self.notes.append(test_split_note(len(self._test_idx)))

    def _open(self):
        try:
            return np.load(self.path, allow_pickle=False)  # arrays only: an object array would run code
        except Exception as exc:
            raise DataError(f"{self.path}: not a readable .npz file ({type(exc).__name__})") from None

    def _array(self, key: str) -> np.ndarray:
        try:
            return self._arrays[key]
        except Exception as exc:
            raise DataError(f"{self.path}: array {key} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:60]})") from None

    def _labels(self, part: str) -> torch.Tensor:
        y, n = self._array(f"y_{part}"), self._x_shape(part)[0]
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{self.path}: y_{part} must be a 1-D integer array (it is {y.dtype}, {y.ndim}-D)")
        if len(y) != n:
            raise DataError(f"{self.path}: x_{part} has {n:,} images but y_{part} {len(y):,} labels")
        return torch.from_numpy(y.astype(np.int64))

    def _x_shape(self, part: str) -> tuple[int, ...]:
        x = self._array(f"x_{part}")
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
            raise DataError(f"{self.path}: x_{part} must be uint8 images, N x H x W or N x H x W x C with C 1 or 3 "
                            f"(it is {x.dtype}, shape {x.shape})")
        return x.shape

    def classes(self) -> list:
        return list(self._classes)

    def identity(self) -> dict:
        y = self._labels("train")
        counts = torch.bincount(y, minlength=len(self._classes))
        per_class = {str(self._classes[c]): int(n) for c, n in enumerate(counts)}
        return {"name": self.path.name, "kind": "npz", "images_per_class": per_class, "hash": file_hash(self.path)}

    def fingerprint(self) -> tuple:
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)

    def shape(self) -> tuple[int, int, int]:
        shape = self._x_shape("train")
        return (shape[3] if len(shape) == 4 else 1), shape[1], shape[2]

    def count(self, part: str) -> int:
        if self._test_idx is None:
            return self._x_shape(part)[0]
        return len(self._test_idx) if part == "test" else len(self._keep)

    def fetch(self, part: str) -> None:
        pass

    def check(self, part: str | None, hint: str | None = None) -> None:
        pass

    def read(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        own = self._test_idx is None
        key = part if own else "train"
        x = torch.from_numpy(np.ascontiguousarray(self._array(f"x_{key}")))
        y = self._labels(key)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        if not own:
            idx = self._test_idx if part == "test" else self._keep
            x, y = x[idx], y[idx]
        return x, y
