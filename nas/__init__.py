"""NAS under a parameter budget: search, export and retrain small CNNs for MNIST.

The names below are imported when first used (PEP 562), so `nas --help`, `nas report` and
`nas export` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

_LAZY = {"Arch": "spec", "Spec": "spec", "Train": "spec", "load_spec": "spec", "save_spec": "spec",
         "build": "model", "count_macs": "cost", "count_params": "cost",
         "read_trials": "store.record", "TrialRecord": "store.record", "Outcome": "store.record"}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
