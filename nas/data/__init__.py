"""Image data, loaded once per process into tensors: built-in sets (MNIST, Fashion-MNIST, KMNIST, EMNIST balanced,
CIFAR-10, SVHN), your own folder of images, or an .npz; a fixed validation split carved from the training images;
normalised by the training images' mean and std. The test images are read only by `load_train_test`, which the
final retrain and evaluation use.

One loader per source (builtin.py, folder.py), each giving uint8 images, labels, class names and an identity;
source.py what a command names and what a model needs to know of its data; load.py the one path from a source to
the trainer's tensors; split.py the tensors and the splits.
"""

from pathlib import Path

import torch

from ..errors import DataError
from .builtin import IDX_SETS, IdxSource, did_you_mean
from .download import DOWNLOAD_TIMEOUT
from .load import (VAL_SIZE, check_data, check_fits, data_info, load_search_data, load_test, load_train,
                   load_train_test, search_sizes, search_split, study_data, with_shape)
from .load import _raw
from .source import (BUILTIN, CHANNELS, CLASSES, DEFAULT_DATA_DIR, MEAN, MNIST_INFO, PREPROCESSING, SIZE, STD, DataInfo,
                     DataSource, as_source, describe_data, header, resolve_data_dir, source_from_args, source_of,
                     study_preprocessing)
from .split import SPLIT_SEED, Split, Splits

_FILES = IDX_SETS["mnist"].files()  # MNIST's four file names -> (IDX magic, count, item shape)


def check_raw_files(data_dir: Path, train: bool | None = None) -> None:
    """Check that MNIST's IDX files exist with the right magic number, shape and size: the training files
    (train=True), the test files (False) or all four (None)."""
    IdxSource("mnist", Path(data_dir)).check(None if train is None else ("train" if train else "test"),
                                              did_you_mean(Path(data_dir)))


def _load_raw(data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's uint8 images (N, 28, 28) and labels of one part."""
    x, y, _ = _raw(DataSource("mnist", str(data_dir), download=download), "train" if train else "test")
    return x[:, 0], y


__all__ = ["BUILTIN", "CHANNELS", "CLASSES", "DEFAULT_DATA_DIR", "DOWNLOAD_TIMEOUT", "DataError", "DataInfo",
           "DataSource", "MEAN", "MNIST_INFO", "PREPROCESSING", "SIZE", "SPLIT_SEED", "STD", "Split", "Splits",
           "VAL_SIZE", "as_source", "check_data", "check_fits", "check_raw_files", "data_info", "describe_data",
           "did_you_mean", "header", "load_search_data", "load_test", "load_train", "load_train_test",
           "resolve_data_dir",
           "search_sizes", "search_split", "source_from_args", "source_of", "study_data", "study_preprocessing",
           "with_shape"]
