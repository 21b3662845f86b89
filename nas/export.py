"""`python -m nas.export --study NAME`: write the spec file of a study's best trial (or of trial N).

study -> spec file. The file is a best.json-style record (spec, params, MACs, validation accuracy,
trial number), the format `nas.retrain` reads and `search_spaces/reference/` holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna

from .cli import Parser, UsageError, run_main
from .spec import write_json
from .study import load_study, study_dir, trial_record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.export", description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)")
    p.add_argument("--trial", type=int, help="trial number to export (default: the best trial)")
    p.add_argument("--out", help="spec file to write (default: studies/<study>/best.json)")
    return p.parse_args(argv)


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The best completed trial, or trial `number` if it completed; UsageError otherwise."""
    complete = optuna.trial.TrialState.COMPLETE
    if number is None:
        if not study.get_trials(deepcopy=False, states=(complete,)):
            raise UsageError(f"study {study.study_name!r} has no completed trial yet")
        return study.best_trial
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        raise UsageError(f"study {study.study_name!r} has no trial {number} (it has {len(trials)} trials)")
    trial = match[0]
    if trial.state != complete:
        outcome = trial.user_attrs.get("outcome", trial.state.name.lower())
        raise UsageError(f"trial {number} of study {study.study_name!r} did not complete ({outcome}): "
                         "only a completed trial has a validation accuracy to export")
    return trial


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = load_study(args.study, args.storage)
    trial = pick_trial(study, args.trial)
    record = trial_record(trial, study)
    out = Path(args.out) if args.out else study_dir(args.study) / "best.json"
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name a file")
    try:
        write_json(record, out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"trial {record['trial']}: {record['code']}  ({record['params']:,} params, {record['macs']:,} MACs, "
          f"val {record['val_acc']:.2f}%)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main("nas.export", main)
