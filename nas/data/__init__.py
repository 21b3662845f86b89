"""Image data, loaded once per process into tensors: built-in sets (MNIST, Fashion-MNIST, KMNIST, EMNIST balanced,
CIFAR-10, SVHN), your own folder of images, or an .npz; a fixed validation split carved from the training images;
normalised by the training images' mean and std. The test images are read only by `load_train_test`, which the
final retrain and evaluation use.

One loader per source (builtin.py, folder.py), each giving uint8 images, labels, class names and an identity;
load.py is the one path from there to the trainer's tensors; split.py the tensors and the splits.
"""

from ..errors import DataError
from .builtin import IDX_SETS
from .download import DOWNLOAD_TIMEOUT
from .load import (BUILTIN, CHANNELS, CLASSES, DEFAULT_DATA_DIR, MEAN, MNIST_INFO, PREPROCESSING, SIZE, STD,
                   VAL_SIZE, DataInfo, DataSource, as_source, check_data, check_fits, data_info, load_search_data,
                   load_train_test, resolve_data_dir, search_sizes, search_split, source_of, with_shape)
from .load import describe_data, header, load_test, source_from_args, study_data, study_preprocessing
from .split import SPLIT_SEED, Split, Splits

_FILES = IDX_SETS["mnist"].files()


def check_raw_files(data_dir, train: bool | None = None) -> None:
    """Check that MNIST's IDX files exist with the right magic number, shape and size: the training files
    (train=True), the test files (False) or all four (None)."""
    from pathlib import Path

    from .builtin import IdxSource
    IdxSource("mnist", Path(data_dir)).check(None if train is None else ("train" if train else "test"),
                                              did_you_mean(Path(data_dir)))


def _load_raw(data_dir, train: bool, download: bool):
    """MNIST's uint8 images (N, 28, 28) and labels of one part."""
    from .load import _raw
    x, y, _ = _raw(DataSource("mnist", str(data_dir), download=download), "train" if train else "test")
    return x[:, 0], y


from .builtin import did_you_mean  # noqa: E402

__all__ = ["BUILTIN", "CHANNELS", "CLASSES", "DEFAULT_DATA_DIR", "DOWNLOAD_TIMEOUT", "DataError", "DataInfo",
           "DataSource", "MEAN", "MNIST_INFO", "PREPROCESSING", "SIZE", "SPLIT_SEED", "STD", "Split", "Splits",
           "VAL_SIZE", "as_source", "check_data", "check_fits", "check_raw_files", "data_info", "did_you_mean",
           "load_search_data", "load_train_test", "resolve_data_dir", "search_sizes", "search_split", "source_of",
           "with_shape", "describe_data", "load_test", "header", "source_from_args", "study_data", "study_preprocessing"]
