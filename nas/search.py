"""`python -m nas.search --budget 8000`: search a space for the most accurate network under a budget.

trial -> spec (space.sample) -> module (build) -> fvcore count -> gate -> train (per-epoch
validation accuracy, pruning) -> trial value = final-epoch validation accuracy.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

from .cli import (Parser, UsageError, add_device_args, format_duration, positive_float, positive_int, resolve_device,
                  run_main)
from .cost import count_macs, count_params
from .data import Splits, load_search_data, resolve_data_dir
from .model import build
from .report import write_report
from .sampler import BudgetAwareTPESampler
from .space import Space, load_space
from .spec import write_json
from .study import default_storage, open_storage, study_dir, trial_record
from .train import EpochResult, train

DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "mnist.yaml"
# Median stopping: a trial is stopped when its accuracy at an epoch is below the median of the
# completed trials at that epoch. It needs no bracket arithmetic (Hyperband's rungs barely fit in
# 15 epochs) and waits out the first epochs, where warm-up schedules make accuracy a poor predictor.
PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_EPOCHS = 5, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.search", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=positive_int, required=True, help="parameters allowed; a model needs fewer")
    p.add_argument("--space", default=str(DEFAULT_SPACE), help="search-space YAML file (default: search_spaces/mnist.yaml)")
    p.add_argument("--study", help="study name (default: <space>-b<budget>)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)")
    p.add_argument("--trials", type=positive_int, help="trials to run in this call (default: 50, or unlimited with --timeout)")
    p.add_argument("--timeout", type=positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs per trial (default: 15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of the trials' training")
    p.add_argument("--subset", type=positive_int, help="train on only this many training images (smoke runs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress, only the summary")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="trials trained at once, in threads sharing the data (default: 1; see README)")
    p.add_argument("--no-report", action="store_true", help="do not write studies/<study>/report.html at the end")
    add_device_args(p)
    args = p.parse_args(argv)
    if args.trials is None and args.timeout is None:
        args.trials = 50
    return args


@dataclass
class Progress:
    """Live progress on stderr: one line per epoch, rewritten in place on a terminal."""

    quiet: bool
    trials: int | None
    timeout: float | None
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    rejected: int = 0
    best: str = "-"
    _width: int = 0
    # concurrent trials (--jobs) update the counters and share the terminal line
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        left = []
        if self.trials is not None and self.done:
            left.append(elapsed / self.done * (self.trials - self.done))
        if self.timeout is not None:
            left.append(max(0.0, self.timeout - elapsed))
        return format_duration(min(left)) if left else "?"

    def show(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        with self.lock:
            self._show(text, final)

    def _show(self, text: str, final: bool) -> None:
        line = (f"[{format_duration(time.perf_counter() - self.start)}] {self.done}/{self.trials or '?'} done, "
                f"{self.rejected} rejected, best {self.best} | {text} | ETA {self.eta()}")
        if sys.stderr.isatty():
            print("\r" + line.ljust(self._width), end="\n" if final else "", file=sys.stderr, flush=True)
            self._width = 0 if final else len(line)
        else:
            print(line, file=sys.stderr, flush=True)


def make_objective(space: Space, data: Splits, budget: int, epochs: int, seed: int, progress: Progress):
    def objective(trial: optuna.Trial) -> float:
        spec = space.sample(trial)
        module = build(spec)
        params = count_params(module)
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("code", spec.code)
        trial.set_user_attr("params", params)
        trial.set_user_attr("macs", count_macs(module))
        # feasible when <= 0, i.e. params < budget; the sampler learns from the violation's size
        trial.set_constraint("params", params - budget + 1)
        if params >= budget:
            trial.set_user_attr("outcome", "rejected")
            with progress.lock:
                progress.rejected += 1
            progress.show(f"trial {trial.number} rejected: {params:,} params >= {budget:,}", final=True)
            raise optuna.TrialPruned(f"{params} parameters >= budget {budget}")

        epoch_seconds: list[float] = []

        def on_epoch(r: EpochResult) -> None:
            epoch_seconds.append(round(r.seconds, 3))
            trial.set_user_attr("epoch_seconds", epoch_seconds)
            trial.report(r.eval_acc, r.epoch)
            pruned = trial.should_prune()
            progress.show(f"trial {trial.number} ({params:,} params) epoch {r.epoch}/{r.epochs} "
                          f"loss {r.train_loss:.3f} val {r.eval_acc:.2f}%{' pruned' if pruned else ''}",
                          final=pruned or r.epoch == r.epochs)
            if pruned:
                trial.set_user_attr("outcome", "pruned")
                raise optuna.TrialPruned(f"val {r.eval_acc:.2f}% at epoch {r.epoch}")

        trial.set_user_attr("outcome", "running")
        try:
            result = train(spec, data, epochs=epochs, seed=seed + trial.number, on_epoch=on_epoch)
        except FloatingPointError as exc:  # a diverged schedule is a bad candidate, not a broken study
            trial.set_user_attr("outcome", "diverged")
            progress.show(f"trial {trial.number} {exc}", final=True)
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("outcome", "complete")
        return result.final_acc

    return objective


def budget_screen(space: Space, budget: int):
    """For the sampler: does this parameter set fit the budget? (None: cannot tell)."""
    def fits(params: dict) -> bool | None:
        spec = space.spec_from_params(params)
        return None if spec is None else count_params(build(spec)) < budget
    return fits


def summary(study: optuna.Study, top: int = 10) -> str:
    trials = study.get_trials(deepcopy=False)
    outcomes = [t.user_attrs.get("outcome", t.state.name.lower()) for t in trials]
    counts = {k: outcomes.count(k) for k in ("complete", "pruned", "rejected", "diverged")}
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
    lines = [f"study {study.study_name}: {len(trials)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items())
             + f", {failed} failed"]
    complete = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=True)[:top]
    if not complete:
        return lines[0] + "\nno trial completed yet"
    lines.append(f"{'trial':>5} {'params':>7} {'MACs':>10} {'val acc':>8} {'epochs':>6}  code")
    for t in complete:
        lines.append(f"{t.number:>5} {t.user_attrs['params']:>7,} {t.user_attrs['macs']:>10,} {t.value:>7.2f}% "
                     f"{len(t.intermediate_values):>6}  {t.user_attrs['code']}")
    return "\n".join(lines)


def rejection_report(study: optuna.Study, first: int = 20) -> str:
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    rejected = [t.user_attrs.get("outcome") == "rejected" for t in trials]
    text = f"rejected before training: {sum(rejected)} of {len(trials)} candidates ({_percent(rejected)})"
    if len(trials) > first:
        text += f"; after the first {first}: {_percent(rejected[first:])}"
    return text


def _percent(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f} %" if flags else "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = load_space(args.space)
    study_name = args.study or f"{space.name}-b{args.budget}"
    device = resolve_device(args.device)
    data = load_search_data(resolve_data_dir(args.data_dir), device, args.subset, args.download)
    storage_url = args.storage or default_storage(study_name)
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`

    try:  # refuse to mix a budget or a space into a study that was run with another
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        for key, value in (("budget", args.budget), ("space", space.name)):
            if existing.user_attrs.get(key, value) != value:
                raise UsageError(f"study {study_name!r} was run with {key} {existing.user_attrs[key]}, not {value}: "
                                 "pick another --study")
    n_before = len(existing.trials) if existing else 0
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        # a resumed study gets a fresh random stream, so its startup proposals do not repeat
        sampler=BudgetAwareTPESampler(budget_screen(space, args.budget), seed=args.seed + n_before,
                                      multivariate=True, group=True, n_startup_trials=10, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=PRUNER_WARMUP_EPOCHS))
    study.set_user_attr("budget", args.budget)
    study.set_user_attr("space", space.name)
    study.set_user_attr("space_file", space.path)
    study.set_user_attr("epochs", args.epochs)

    progress = Progress(args.quiet, args.trials, args.timeout)
    best_path = study_dir(study_name) / "best.json"

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with progress.lock:  # with --jobs, two trials may finish at once: one writer of best.json at a time
            progress.done += 1
            if trial.state == optuna.trial.TrialState.COMPLETE and study.best_trial.number == trial.number:
                write_json(trial_record(trial, study), best_path)
                progress.best = f"{trial.value:.2f}% (#{trial.number})"
                progress.show(f"trial {trial.number} is the new best, wrote {best_path}", final=True)

    if n_before and not args.quiet:
        print(f"continuing study {study_name!r} ({n_before} trials so far) in {storage_url}", file=sys.stderr)
    progress.rejected = sum(t.user_attrs.get("outcome") == "rejected" for t in study.trials)
    if study.best_trials:  # empty until a trial completes
        progress.best = f"{study.best_value:.2f}% (#{study.best_trial.number})"
    if args.jobs > 1 and device.type == "cpu":  # split the cores between the trials (small convs scale poorly)
        torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    start = time.perf_counter()
    study.optimize(make_objective(space, data, args.budget, args.epochs, args.seed, progress),
                   n_trials=args.trials, timeout=args.timeout, callbacks=[after_trial],
                   catch=(RuntimeError,), gc_after_trial=False, n_jobs=args.jobs)
    print(summary(study))
    print(rejection_report(study))
    print(f"this run: {progress.done} trials in {format_duration(time.perf_counter() - start)} on {device}")
    if best_path.exists():
        print(f"best architecture: {best_path}")
    if not args.no_report:
        print(f"report: {write_report(study, study_dir(study_name))}")
    return 0


if __name__ == "__main__":
    run_main("nas.search", main)
