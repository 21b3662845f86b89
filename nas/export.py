"""`nas export --study NAME`: write the spec file of a study's best trial, or of trial N.

study -> spec file. The file is a best.json-style record (spec, params, MACs, final-epoch validation
accuracy, fidelity, trial number), the format `nas retrain` reads and `search_spaces/reference/` holds.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import optuna

from .cli import add_study_args, run_command
from .errors import UsageError
from .files import check_replaceable, write_json
from .store.credentials import redact
from .store.record import Outcome, Reevaluation, TrialRecord, read_reevaluations, read_trial
from .store.storage import load_study, output_dir, studies_dir
from .store.winner import best_record, select_winner


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_study_args(p)
    p.add_argument("--trial", type=int, help="trial number to export (default: the best trial)")
    p.add_argument("--out", help="spec file to write (default: the study's best.json, in <studies dir>/<study>/ "
                                 "for a study in the default storage)")


def pick_trial(study: optuna.Study, number: int | None) -> tuple[TrialRecord, Reevaluation | None]:
    """The study's winner (as best.json names it: the finalists' best mean once they are re-evaluated),
    or trial `number` if it completed, with its re-evaluation if it has one; UsageError otherwise."""
    if number is None:
        winner = select_winner(study)
        if winner is None:
            raise UsageError(f"study {study.study_name!r} has no completed trial yet")
        return winner
    trials = study.get_trials(deepcopy=False)
    match = [read_trial(t) for t in trials if t.number == number]
    if not match:
        raise UsageError(f"study {study.study_name!r} has no trial {number} (it has {len(trials)} trials)")
    if match[0].outcome != Outcome.COMPLETE:
        raise UsageError(f"trial {number} of study {study.study_name!r} did not complete ({match[0].outcome.value}): "
                         "only a completed trial has a validation accuracy to export")
    reevaluation = read_reevaluations(study).get(number)
    return match[0], reevaluation


def run(args: argparse.Namespace) -> int:
    root = studies_dir(args.studies_dir)
    study = load_study(args.study, args.storage, root)
    trial, reevaluation = pick_trial(study, args.trial)
    record = best_record(trial, study, reevaluation)
    if args.trial is not None:
        record["selected_by"] = f"trial {args.trial}, named with --trial"
    out = Path(args.out) if args.out else output_dir(root, args.study, args.storage) / "best.json"
    check_replaceable(out, "json")  # never a storage file, a checkpoint or anything else that is not JSON
    try:
        write_json(record, out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"trial {record['trial']}: {record['code']}  ({record['params']:,} params, {record['macs']:,} MACs, "
          f"val {record['val_acc']:.2f}%)")
    print(f"wrote {out}")
    print(next_command(out))
    return 0


def export_command(study: str, storage: str | None = None) -> str:
    """What to run next where a study's best.json is not written yet: its export (which says what follows)."""
    where = f" --storage {shlex.quote(redact(storage))}" if storage else ""
    return (f"next: nas export --study {shlex.quote(study)}{where}\n"
            "      (writes the winner's spec file, then says what follows)")


def next_command(spec_file: Path) -> str:
    """What to run next with the file just written: the retrain, and a quick check of it."""
    name = shlex.quote(str(spec_file))
    return (f"next: nas retrain {name}\n"
            "      (15 epochs x 5 seeds on all 60,000 images: about 25 min for an 8,000-parameter model on a 2-core CPU;\n"
            f"      a quick check in seconds: nas retrain {name} --epochs 3 --seeds 1 --subset 10000, about 97 % for found/b8000)")


if __name__ == "__main__":
    run_command("export")
