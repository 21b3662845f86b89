"""The study's winner and best.json: which trial wins (after its finalists' re-evaluation, if any)
and the record that best.json and exported spec files hold."""

from __future__ import annotations

import fcntl
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..cost import FLOAT32, INT8, flash_int8, peak_ram
from ..files import write_json
from ..spec import Spec
from ..version import provenance
from .record import Outcome, Reevaluation, TrialRecord, read_reevaluations, read_trials
from .settings import StudySettings, data_of, read_settings

MAX_FINALIST_SEEDS = 100  # --finalist-seeds at most


def finalists(records: list[TrialRecord], count: int) -> list[TrialRecord]:
    """The `count` complete trials with the best final-epoch validation accuracy (all at full fidelity)."""
    complete = [r for r in records if r.outcome == Outcome.COMPLETE and r.value is not None]
    return sorted(complete, key=lambda r: (-r.value, r.number))[:count]


def select_winner(study: optuna.Study, records: list[TrialRecord] | None = None
                  ) -> tuple[TrialRecord, Reevaluation | None] | None:
    """The study's winner: among the finalists, the best mean over their re-evaluation seeds once every
    finalist has them all; until then (or with finalists off) the best single final-epoch accuracy,
    with no re-evaluation. None: no trial completed. `records`: the study's trials, if already read."""
    ranked = ranked_finalists(study, records)
    return None if ranked is None else ranked[0]


def ranked_finalists(study: optuna.Study, records: list[TrialRecord] | None = None
                     ) -> list[tuple[TrialRecord, Reevaluation | None]] | None:
    """The finalists by mean over their new seeds, best first, once every one has them all; else the best
    single run alone, with no re-evaluation. None: no trial completed. The first is `select_winner`'s; read
    once, it gives the winner and its `lead_of` from the same state."""
    settings = read_settings(study)
    count, seeds = settings.get("finalists") or 0, settings.get("finalist_seeds") or 0
    top = finalists(read_trials(study) if records is None else records, max(1, count))
    if not top:
        return None
    reevaluated = read_reevaluations(study)
    if count and seeds and all(len(reevaluated.get(r.number, Reevaluation(r.number, {})).val_accs) >= seeds
                               for r in top):
        ranked = sorted(top, key=lambda r: (-reevaluated[r.number].mean, r.number))
        return [(r, reevaluated[r.number]) for r in ranked]
    return [(top[0], None)]


@dataclass(frozen=True)
class Lead:
    """How far the winner's mean is ahead of the next finalist's, against the noise of the two means.

    A design's seed-to-seed spread (about ±0.1 % on MNIST) is often as large as the gaps between
    finalists, so a mean over 3 seeds can rank them by luck; this says whether it did."""

    runner_up: int  # its trial number
    points: float  # the winner's mean minus the runner-up's
    standard_error: float | None  # of that difference, sqrt(s1²/n1 + s2²/n2); None: a mean of one seed
    seeds: int  # the fewest seeds either mean has

    @property
    def settled(self) -> bool:
        """Two standard errors apart: more seeds would seldom reverse the order."""
        return bool(self.standard_error) and self.points > 2 * self.standard_error

    def sentence(self) -> str:
        head = f"The winner's mean leads trial {self.runner_up}'s by {self.points:.2f} points"
        errors = f"{self.points / self.standard_error:.1f} standard errors" if self.standard_error else ""
        if self.settled:
            return f"{head}, {errors}: more seeds would seldom reverse it."
        noise = ("with one seed, a mean's noise is unknown" if self.standard_error is None else
                 "their seeds did not vary, so their noise is unmeasured" if self.standard_error == 0 else errors)
        more = min(2 * self.seeds, MAX_FINALIST_SEEDS)
        if more == self.seeds:
            return f"{head}, {noise}: their order is not settled."
        return (f"{head}, {noise}: their order is not settled. The same command with --trials 0 --finalist-seeds "
                f"{more} trains {more - self.seeds} more seed(s) of each finalist.")


def winner_lead(study: optuna.Study, records: list[TrialRecord] | None = None) -> Lead | None:
    """The named winner's lead over the next finalist; None until a winner is named among two or more."""
    return lead_of(ranked_finalists(study, records))


def lead_of(ranked: list[tuple[TrialRecord, Reevaluation | None]] | None) -> Lead | None:
    """`winner_lead` of a ranking already read (`ranked_finalists`)."""
    if ranked is None or len(ranked) < 2:
        return None
    (_, first), (runner_up, second) = ranked[0], ranked[1]
    seeds = min(len(first.val_accs), len(second.val_accs))
    error = None if seeds < 2 else math.sqrt(sum(a.std ** 2 / len(a.val_accs) for a in (first, second)))
    return Lead(runner_up.number, first.mean - second.mean, error, seeds)


def best_record(record: TrialRecord, study: optuna.Study, reevaluation: Reevaluation | None = None) -> dict[str, Any]:
    """What best.json and exported spec files hold for a complete trial (and its re-evaluation, if any)."""
    spec = Spec.from_dict(record.spec)
    settings = read_settings(study)
    selected = (f"best mean validation accuracy over {len(reevaluation.val_accs)} new seeds among the top "
                f"{settings.get('finalists')} trials" if reevaluation else "best final-epoch validation accuracy")
    return {
        "study": study.study_name,
        "trial": record.number,
        "code": spec.code,
        "spec": spec.to_dict(),
        "params": record.params,
        "macs": record.macs,
        **device_costs(record, spec),
        "val_acc": record.value,
        "epochs": len(record.curve),
        "fidelity": record.fidelity.to_dict() if record.fidelity else None,
        "budget": settings.get("budget"),
        **{key: settings.get(key) for key in StudySettings.DEVICE_BUDGETS},
        "space": settings.get("space"),
        "selected_by": selected,
        "reevaluation": reevaluation.to_dict() if reevaluation else None,
        # the data it was found on and its preprocessing (a study made before they were recorded: MNIST's)
        **{key: value for key, value in zip(("data", "preprocessing"), data_of(settings)) if value is not None},
        **provenance(),
    }


def device_costs(record: TrialRecord, spec: Spec) -> dict[str, int]:
    """The trial's peak RAM (int8, float32) and int8 flash in bytes: as recorded, or, for a trial of a study made
    before they were, computed from its spec (the same formulas: nas.cost)."""
    if record.ram_int8 is not None and record.ram_float32 is not None and record.flash_int8 is not None:
        return {"ram_int8": record.ram_int8, "ram_float32": record.ram_float32, "flash_int8": record.flash_int8}
    return {"ram_int8": peak_ram(spec, INT8), "ram_float32": peak_ram(spec, FLOAT32), "flash_int8": flash_int8(spec)}


def write_best(study: optuna.Study, out: Path) -> dict[str, Any] | None:
    """Write `out/best.json` from the storage's best trial, reading and writing in one locked step.

    Workers in several processes finish trials at once; under the lock each reads the best *now* and
    writes it, so a slower writer can never put back an older best. Returns the record (None: no
    complete trial yet).
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".best.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        winner = select_winner(study)
        if winner is None:
            return None
        record, reevaluation = winner
        best = best_record(record, study, reevaluation)
        write_json(best, out / "best.json")
        return best
