"""Studies on disk: storage URLs, opening a study safely, and the record of a trial's result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from .cli import UsageError
from .spec import Spec

STUDIES_DIR = Path("studies")


def default_storage(study_name: str) -> str:
    return f"sqlite:///{STUDIES_DIR}/{study_name}.db"


def study_dir(study_name: str) -> Path:
    return STUDIES_DIR / study_name


def _short_reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`, or UsageError with one line saying why not."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///"):])
        if path.parent == STUDIES_DIR and not path.parent.exists():
            path.parent.mkdir(parents=True)
        if not path.parent.is_dir():
            raise UsageError(f"bad storage URL {url}: directory {path.parent} does not exist")
    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:  # sqlalchemy raises many kinds; all mean the same to the user
        raise UsageError(f"bad storage URL {url}: {_short_reason(exc)}") from None


def load_study(study_name: str, storage_url: str | None) -> optuna.Study:
    """An existing study, or UsageError if it is not there."""
    url = storage_url or default_storage(study_name)
    if storage_url is None and not Path(url[len("sqlite:///"):]).is_file():
        raise UsageError(f"no study {study_name!r}: {url[len('sqlite:///'):]} does not exist")
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise UsageError(f"no study {study_name!r} in {url} (studies there: {names})") from None


def trial_record(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> dict[str, Any]:
    """What best.json and exported spec files hold for a trained trial."""
    spec = Spec.from_dict(trial.user_attrs["spec"])
    return {
        "study": study.study_name,
        "trial": trial.number,
        "code": spec.code,
        "spec": spec.to_dict(),
        "params": trial.user_attrs["params"],
        "macs": trial.user_attrs["macs"],
        "val_acc": trial.value,
        "epochs": len(trial.intermediate_values),
        "budget": study.user_attrs.get("budget"),
        "space": study.user_attrs.get("space"),
    }
