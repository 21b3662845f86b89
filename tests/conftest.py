import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("NAS_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {DATA_DIR}: set NAS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def small_data(data_dir):
    from nas.data import load_search_data

    return load_search_data(data_dir, torch.device("cpu"), subset=512)


def run_cli(module: str, *args: str, cwd: Path, env_extra: dict | None = None):
    """Run `python -m module args` as a user would; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "NAS_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
