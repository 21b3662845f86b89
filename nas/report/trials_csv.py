"""A study's trials as one CSV table: one row per trial, readable by any spreadsheet or `csv.DictReader`.

Columns: what the trial is and what happened to it (outcome, final validation accuracy, fidelity, times,
worker), its finalist re-evaluation if it had one, then its spec's fields flattened (`arch.stages`,
`train.lr`, ...). Lists and booleans are written as JSON (`[[8], [20, 16]]`, `true`); an empty cell is
a value the trial does not have (a rejected trial's accuracy, a running one's end).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import optuna

from ..errors import SpecError
from ..files import atomic_path
from ..spec import Spec
from ..store.record import Reevaluation, TrialRecord, read_reevaluations, read_trials

log = logging.getLogger(__name__)

DEFAULT_NAME = "trials.csv"  # beside report.html
FIELDS = ("number", "outcome", "val_acc", "last_val_acc", "last_epoch", "params", "macs", "ram_int8", "ram_float32",
          "flash_int8", "over_budget", "code",
          "epochs", "train_images", "rungs", "seconds", "train_seconds", "started", "finished", "host",
          "warm_start", "retry_of", "promoted_from", "finalist_mean", "finalist_std", "finalist_min", "finalist_seeds")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _spec_fields(spec: dict[str, Any] | None) -> dict[str, Any]:
    if not spec:
        return {}
    try:  # the stored form of any version, as today's spec writes it (version 1 upgraded)
        spec = Spec.from_dict(spec).to_dict()
    except (SpecError, TypeError, KeyError, ValueError):
        log.debug("trial spec not readable: its fields as stored", exc_info=True)
    return {f"{part}.{key}": value for part in ("arch", "train") for key, value in (spec.get(part) or {}).items()}


def row(r: TrialRecord, again: Reevaluation | None = None) -> dict[str, Any]:
    """One trial's cells, before they are written as text."""
    seconds = (r.finished - r.started).total_seconds() if r.started and r.finished else None
    trained = sum(r.epoch_seconds) + sum(s.seconds for s in r.rungs)
    last = max(r.curve) if r.curve else None
    return {
        "number": r.number, "outcome": r.outcome.value, "val_acc": r.value,
        "last_val_acc": r.curve[last] if last is not None else None, "last_epoch": last,
        "params": r.params, "macs": r.macs, "ram_int8": r.ram_int8, "ram_float32": r.ram_float32,
        "flash_int8": r.flash_int8, "over_budget": "; ".join(map(str, r.over_budget)) or None, "code": r.code,
        "epochs": r.fidelity.epochs if r.fidelity else None,
        "train_images": r.fidelity.train_images if r.fidelity else None,
        "rungs": " ".join(f"{s.fidelity.epochs}x{s.fidelity.train_images}:{s.val_acc:.2f}" for s in r.rungs) or None,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "train_seconds": round(trained, 3) if r.epoch_seconds or r.rungs else None,
        "started": r.started.isoformat(sep=" ", timespec="seconds") if r.started else None,
        "finished": r.finished.isoformat(sep=" ", timespec="seconds") if r.finished else None,
        "host": r.worker.host if r.worker else None, "warm_start": r.warm_start, "retry_of": r.retry_of,
        "promoted_from": r.promoted_from,
        "finalist_mean": round(again.mean, 4) if again else None,
        "finalist_std": round(again.std, 4) if again else None,
        "finalist_min": min(again.val_accs.values()) if again else None,
        "finalist_seeds": len(again.val_accs) if again else None,
        **_spec_fields(r.spec),
    }


def csv_text(records: list[TrialRecord], reevaluations: dict[int, Reevaluation]) -> str:
    rows = [row(r, reevaluations.get(r.number)) for r in records]
    spec_columns = sorted({key for cells in rows for key in cells if key not in FIELDS},
                          key=lambda key: (not key.startswith("arch."), key))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*FIELDS, *spec_columns], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in cells.items()} for cells in rows)
    return out.getvalue()


def write_csv(study: optuna.Study, path: Path) -> Path:
    """Write the study's trials to `path` atomically (its folder made if missing); returns the path."""
    text = csv_text(read_trials(study), read_reevaluations(study))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path
