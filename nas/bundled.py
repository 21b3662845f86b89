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
    also the `name:` each file gives (nas.space.canonical_space_name maps the names they had before)."""
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
    """The winners of the measured searches (found/b8000.json, ...): spec files with their retrain results."""
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
