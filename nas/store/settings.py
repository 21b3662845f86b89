"""What a study was created with, in its user attributes: `StudySettings`, written once when a search creates or
continues the study and read by every command that shows or continues it (nas.store.record re-exports them)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from ..bundled import canonical_space_name, spaces
from ..data.source import MNIST_INFO, study_preprocessing
from ..fidelity import Fidelity


@dataclass(frozen=True)
class StudySettings:
    """What a study was created with; a study is continued only with the same settings."""

    budget: int
    space: str  # the space's name
    space_file: str
    epochs: int
    train_images: int | None = None  # None: unknown (a study made before it was recorded)
    rungs: list[list[int]] | None = None  # the cheap rungs [[epochs, images], ...]; [] = full fidelity only
    rung_unit: str | None = None  # what they count: "images" or "steps" (nas.fidelity); None: images (older studies)
    widths: str | None = None  # --widths: "drawn" or "filled" (to the budgets); None: drawn (older studies)
    finalists: int | None = None  # how many of the best are re-evaluated with new seeds before a winner is named
    finalist_seeds: int | None = None  # ... and with how many seeds each
    space_hash: str | None = None  # Space.content_hash of what the space draws; None: not recorded (an older study)
    max_macs: int | None = None  # the device budgets (--max-macs, --max-ram, --max-flash); None: none, as in
    max_ram: int | None = None  # every study made before they existed
    max_flash: int | None = None
    data: dict | None = None  # the data's identity (nas.data.study_data); None: not recorded (an older study: MNIST)
    preprocessing: dict | None = None  # mean, std, input size, channels, class labels, resize rule of the data

    # what may differ when a study is continued: how the winner is picked, not how trials are judged
    # (space_hash may change only when asked for: nas search --space-changed)
    CHANGEABLE = ("space_file", "finalists", "finalist_seeds")
    # compared even where one side is None: a study without a device budget is not continued with one, nor
    # the other way round
    DEVICE_BUDGETS = ("max_macs", "max_ram", "max_flash")

    @property
    def fidelity(self) -> Fidelity | None:
        return None if self.train_images is None else Fidelity(self.epochs, self.train_images)


BUNDLED = "bundled:"  # a stored space_file `bundled:<name>`: the space shipped in the package under that name


def stored_space_file(path: str) -> str:
    """The `space_file` to store for a space loaded from `path`: `bundled:<name>` for a bundled space (its
    path differs from install to install), else the file's absolute path. Studies made before store the path
    as it was given, possibly relative to where that search ran."""
    resolved = Path(path).resolve()
    for name, bundled in spaces().items():
        if bundled.resolve() == resolved:
            return f"{BUNDLED}{name}"
    return os.path.abspath(path)  # as the user sees it (a symbolic link stays one)


def write_settings(study: optuna.Study, settings: StudySettings) -> None:
    for key, value in asdict(settings).items():
        if value is not None:
            study.set_user_attr(key, value)


def read_settings(study: optuna.Study) -> dict[str, Any]:
    """The settings a study holds, as stored (any of them may be missing in a study made elsewhere), but
    for the space's name: today's name of the bundled space the study was made with (canonical_space_name)."""
    attrs = study.user_attrs
    settings = {f: attrs[f] for f in StudySettings.__dataclass_fields__ if f in attrs}
    if isinstance(settings.get("space"), str):
        stored_file = settings.get("space_file")
        if isinstance(stored_file, str):  # bundled:mnist_classic -> its file's stem
            stored_file = stored_file.removeprefix(BUNDLED)
        settings["space"] = canonical_space_name(settings["space"], stored_file, before_rungs="rungs" not in attrs)
    return settings


def data_of(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The study's data identity and preprocessing (read_settings' form). A study made before they were recorded
    ran on MNIST, normalised as MNIST always was: that is what is returned for it."""
    data = settings.get("data")
    if not isinstance(data, dict):
        return dict(MNIST_INFO.identity), study_preprocessing(MNIST_INFO)
    preprocessing = settings.get("preprocessing")
    return data, preprocessing if isinstance(preprocessing, dict) else None
