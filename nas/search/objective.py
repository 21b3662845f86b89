"""One trial's work: sample a spec, count it, gate it on the budget, climb the cheap rungs, train it at
full fidelity; and the live progress line of a worker.

trial -> spec (space.sample) -> module (build) -> fvcore count -> gate -> train (per-epoch validation
accuracy, pruning) -> trial record; the trial's value is the full training's final-epoch accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from ..cost import count_macs, count_params
from ..data import Splits
from ..errors import StorageError
from ..fidelity import Fidelity
from ..model import build
from ..progress import StatusLine, format_duration, format_left, time_left
from ..space import Space
from ..store.heartbeat import beating
from ..store.record import (Outcome, RungScore, record_candidate, record_epochs, record_fidelity, record_outcome,
                            record_rungs)
from ..store.storage import with_retry
from ..train import EpochResult, TrainResult, train

Trainer = Callable[..., TrainResult]  # nas.train.train's signature
log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Live progress on stderr: one line per epoch, rewritten in place on a terminal.

    Counters are of this worker's run; the best is the study's. The ETA comes from the measured
    seconds per epoch of this run times the epochs left: those of the running trial, plus those the
    trials still to start are expected to train (this run's mean epochs per finished trial:
    rejections train none, pruned trials few).
    """

    quiet: bool
    trials: int | None
    timeout: float | None
    epochs: int
    label: str = ""  # "w2/3 " when several workers share the terminal
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    rejected: int = 0
    best: str = "-"
    epochs_trained: int = 0  # by finished trials of this run
    epoch_seconds: float = 0.0  # wall seconds (training and validation) of every epoch of this run
    epochs_timed: int = 0
    running: dict[int, int] = field(default_factory=dict)  # trial number -> epochs it has trained
    storage_error: StorageError | None = None  # set when a trial gave up waiting for the storage
    line: StatusLine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.line = StatusLine(self.quiet)

    def epoch_done(self, number: int, seconds: float) -> None:
        with self.line.lock:
            self.running[number] = self.running.get(number, 0) + 1
            self.epoch_seconds += seconds
            self.epochs_timed += 1

    def trial_done(self, number: int, rejected: bool) -> None:
        with self.line.lock:
            self.done += 1
            self.rejected += rejected
            self.epochs_trained += self.running.pop(number, 0)

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        left = []
        if self.trials is not None and self.epochs_timed:
            per_trial = self.epochs_trained / self.done if self.done else self.epochs
            to_start = max(0, self.trials - self.done - len(self.running))
            epochs_left = sum(self.epochs - e for e in self.running.values()) + to_start * per_trial
            left.append(time_left(self.epoch_seconds, self.epochs_timed, epochs_left))
        if self.timeout is not None:
            left.append(max(0.0, self.timeout - elapsed))
        return format_left(min(left) if left else None)

    def show(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        with self.line.lock:
            self.line.show(f"[{format_duration(time.perf_counter() - self.start)}] {self.label}this run: {self.done}/"
                           f"{self.trials or '?'} trials, {self.rejected} rejected | study best {self.best} | {text} "
                           f"| ETA {self.eta()}", final)


def make_objective(space: Space, data: Splits, budget: int, epochs: int, seed: int, progress: Progress,
                   trainer: Trainer = train, in_flight: set[int] | None = None,
                   cheap_rungs: tuple[Fidelity, ...] = ()) -> Callable[[optuna.Trial], float]:
    """The objective: sample, count, gate, climb the cheap rungs, then train at full fidelity with
    `trainer` (nas.train.train's signature). The trial's value is the full training's final epoch.

    `cheap_rungs` (cheapest first; nas.fidelity.ladder) each train the candidate afresh on the first
    images of `data.train`; the study's pruner decides after each whether it goes on.
    `in_flight` collects the numbers of the trials this process is running (for heal()).
    """
    full = Fidelity(epochs, len(data.train))
    climb = (*cheap_rungs, full)
    rung_data = [Splits(data.train.first(r.train_images), data.held_out) for r in cheap_rungs]
    in_flight = set() if in_flight is None else in_flight

    def objective(trial: optuna.Trial) -> float:
        in_flight.add(trial.number)
        try:
            with beating(trial):
                return _evaluate(trial)
        except optuna.TrialPruned:
            raise
        except StorageError as exc:  # the storage is gone: nothing can be recorded; the worker stops
            progress.storage_error = exc
            raise
        except KeyboardInterrupt:  # a signal: Optuna stores the trial as FAIL; say why
            _quietly(lambda: record_outcome(trial, Outcome.INTERRUPTED))
            raise
        except Exception:
            _quietly(lambda: record_outcome(trial, Outcome.FAILED))
            raise
        finally:
            in_flight.discard(trial.number)

    def _evaluate(trial: optuna.Trial) -> float:
        spec = space.sample(trial)
        module = build(spec)
        params = count_params(module)
        record_candidate(trial, spec, params, count_macs(module), climb[0], climb if cheap_rungs else ())
        # feasible when <= 0, i.e. params < budget; the sampler learns from the violation's size
        trial.set_constraint("params", params - budget + 1)
        if params >= budget:
            record_outcome(trial, Outcome.REJECTED)
            progress.show(f"trial {trial.number} rejected: {params:,} params >= {budget:,}", final=True)
            raise optuna.TrialPruned(f"{params} parameters >= budget {budget}")

        epoch_seconds: list[float] = []
        last = [time.perf_counter()]
        where = f"trial {trial.number} ({params:,} params)"

        def timed() -> None:  # wall time of the epoch, validation included, for the ETA
            now = time.perf_counter()
            progress.epoch_done(trial.number, now - last[0])
            last[0] = now

        def on_rung_epoch(r: EpochResult) -> None:
            timed()
            progress.show(f"{where} rung {len(scores) + 1}/{len(climb)} ({climb[len(scores)]}) epoch "
                          f"{r.epoch}/{r.epochs} loss {r.train_loss:.3f} val {r.eval_acc:.2f}%")

        def on_epoch(r: EpochResult) -> None:
            timed()
            epoch_seconds.append(r.seconds)
            # the storage may hiccup (a database restart): wait for it rather than lose the trial's epochs
            with_retry(lambda: record_epochs(trial, epoch_seconds), "recording an epoch")
            with_retry(lambda: trial.report(r.eval_acc, len(cheap_rungs) + r.epoch), "reporting an epoch")
            pruned = with_retry(trial.should_prune, "asking the pruner")
            rung = f"rung {len(climb)}/{len(climb)} ({full}) " if cheap_rungs else ""
            progress.show(f"{where} {rung}epoch {r.epoch}/{r.epochs} loss {r.train_loss:.3f} "
                          f"val {r.eval_acc:.2f}%{' pruned' if pruned else ''}", final=pruned or r.epoch == r.epochs)
            if pruned:
                record_outcome(trial, Outcome.PRUNED)
                raise optuna.TrialPruned(f"val {r.eval_acc:.2f}% at epoch {r.epoch}")

        record_outcome(trial, Outcome.RUNNING)
        scores: list[RungScore] = []
        try:
            for step, (rung, rung_split) in enumerate(zip(cheap_rungs, rung_data)):
                start = time.perf_counter()
                score = trainer(spec, rung_split, epochs=rung.epochs, seed=seed + trial.number,
                                on_epoch=on_rung_epoch).final_acc
                scores.append(RungScore(rung, score, time.perf_counter() - start))
                with_retry(lambda: record_rungs(trial, scores), "recording a rung")
                with_retry(lambda: trial.report(score, step), "reporting a rung")
                if with_retry(trial.should_prune, "asking the pruner"):
                    record_outcome(trial, Outcome.SCREENED)
                    progress.show(f"{where} screened out at rung {step + 1}/{len(climb)} ({rung}): "
                                  f"val {score:.2f}%, not promoted", final=True)
                    raise optuna.TrialPruned(f"val {score:.2f}% at rung {step + 1}")
                with_retry(lambda: record_fidelity(trial, climb[step + 1]), "recording the fidelity")
            result = trainer(spec, data, epochs=epochs, seed=seed + trial.number, on_epoch=on_epoch)
        except FloatingPointError as exc:  # a diverged schedule is a bad candidate, not a broken study
            record_outcome(trial, Outcome.DIVERGED)
            progress.show(f"{where} {exc}", final=True)
            raise optuna.TrialPruned(str(exc)) from None
        with_retry(lambda: record_outcome(trial, Outcome.COMPLETE), "recording the outcome")
        return result.final_acc

    return objective


def _quietly(call: Callable[[], None]) -> None:
    """A best-effort storage write while something else already went wrong."""
    try:
        call()
    except Exception:
        log.debug("a best-effort storage write failed", exc_info=True)


def budget_screen(space: Space, budget: int) -> Callable[[dict], bool | None]:
    """For the sampler: does this parameter set fit the budget? (None: cannot tell)."""
    def fits(params: dict) -> bool | None:
        spec = space.spec_from_params(params)
        return None if spec is None else count_params(build(spec)) < budget
    return fits
