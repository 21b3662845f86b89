"""NAS under a parameter budget: search, export and retrain small CNNs for MNIST."""

__version__ = "0.1.0"

from .cost import count_macs, count_params  # noqa: E402 (checkpoint.py imports __version__ from here)
from .model import build  # noqa: E402
from .spec import Arch, Spec, Train, load_spec, save_spec  # noqa: E402

__all__ = ["Arch", "Spec", "Train", "build", "count_macs", "count_params", "load_spec", "save_spec", "__version__"]
