"""The files that ship inside the package: search spaces, the hand-made reference specs and the
models our measured searches found.

They are package data, read through `importlib.resources`, so an installed wheel finds them from
any working directory; the repository's top-level `search_spaces/` links here for users to browse.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

ROOT = Path(str(files("nas") / "search_spaces"))  # a plain directory for an installed (unzipped) package
DEFAULT_SPACE = "mnist"


def spaces() -> dict[str, Path]:
    """Bundled search spaces by name: the file name without `.yaml` (e.g. `mnist`, `mnist_tiny`), which is
    also the `name:` each file gives (canonical_space_name maps the names they had before)."""
    return {p.stem: p for p in sorted(ROOT.glob("*.yaml"))}


def find_space(value: str) -> Path:
    """A space file: `value` itself if it names a file, else the bundled space of that name."""
    path = Path(value)
    if path.is_file():
        return path
    key = path.name.removesuffix(".yaml").replace("-", "_")
    return spaces().get(key, path)  # a missing file is reported by load_space, naming it


def reference_files() -> list[Path]:
    """The hand-made reference ladder, in order (1_basic ... 4_final)."""
    return sorted((ROOT / "reference").glob("*.json"))


def found_files() -> list[Path]:
    """The models our searches found (found/b8000.json, ...): spec files with their retrain results."""
    return sorted((ROOT / "found").glob("*.json"))


def spec_files() -> dict[str, Path]:
    """Bundled spec files by name: `reference/1_basic` ... `reference/4_final`, then `found/b2000` ...: the
    file's folder and name without `.json`, the names `nas retrain`, `nas bench --spec` and `--warm-start` take."""
    return {f"{p.parent.name}/{p.stem}": p for p in reference_files() + found_files()}


def find_spec(value: str | os.PathLike) -> Path:
    """A spec file: `value` itself if that path exists (a user's own file wins, and anything else there is
    reported by load_spec), else the bundled spec of that name (`found/b8000`, `reference/4_final.json`), else
    `value` (a missing file, reported by load_spec with the bundled names)."""
    path = Path(value)
    if os.path.lexists(path):
        return path
    return spec_files().get(path.as_posix().removesuffix(".json"), path)


def spec_names_hint() -> str:
    """What a missing spec file's error adds: the bundled names that may be given instead."""
    return f", nor a bundled spec (bundled: {', '.join(spec_files())})"


def in_package(path: str | os.PathLike) -> bool:
    """Whether `path` lies inside the installed package (its bundled files, through any link to them)."""
    package = Path(str(files("nas"))).resolve()
    return Path(path).resolve().is_relative_to(package)


# The names the bundled spaces had before each was named after its file; studies store the name they were
# made with. mnist.yaml was `mnist2`, and `mnist` was the classic space (mnist_classic.yaml; before spec
# version 2, mnist.yaml itself), so an old `mnist` is the classic space's, unless its file says otherwise.
_OLD_NAMES = {"mnist2": "mnist", "mnist-small": "mnist_small", "mnist-tiny": "mnist_tiny"}


def canonical_space_name(stored_name: str, stored_file: str | None, *, before_rungs: bool = False) -> str:
    """Today's name of the bundled space a study was made with, from the name (and file) the study stores.

    `mnist2` -> `mnist`, `mnist-small` -> `mnist_small`, `mnist-tiny` -> `mnist_tiny`; `mnist` ->
    `mnist_classic` where the stored file is mnist_classic.yaml, or where it is mnist.yaml in a study made
    before spec version 2 (`before_rungs`: its settings have no rungs), when mnist.yaml held the classic
    space. Any other name (a new study's, a space of one's own) is returned as it is.
    """
    if stored_name in _OLD_NAMES:
        return _OLD_NAMES[stored_name]
    stem = Path(stored_file).stem if isinstance(stored_file, str) else None
    if stored_name == "mnist" and (stem == "mnist_classic" or (stem == "mnist" and before_rungs)):
        return "mnist_classic"
    return stored_name
