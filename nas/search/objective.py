"""One trial's work: sample a spec, count it, gate it on the budgets, climb the cheap rungs, train it at
full fidelity; and the live progress line of a worker.

trial -> spec (space.sample) -> module (build) -> costs (params, MACs, peak RAM, flash) -> gate -> train
(per-epoch validation accuracy, pruning) -> trial record; the trial's value is the full training's final-epoch
accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna

from ..cost import Budgets, constraints, costs, over_budget
from ..data import Splits
from ..errors import StorageError
from ..fidelity import Fidelity, rung_images
from ..model import build
from ..progress import KEEP, Fields, StatusLine, format_duration, format_left
from ..space import Space
from ..store.heartbeat import beating
from ..store.record import (Outcome, RungScore, promotion_of, record_candidate, record_costs, record_epochs,
                            record_fidelity, record_outcome, record_overruns, record_rungs, record_widths_factor)
from ..store.storage import with_retry
from ..train import EpochResult, TrainResult, train
from .warm_start import as_trained, fits

Trainer = Callable[..., TrainResult]  # nas.train.train's signature
log = logging.getLogger(__name__)


# The ranks of the search line's fields (nas.progress.fit): on a narrow terminal the lowest is left out first:
# the study's best (and where a new best was written), this run's rejected count, a rung's fidelity, the loss,
# the trial's parameters, the elapsed time, this run's trials, the validation accuracy, the rung's number. The
# worker, the trial, its epoch, what happened to it (rejected, screened out, pruned, the new best) and the ETA
# are always kept.
BEST, REJECTED, FIDELITY, LOSS, PARAMS, ELAPSED, TRIALS, VAL, RUNG = range(1, 10)
# --widths: a candidate trained as drawn, or as its widest copy within the budgets (the first is the default)
DRAWN, FILLED = WIDTHS = ("drawn", "filled")


@dataclass
class Running:
    """A running trial's work so far, in images trained (epochs x images, as nas.fidelity.Fidelity.cost)."""

    fidelity: Fidelity  # the rung it trains at now
    epochs: int = 0  # epochs trained at that rung
    images: int = 0  # images trained on, its rungs together

    def left(self, per_trial: float) -> float:
        """Images still to train: the rest of its rung, or more if this run's trials train more on average."""
        return max(per_trial - self.images, max(0, self.fidelity.epochs - self.epochs) * self.fidelity.train_images)


@dataclass
class Progress:
    """Live progress on stderr: one line per epoch, rewritten in place on a terminal.

    Counters are of this worker's run; the best is the study's. The ETA (seconds_left) counts work in images
    trained (epochs x images: what a rung costs, nas.fidelity.Fidelity.cost) at this run's measured seconds per
    image. The work left: the running trials' (at least the rest of the rung each is at), the trials still to
    start (each this run's mean images per finished trial: rejections train none, screened trials a cheap rung
    or two), and this worker's share of the finalists' full trainings that follow the search.
    """

    quiet: bool
    trials: int | None
    timeout: float | None
    epochs: int
    label: str = ""  # "w2/3 " when several workers share the terminal
    finalist_trainings: int = 0  # this worker's share of the finalists' full trainings after the search
    ladder: tuple[Fidelity, ...] = ()  # the rungs, the full fidelity last (make_objective sets it)
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    rejected: int = 0
    best: str = "-"
    images_trained: int = 0  # by finished trials of this run
    epoch_seconds: float = 0.0  # wall seconds (training and validation) of every epoch of this run
    images_timed: int = 0  # images trained in those epochs
    running: dict[int, Running] = field(default_factory=dict)  # trial number -> its work so far
    storage_error: StorageError | None = None  # set when a trial gave up waiting for the storage
    line: StatusLine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.line = StatusLine(self.quiet)

    @property
    def full(self) -> Fidelity:
        """The full training's fidelity (without a ladder: counted in epochs)."""
        return self.ladder[-1] if self.ladder else Fidelity(self.epochs, 1)

    def epoch_done(self, number: int, seconds: float, fidelity: Fidelity | None = None) -> None:
        """Trial `number` trained an epoch at `fidelity` (None: the full one) in `seconds`."""
        fidelity = fidelity or self.full
        with self.line.lock:
            trial = self.running.setdefault(number, Running(fidelity))
            if trial.fidelity != fidelity:  # promoted: a fresh training at the next rung
                trial.fidelity, trial.epochs = fidelity, 0
            trial.epochs += 1
            trial.images += fidelity.train_images
            self.epoch_seconds += seconds
            self.images_timed += fidelity.train_images

    def trial_done(self, number: int, rejected: bool) -> None:
        with self.line.lock:
            self.done += 1
            self.rejected += rejected
            trial = self.running.pop(number, None)
            self.images_trained += trial.images if trial else 0

    def seconds_left(self) -> float | None:
        """This worker's seconds left, the finalists' trainings included; never negative. None: it cannot be
        told yet (work is left and no epoch has been timed, or unlimited trials without --timeout)."""
        with self.line.lock:
            rate = self.epoch_seconds / self.images_timed if self.images_timed else None
            climb = sum(f.cost for f in self.ladder) if self.ladder else self.full.cost
            per_trial = self.images_trained / self.done if self.images_trained else climb
            running = sum(t.left(per_trial) for t in self.running.values())
            bounds = []
            if self.trials is not None:
                work = running + max(0, self.trials - self.done - len(self.running)) * per_trial
                bounds.append(0.0 if work == 0 else None if rate is None else rate * work)
            if self.timeout is not None:  # no trial starts after it; the running ones finish
                until = max(0.0, self.timeout - (time.perf_counter() - self.start))
                bounds.append(until if rate is None else max(until, rate * running))
            known = [b for b in bounds if b is not None]
            if not known:
                return None
            finals = self.finalist_trainings * self.full.cost
            if not finals:
                return min(known)
            return None if rate is None else min(known) + rate * finals

    def eta(self) -> str:
        return format_left(self.seconds_left())

    def show(self, text: str | Fields, final: bool = False) -> None:
        """Show a line: this run's counters, the study's best, `text` (a string, or fields of the ranks above,
        each text with its leading space) and the ETA."""
        if self.quiet:
            return
        with self.line.lock:
            trials = f"{self.done}" if self.trials is None else f"{self.done}/{self.trials}"
            fields = [(ELAPSED, f"[{format_duration(time.perf_counter() - self.start)}]"),
                      (KEEP, f" {self.label.strip()}" if self.label else ""),
                      (TRIALS, f" this run: {trials} trials"), (REJECTED, f", {self.rejected} rejected"),
                      (BEST, f" | study best {self.best}"), (KEEP, " |"),
                      *([(KEEP, " " + text)] if isinstance(text, str) else text),
                      (KEEP, f" | ETA {self.eta()}")]
            self.line.show(fields, final)


def make_objective(space: Space, data: Splits, budget: int | Budgets, epochs: int, seed: int, progress: Progress,
                   trainer: Trainer = train, in_flight: set[int] | None = None,
                   cheap_rungs: tuple[Fidelity, ...] = (), rung_unit: str = "images",
                   promote: Callable[[int], list[int]] | None = None, widths: str = DRAWN
                   ) -> Callable[[optuna.Trial], float]:
    """The objective: sample, count, gate, climb the cheap rungs, then train at full fidelity with
    `trainer` (nas.train.train's signature). The trial's value is the full training's final epoch.

    `cheap_rungs` (cheapest first; nas.fidelity.ladder) each train the candidate afresh on the first
    images of `data.train`, as many as the rung counts in `rung_unit` (nas.fidelity.rung_images); the
    study's pruner decides after each whether it goes on; then `promote(rung)` (with a pruner that holds,
    nas.search.pruner.queue_late_promotions) queues the rung's late promotions. A late promotion (a trial
    queued with `record.promoted_as`) starts at the rung above the one its candidate was screened out at.
    `in_flight` collects the numbers of the trials this process is running (for heal()). `budget`: the
    parameter budget alone, or every budget (nas.cost.Budgets); a candidate over any is rejected untrained.
    `widths` FILLED: every candidate is trained as its widest copy within the budgets (warm_start.filled), so the
    widths drawn are only proportions; DRAWN: as drawn.
    """
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)
    full = Fidelity(epochs, len(data.train))
    climb = (*cheap_rungs, full)
    in_flight = set() if in_flight is None else in_flight
    progress.ladder = climb  # the ETA's work: images trained at each rung

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
        spec, factor = as_trained(space.sample(trial), space, budgets, widths == FILLED)
        if factor is not None:
            record_widths_factor(trial, factor)
        module = build(spec)
        cost = costs(spec, module)
        params = cost.params
        first = (promotion_of(trial) or (0, 0))[1]  # the cheap rungs a late promotion passed already
        record_candidate(trial, spec, params, cost.macs, climb[first], climb if cheap_rungs else ())
        record_costs(trial, cost)
        # one constraint per active budget, params first: feasible when <= 0; the sampler learns from their sizes
        for name, value in constraints(cost, budgets).items():
            trial.set_constraint(name, value)
        if overruns := over_budget(cost, budgets):
            record_overruns(trial, overruns)
            record_outcome(trial, Outcome.REJECTED)
            said = "; ".join(map(str, overruns))
            progress.show([(KEEP, f" trial {trial.number} rejected"), (PARAMS, f": {said}")], final=True)
            raise optuna.TrialPruned(said)

        epoch_seconds: list[float] = []
        last = [time.perf_counter()]
        where: Fields = [(KEEP, f" trial {trial.number}"), (PARAMS, f" ({params:,} params)")]

        def at(rung: int) -> Fields:  # "rung 1/3 (2 epochs x 11,000 images)", counted from 0
            return [(RUNG, f" rung {rung + 1}/{len(climb)}"), (FIDELITY, f" ({climb[rung]})")]

        def timed(fidelity: Fidelity) -> None:  # wall time of the epoch, validation included, for the ETA
            now = time.perf_counter()
            progress.epoch_done(trial.number, now - last[0], fidelity)
            last[0] = now

        def epoch_fields(r: EpochResult) -> Fields:
            return [(KEEP, f" epoch {r.epoch}/{r.epochs}"), (LOSS, f" loss {r.train_loss:.3f}"),
                    (VAL, f" val {r.eval_acc:.2f}%")]

        def on_rung_epoch(r: EpochResult) -> None:
            timed(climb[first + len(scores)])
            progress.show([*where, *at(first + len(scores)), *epoch_fields(r)])

        def on_epoch(r: EpochResult) -> None:
            timed(full)
            epoch_seconds.append(r.seconds)
            # the storage may hiccup (a database restart): wait for it rather than lose the trial's epochs
            with_retry(lambda: record_epochs(trial, epoch_seconds), "recording an epoch")
            with_retry(lambda: trial.report(r.eval_acc, len(cheap_rungs) + r.epoch), "reporting an epoch")
            # the last epoch is never judged: the training is done, and stopping it would only lose its score
            pruned = r.epoch < r.epochs and with_retry(trial.should_prune, "asking the pruner")
            progress.show([*where, *(at(len(climb) - 1) if cheap_rungs else []), *epoch_fields(r),
                           *([(KEEP, " pruned")] if pruned else [])], final=pruned or r.epoch == r.epochs)
            if pruned:
                record_outcome(trial, Outcome.PRUNED)
                raise optuna.TrialPruned(f"val {r.eval_acc:.2f}% at epoch {r.epoch}")

        record_outcome(trial, Outcome.RUNNING)
        scores: list[RungScore] = []
        try:
            for step, rung in enumerate(cheap_rungs[first:], first):
                start = time.perf_counter()
                images = rung_images(rung, spec.train.batch_size, rung_unit, len(data.train))
                rung_split = Splits(data.train.first(images), data.held_out)
                score = trainer(spec, rung_split, epochs=rung.epochs, seed=seed + trial.number,
                                on_epoch=on_rung_epoch).final_acc
                scores.append(RungScore(rung, score, time.perf_counter() - start))
                with_retry(lambda: record_rungs(trial, scores, first), "recording a rung")
                with_retry(lambda: trial.report(score, step), "reporting a rung")
                screened = with_retry(trial.should_prune, "asking the pruner")
                if screened:
                    record_outcome(trial, Outcome.SCREENED)
                    progress.show([*where, (KEEP, f" screened out at rung {step + 1}/{len(climb)}"),
                                   (FIDELITY, f" ({rung})"), (VAL, f": val {score:.2f}%, not promoted")], final=True)
                if promote is not None and (later := with_retry(lambda: promote(step), "queueing promotions")):
                    progress.show([(KEEP, f" trial{'s' * (len(later) > 1)} {', '.join(map(str, later))} promoted "
                                          f"late to rung {step + 2}/{len(climb)}: queued")], final=True)
                if screened:
                    raise optuna.TrialPruned(f"val {score:.2f}% at rung {step + 1}")
                with_retry(lambda: record_fidelity(trial, climb[step + 1]), "recording the fidelity")
            result = trainer(spec, data, epochs=epochs, seed=seed + trial.number, on_epoch=on_epoch)
        except FloatingPointError as exc:  # a diverged schedule is a bad candidate, not a broken study
            record_outcome(trial, Outcome.DIVERGED)
            progress.show([*where, (KEEP, f" {exc}")], final=True)
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


def budget_screen(space: Space, budget: int | Budgets, widths: str = DRAWN) -> Callable[[dict], bool | None]:
    """For the sampler: does this parameter set fit every budget (with `widths` FILLED: can a copy of it be scaled
    to fit)? (None: cannot tell). Counted from the spec alone (milliseconds), to the same values as the gate's
    (tests/test_costs.py)."""
    budgets = budget if isinstance(budget, Budgets) else Budgets(budget)

    def screen(params: dict) -> bool | None:
        spec = space.spec_from_params(params)
        return None if spec is None else fits(spec, space, budgets, widths == FILLED)
    return screen

