"""What a trial and a study store in Optuna's storage: written and read only through this module and
nas.store.settings.

A trial's user attributes hold the candidate (spec, code, fvcore parameters and MACs; peak RAM and flash,
and the budgets a rejected candidate is over), the fidelity it was judged at, the seconds of each epoch and
its outcome; a study's user attributes hold the settings it was created with (nas.store.settings, re-exported
here) and the finalists' trainings. Everything else (the report, export, the summary, tests) reads
`TrialRecord`s and `StudySettings`, never `user_attrs` directly.
"""

from __future__ import annotations

import datetime
import os
import statistics
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..cost import Costs, Overrun
from ..fidelity import Fidelity
from ..spec import Spec
# the study's settings, imported from here by the commands and tests that read both
from .settings import BUNDLED, StudySettings, read_settings, stored_space_file, write_settings  # noqa: F401


class Outcome(str, Enum):
    """What happened to a trial, in the search's words (Optuna's state alone calls a rejection 'pruned')."""

    COMPLETE = "complete"  # trained for every epoch; its value is the final-epoch validation accuracy
    PRUNED = "pruned"  # stopped by the median rule after some epochs of its full training
    SCREENED = "screened"  # not promoted past a cheap rung when it got there (a late promotion may go on)
    REJECTED = "rejected"  # >= budget by fvcore's count: never trained
    DIVERGED = "diverged"  # its loss became NaN/inf or exploded
    FAILED = "failed"  # an error in the trial
    INTERRUPTED = "interrupted"  # stopped by a signal, or its worker died
    RUNNING = "running"  # still training (or left so by a search that was killed)
    QUEUED = "queued"  # waiting for a worker: a warm start, a late promotion or a dead worker's retry


# how each outcome is stored in Optuna's own states
_STATE = {Outcome.COMPLETE: TrialState.COMPLETE, Outcome.PRUNED: TrialState.PRUNED, Outcome.SCREENED: TrialState.PRUNED,
          Outcome.REJECTED: TrialState.PRUNED, Outcome.DIVERGED: TrialState.PRUNED,
          Outcome.FAILED: TrialState.FAIL, Outcome.INTERRUPTED: TrialState.FAIL}


@dataclass(frozen=True)
class RungScore:
    """A candidate's final-epoch validation accuracy at a cheap rung (comparable only at that rung)."""

    fidelity: Fidelity
    val_acc: float
    seconds: float


@dataclass(frozen=True)
class Worker:
    """Where a trial runs, and when it last said it was alive (seconds since the epoch)."""

    host: str
    pid: int
    heartbeat: float


# ------------------------------------------------------------------ writing a trial


def record_candidate(trial: optuna.Trial, spec: Spec, params: int, macs: int, fidelity: Fidelity,
                     ladder: tuple[Fidelity, ...] = ()) -> None:
    """What every candidate stores before the budget gate decides on it: `fidelity` is the first it
    is judged at, `ladder` the rungs it may climb (cheapest first, the full fidelity last)."""
    trial.set_user_attr("spec", spec.to_dict())
    trial.set_user_attr("code", spec.code)
    trial.set_user_attr("params", params)
    trial.set_user_attr("macs", macs)
    trial.set_user_attr("fidelity", fidelity.to_dict())
    if ladder:
        trial.set_user_attr("ladder", [f.to_dict() for f in ladder])


def record_costs(trial: optuna.Trial, costs: Costs) -> None:
    """The device costs, beside record_candidate's parameters and MACs: peak activation RAM at int8 and float32
    and the int8 model's flash, in bytes (nas.cost). Trials of studies made before have none."""
    trial.set_user_attr("ram_int8", costs.ram_int8)
    trial.set_user_attr("ram_float32", costs.ram_float32)
    trial.set_user_attr("flash_int8", costs.flash_int8)


def record_widths_factor(trial: optuna.Trial, factor: float) -> None:
    """`nas search --widths filled`: the factor the drawn widths were scaled by to fill the budgets (the spec
    record_candidate stores is the scaled copy, the trial's parameters the widths drawn)."""
    trial.set_user_attr("widths_factor", factor)


def record_overruns(trial: optuna.Trial, overruns: list[Overrun]) -> None:
    """The budgets a rejected candidate is over, each with its cost, the most it allowed and the excess.
    Rejected trials of studies made before have none (they were over the parameter budget)."""
    trial.set_user_attr("over_budget", [{"budget": o.budget, "cost": o.cost, "allowed": o.allowed, "over": o.over}
                                        for o in overruns])


def record_fidelity(trial: optuna.Trial, fidelity: Fidelity) -> None:
    """The fidelity the trial is being judged at now (the highest rung it reached, once it ends)."""
    trial.set_user_attr("fidelity", fidelity.to_dict())


def rung_attr(k: int) -> str:
    """The numeric user attribute that holds a trial's score at cheap rung k (1 = the cheapest)."""
    return f"rung{k}_val_acc"


def record_rungs(trial: optuna.Trial, scores: list[RungScore], first: int = 0) -> None:
    """The scores at the cheap rungs so far, from rung `first` (counted from 0: a late promotion starts above
    0), each also reported to Optuna at its rung's step, which the pruner reads. The latest is also a number of
    its own (`rung_attr`), a target of optuna-dashboard's history plot."""
    trial.set_user_attr("rungs", [{**s.fidelity.to_dict(), "val_acc": s.val_acc, "seconds": round(s.seconds, 3)}
                                  for s in scores])
    if scores:
        trial.set_user_attr(rung_attr(first + len(scores)), scores[-1].val_acc)


def record_epochs(trial: optuna.Trial, seconds: list[float]) -> None:
    """The training seconds of every epoch so far (evaluation excluded)."""
    trial.set_user_attr("epoch_seconds", [round(s, 3) for s in seconds])


def record_worker(trial: optuna.Trial, worker: Worker) -> None:
    trial.set_user_attr("worker", asdict(worker))


def record_heartbeat(trial: optuna.Trial, when: float) -> None:
    worker = trial.user_attrs.get("worker") or {}
    trial.set_user_attr("worker", {**worker, "heartbeat": when})


def record_outcome(trial: optuna.Trial, outcome: Outcome) -> None:
    trial.set_user_attr("outcome", outcome.value)


# what a trial queued again (heartbeat.retry_trial) keeps of the failed one's user attributes: what the
# trial is, not what its run measured
RETRY_KEPT = ("warm_start", "promoted_from", "start_rung")


def record_retry(failed: int) -> dict[str, Any]:
    """The system attributes that mark a trial as the retry of `failed` (Optuna's own retry marker)."""
    return {"failed_trial": failed, "retry_history": [failed]}


def queued_as(name: str) -> dict[str, str]:
    """The user attributes of a trial queued as a known design (`study.enqueue_trial(..., user_attrs=...)`)."""
    return {"warm_start": name}


def promoted_as(screened: int, rung: int) -> dict[str, int]:
    """The user attributes of a trial queued as the late promotion of trial `screened` (screened out at cheap
    rung `rung` - 1, counted from 0): it trains the same candidate from rung `rung` on."""
    return {"promoted_from": screened, "start_rung": rung}


def promotion_of(trial: FrozenTrial | optuna.Trial) -> tuple[int, int] | None:
    """(the screened trial, the rung it starts at) of a late promotion (`promoted_as`), or None."""
    attrs = trial.user_attrs
    return (attrs["promoted_from"], attrs["start_rung"]) if "promoted_from" in attrs else None


def optuna_state(outcome: Outcome) -> TrialState:
    """The Optuna state a finished trial of this outcome is stored in."""
    return _STATE[outcome]


# ------------------------------------------------------------------ reading a trial


def retry_of(trial: FrozenTrial) -> int | None:
    """The trial this one trains again (its worker died), or None. Studies made before the retry
    marker was Optuna's own hold it as the user attribute `retry_of`."""
    return trial.system_attrs.get("failed_trial", trial.user_attrs.get("retry_of"))


def warm_start_of(trial: FrozenTrial) -> str | None:
    """The known design a trial was queued as (`queued_as`), or None for a drawn one."""
    return trial.user_attrs.get("warm_start")


def outcome_of(trial: FrozenTrial) -> Outcome:
    """The one derivation of a trial's outcome from its state and its stored outcome."""
    told = trial.user_attrs.get("outcome")
    if trial.state == TrialState.COMPLETE:
        return Outcome.COMPLETE
    if trial.state == TrialState.WAITING:
        return Outcome.QUEUED
    if trial.state == TrialState.RUNNING:
        return Outcome.RUNNING
    if trial.state == TrialState.FAIL:  # a trial still 'running' when it failed lost its worker
        return Outcome.INTERRUPTED if told in (Outcome.INTERRUPTED.value, Outcome.RUNNING.value) else Outcome.FAILED
    pruned_as = (Outcome.REJECTED.value, Outcome.DIVERGED.value, Outcome.SCREENED.value)
    return Outcome(told) if told in pruned_as else Outcome.PRUNED


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the search wrote it."""

    number: int
    outcome: Outcome
    spec: dict[str, Any] | None  # the spec's JSON form (Spec.from_dict to use it)
    code: str | None
    params: int | None  # fvcore count; None if the trial failed before it was counted
    macs: int | None
    fidelity: Fidelity | None  # None for trials of studies made before fidelities were recorded
    epoch_seconds: tuple[float, ...]
    value: float | None  # final-epoch validation accuracy (%), complete trials only
    curve: dict[int, float] = field(default_factory=dict)  # epoch of the full training -> validation accuracy (%)
    rungs: tuple[RungScore, ...] = ()  # scores at the cheap rungs it was trained at, cheapest first
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    worker: Worker | None = None
    retry_of: int | None = None  # the trial whose worker died, whose parameters this one trains again
    warm_start: str | None = None  # the known design (reference or named spec file) this trial was queued as
    promoted_from: int | None = None  # the screened-out trial whose candidate this late promotion trains on
    ram_int8: int | None = None  # peak activation RAM of one inference, bytes (nas.cost.peak_ram); None: not recorded
    ram_float32: int | None = None  # (trials of studies made before device budgets)
    flash_int8: int | None = None  # bytes of the int8 model (nas.cost.flash_int8)
    over_budget: tuple[Overrun, ...] = ()  # a rejected candidate's overruns; () before they were recorded

    @property
    def accuracy(self) -> tuple[float, int] | None:
        """(validation accuracy, epochs it took) to place the trial on an accuracy axis, if it has one.

        Complete: the final-epoch value. Pruned or running: the last epoch reported, which is NOT a
        final accuracy: figures draw those apart and keep them off any front.
        """
        if self.outcome == Outcome.COMPLETE and self.value is not None:
            return self.value, len(self.curve)
        if self.outcome in (Outcome.PRUNED, Outcome.RUNNING, Outcome.INTERRUPTED) and self.curve:
            last = max(self.curve)
            return self.curve[last], last
        return None

    @property
    def seconds_per_epoch(self) -> float | None:
        return sum(self.epoch_seconds) / len(self.epoch_seconds) if self.epoch_seconds else None


def read_trial(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    # steps 0..K-1 are the K cheap rungs' scores, K+e the full training's epoch e (nas.fidelity);
    # trials without a ladder (full fidelity only, or made before ladders) have K = 0
    cheap = max(0, len(attrs.get("ladder") or ()) - 1)
    return TrialRecord(
        number=trial.number, outcome=outcome_of(trial), spec=attrs.get("spec"), code=attrs.get("code"),
        params=attrs.get("params"), macs=attrs.get("macs"),
        # studies made before fidelities were recorded: their study-wide epochs stand for it
        fidelity=Fidelity.from_dict(attrs.get("fidelity")),
        epoch_seconds=tuple(attrs.get("epoch_seconds") or ()),
        value=float(trial.value) if trial.state == TrialState.COMPLETE and trial.value is not None else None,
        curve={int(k) - cheap: float(v) for k, v in sorted(trial.intermediate_values.items()) if k > cheap},
        rungs=tuple(_rung(r) for r in attrs.get("rungs") or ()),
        started=trial.datetime_start, finished=trial.datetime_complete, worker=_worker(attrs.get("worker")),
        retry_of=retry_of(trial), warm_start=warm_start_of(trial),
        promoted_from=(promotion_of(trial) or (None,))[0],
        ram_int8=attrs.get("ram_int8"), ram_float32=attrs.get("ram_float32"), flash_int8=attrs.get("flash_int8"),
        over_budget=tuple(_overrun(o) for o in attrs.get("over_budget") or ()))


def _overrun(data: dict[str, Any]) -> Overrun:
    return Overrun(str(data["budget"]), int(data["cost"]), int(data["allowed"]))


def _rung(data: dict[str, Any]) -> RungScore:
    return RungScore(Fidelity(int(data["epochs"]), int(data["train_images"])), float(data["val_acc"]),
                     float(data.get("seconds", 0.0)))


def _worker(data: Any) -> Worker | None:
    try:
        return Worker(str(data["host"]), int(data["pid"]), float(data["heartbeat"]))
    except (KeyError, TypeError, ValueError):
        return None


def read_trials(study: optuna.Study | str, storage: str | None = None,
                studies_dir: str | os.PathLike | None = None) -> list[TrialRecord]:
    """Every trial of the study, read once (one snapshot: counts and figures agree), in trial order. `study`: an
    Optuna study, or a study's name, opened as `nas report` opens it: from `storage` (a URL or a journal file),
    else from `studies_dir` (else $NAS_STUDIES_DIR, else ./studies). Users call it as `nas.read_trials(name)`."""
    if isinstance(study, str):
        from .storage import load_study, studies_dir as default_dir  # storage opens; this module only reads

        study = load_study(study, storage, default_dir(None if studies_dir is None else str(studies_dir)))
    return [read_trial(t) for t in study.get_trials(deepcopy=False)]


def trained_per_fidelity(records: list[TrialRecord]) -> dict[Fidelity, int]:
    """How many candidates were trained at each fidelity (each cheap rung and the full training), cheapest first."""
    counts: dict[Fidelity, int] = {}
    for r in records:
        for f in [s.fidelity for s in r.rungs] + ([r.fidelity] if r.curve and r.fidelity else []):
            counts[f] = counts.get(f, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: item[0].cost))


# ------------------------------------------------------------------ finalists and the winner


@dataclass(frozen=True)
class Reevaluation:
    """A finalist trained again at full fidelity with new seeds, on the search split (validation only)."""

    trial: int
    val_accs: dict[int, float]  # seed -> final-epoch validation accuracy (%)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.val_accs.values())

    @property
    def std(self) -> float:  # the sample std, as nas retrain reports its seeds
        return statistics.stdev(self.val_accs.values()) if len(self.val_accs) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        seeds = sorted(self.val_accs)
        return {"seeds": seeds, "val_acc": [self.val_accs[s] for s in seeds], "mean": self.mean, "std": self.std,
                "min": min(self.val_accs.values())}


_REEVAL = "reevaluation"  # study attribute "reevaluation:<trial>:<seed>": one key per training, so that
# workers on several machines add theirs without overwriting each other's


_REEVAL_RUN = "reevaluation_run"  # "reevaluation_run:<trial>:<seed>": when and where that training ran


@dataclass(frozen=True)
class FinalistRun:
    """One finalist training: when and where it ran (studies made before this was recorded lack it)."""

    trial: int
    seed: int
    val_acc: float  # final-epoch validation accuracy (%)
    started: datetime.datetime  # naive local time, as Optuna's trial times
    finished: datetime.datetime
    host: str | None = None

    @property
    def seconds(self) -> float:
        return (self.finished - self.started).total_seconds()


def record_reevaluation(study: optuna.Study, trial: int, seed: int, val_acc: float,
                        run: tuple[float, float, str] | None = None) -> None:
    """One finalist training's result; `run`: its (start, end) in seconds since the epoch and its host, written
    first, so that a stored accuracy has its run."""
    if run is not None:
        start, end, host = run
        study.set_user_attr(f"{_REEVAL_RUN}:{trial}:{seed}",
                            {"started": round(start, 3), "seconds": round(end - start, 3), "host": host})
    study.set_user_attr(f"{_REEVAL}:{trial}:{seed}", val_acc)


def read_reevaluations(study: optuna.Study) -> dict[int, Reevaluation]:
    found: dict[int, dict[int, float]] = {}
    for key, value in study.user_attrs.items():
        kind, _, rest = key.partition(":")
        if kind == _REEVAL:
            trial, seed = (int(part) for part in rest.split(":"))
            found.setdefault(trial, {})[seed] = float(value)
    return {trial: Reevaluation(trial, accs) for trial, accs in found.items()}


def read_finalist_runs(study: optuna.Study) -> list[FinalistRun]:
    """The finalist trainings that finished, with when and where they ran, in the order they started."""
    done = read_reevaluations(study)
    runs = []
    for key, value in study.user_attrs.items():
        kind, _, rest = key.partition(":")
        if kind != _REEVAL_RUN:
            continue
        trial, seed = (int(part) for part in rest.split(":"))
        acc = done.get(trial, Reevaluation(trial, {})).val_accs.get(seed)
        if acc is None:
            continue  # its accuracy was never stored: the training was stopped, and will run again
        try:
            start = datetime.datetime.fromtimestamp(float(value["started"]))
            end = start + datetime.timedelta(seconds=float(value["seconds"]))
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            continue
        runs.append(FinalistRun(trial, seed, acc, start, end, str(value["host"]) if value.get("host") else None))
    return sorted(runs, key=lambda r: (r.started, r.trial, r.seed))
