"""What data a command names and what a model trained on it needs to know: DataSource (the --data flags, a plain
picklable value that worker processes get instead of tensors), DataInfo (shape, classes, mean and std, identity)
and how they are shown and recorded. MNIST's constants live here: everything stored of MNIST stays as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, the usual normalisation: MNIST keeps them
CHANNELS, SIZE, CLASSES = 1, 28, 10  # MNIST: grey 28x28 images of 10 digits
TRANSFORM = "pixels/255, then (x - mean) / std"
# what a model expects of its input, in the checkpoint and the ONNX file's metadata: load.normalise does exactly this
PREPROCESSING = {"mean": MEAN, "std": STD, "input_size": SIZE, "channels": CHANNELS, "transform": TRANSFORM}

DEFAULT_DATA_DIR = "./data"
BUILTIN = ("mnist", "fashion-mnist", "kmnist", "emnist-balanced", "cifar10", "svhn")
# Built-in sets of digits or letters: a horizontal flip turns their images into other glyphs or none
GLYPHS = ("mnist", "kmnist", "emnist-balanced", "svhn")


@dataclass(frozen=True)
class DataSource:
    """Which data, as a plain picklable value: worker processes get this and load the data themselves."""

    name: str = "mnist"  # a built-in name, or the path of a folder or an .npz file
    data_dir: str = DEFAULT_DATA_DIR  # where the built-in sets live
    image_size: int | None = None  # None: the data's own
    channels: int | None = None
    val_size: int | None = None  # None: 5,000 for MNIST, else 10 % of the training images (at most 5,000)
    download: bool = False

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN


def resolve_data_dir(flag: str | None) -> Path:
    """--data-dir, else $NAS_DATA_DIR, else ./data."""
    return Path(flag or os.environ.get("NAS_DATA_DIR") or DEFAULT_DATA_DIR)


def as_source(data: "DataSource | Path | str", download: bool = False) -> DataSource:
    """A DataSource; a bare data dir (what callers passed before other data existed) means MNIST in it."""
    if isinstance(data, DataSource):
        return data
    return DataSource("mnist", str(data), download=download)


def source_of(name: str | None, data_dir: str | None, *, image_size: int | None = None, channels: int | None = None,
              val_size: int | None = None, download: bool = False) -> DataSource:
    """A command's --data, --data-dir, --image-size, --channels, --val-size and --download as a DataSource.
    A name that is neither built in nor an existing path is one line listing the built-in names."""
    name = name or "mnist"
    if name.lower() in BUILTIN:
        name = name.lower()
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise DataError(f"--data {name}: neither a built-in set ({', '.join(BUILTIN)}) nor an existing folder "
                            "or .npz file")
        if path.is_file() and path.suffix.lower() != ".npz":
            raise DataError(f"--data {name}: a file must be an .npz (x_train, y_train[, x_test, y_test])")
        name = str(path.resolve())
        if download:
            raise DataError("--download fetches only the built-in sets, not a folder or .npz")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels {channels}: 1 (grey) or 3 (colour)")
    return DataSource(name, str(resolve_data_dir(data_dir)), image_size, channels, val_size, download)


@dataclass(frozen=True)
class DataInfo:
    """What a model trained on the data needs to know of it, and what the study records."""

    identity: dict  # {"name": "mnist"}, or for a folder/npz: name, kind, images_per_class, hash
    channels: int
    size: int
    classes: tuple
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str | None  # the rule, when images are resized or converted
    notes: tuple[str, ...] = ()
    train_images: int = 0  # before the validation split

    @property
    def title(self) -> str:
        return "MNIST" if self.identity.get("name") == "mnist" and len(self.identity) == 1 else self.identity["name"]

    @property
    def is_mnist(self) -> bool:
        """MNIST as it always was: what checkpoints and ONNX files written before other data assume."""
        return self.identity == {"name": "mnist"} and self.preprocessing() == PREPROCESSING

    @property
    def mirrorable(self) -> bool:
        """False for a built-in set of digits or letters (GLYPHS), which no spec may flip; a folder or .npz may be."""
        return "kind" in self.identity or self.identity.get("name") not in GLYPHS

    @property
    def shape(self) -> dict[str, int]:
        """A spec's fields that must match the data."""
        return {"in_channels": self.channels, "input_size": self.size, "num_classes": len(self.classes)}

    def preprocessing(self) -> dict[str, Any]:
        """As stored in checkpoints and the ONNX metadata: MNIST's exactly as before, a number per channel else."""
        one = self.channels == 1
        out = {"mean": self.mean[0] if one else list(self.mean), "std": self.std[0] if one else list(self.std),
               "input_size": self.size, "channels": self.channels, "transform": TRANSFORM}
        if self.resize:
            out["resize"] = self.resize
        return out

    def record(self) -> dict[str, Any]:
        """What best.json, trial records and the study keep of the data."""
        return {"data": dict(self.identity), "preprocessing": self.preprocessing(), "class_labels": list(self.classes)}



MNIST_INFO = DataInfo({"name": "mnist"}, CHANNELS, SIZE, tuple(range(CLASSES)), (MEAN,), (STD,), None, (), 60_000)


def source_from_args(args: Any) -> DataSource:
    """A command's data flags (cli.add_device_args) as a DataSource."""
    return source_of(getattr(args, "data", None), getattr(args, "data_dir", None),
                     image_size=getattr(args, "image_size", None), channels=getattr(args, "channels", None),
                     val_size=getattr(args, "val_size", None), download=getattr(args, "download", False))



def study_preprocessing(info: DataInfo) -> dict[str, Any]:
    return {**info.preprocessing(), "class_labels": list(info.classes)}


def describe_data(identity: Any) -> str:
    """A recorded data identity in a few words: `mnist`, or `flowers (folder, 1,200 images, a1b2c3...)`."""
    if not isinstance(identity, dict):
        return str(identity)
    name = str(identity.get("name", "?"))
    if "hash" in identity:
        per_class = identity.get("images_per_class") or {}
        total = sum(v for v in per_class.values() if isinstance(v, int))
        name += f" ({identity.get('kind', 'files')}, {len(per_class)} classes, {total:,} images, {identity['hash']})"
    if "val_images" in identity:
        name += f", {identity['val_images']:,} validation images"
    return name


def header(info: DataInfo) -> str:
    """The data's line(s) in a command's header: what is read, its shape, the rule, what was skipped."""
    mean = ", ".join(f"{m:g}" for m in info.mean)
    std = ", ".join(f"{s:g}" for s in info.std)
    lines = [f"data {describe_data(info.identity)}: {info.train_images:,} training images, {info.channels}x{info.size}"
             f"x{info.size}, {len(info.classes)} classes, normalised by mean {mean} / std {std}"]
    if info.resize:
        lines.append(f"data: {info.resize}")
    lines += [f"data: {note}" for note in info.notes]
    return "\n".join(lines)
