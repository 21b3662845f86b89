"""NAS under a parameter budget: search, export and retrain small CNNs for MNIST."""

from .cost import count_macs, count_params
from .model import build
from .spec import Arch, Spec, Train, load_spec, save_spec

__version__ = "0.1.0"
__all__ = ["Arch", "Spec", "Train", "build", "count_macs", "count_params", "load_spec", "save_spec", "__version__"]
