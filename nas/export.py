"""`nas export --study NAME`: write the spec file of a study's best trial, or of trial N; with --checkpoint, a retrained model's float and int8 ONNX files.

study -> spec file. The file is a best.json-style record (spec, params, MACs, final-epoch validation
accuracy, fidelity, trial number), the format `nas retrain` reads and `search_spaces/reference/` holds.
checkpoint -> model.onnx, model.int8.onnx (calibrated on training images, nas.quantize) and model.pt2, each checked.
"""

from __future__ import annotations

import argparse
import shlex
import sys
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
    add_study_args(p, required=False, default=None)
    p.add_argument("--trial", type=int, help="trial number to export (default: the best trial)")
    p.add_argument("--checkpoint", help="instead of --study: a seed<k>.pt written by nas retrain, whose float and "
                                        "int8 ONNX models and torch.export program to write (int8 calibrated on "
                                        "training images)")
    p.add_argument("--out", help="spec file to write (default: the study's best.json, in <studies dir>/<study>/ "
                                 "for a study in the default storage); with --checkpoint, the folder for the models "
                                 "(default: <checkpoint>_export/ beside it)")
    p.add_argument("--data", metavar="NAME|PATH",
                   help="with --checkpoint: the images to calibrate on (default: those the checkpoint was trained on; "
                        "a folder or .npz must be named)")
    p.add_argument("--data-dir", help="with --checkpoint: directory the built-in sets live in, e.g. MNIST/raw "
                                      "(default: $NAS_DATA_DIR, else ./data)")
    p.add_argument("--download", action="store_true", help="with --checkpoint: download the built-in set if missing")


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
    if (args.study is None) == (args.checkpoint is None):
        raise UsageError("give --study (a study's spec file) or --checkpoint (a retrained model's ONNX files)"
                         + (", not both" if args.study else ""))
    if args.checkpoint is not None:
        if args.trial is not None:
            raise UsageError("--trial names a study's trial: not with --checkpoint")
        return export_checkpoint_files(Path(args.checkpoint), args)
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


def export_checkpoint_files(checkpoint: Path, args: argparse.Namespace) -> int:
    """`nas export --checkpoint`: the checkpoint's models into --out (a folder), the int8 one calibrated on
    training images (the test files are not opened). torch is imported here only: a spec export needs none."""
    import torch

    from .checkpoint import EXPORT_FILE, ONNX_FILE, checkpoint_source, load_checkpoint
    from .data import check_fits, data_info, load_train
    from .errors import ExportCheckError
    from .quantize import INT8_ONNX_FILE, SEVEN_BIT_WEIGHTS, export_checkpoint

    out = Path(args.out) if args.out else checkpoint.with_name(f"{checkpoint.stem}_export")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    payload, spec, _ = load_checkpoint(checkpoint)  # not a checkpoint: one line, before the data is read
    source, trained_on = checkpoint_source(payload, checkpoint, args.data, args.data_dir, args.download)
    check_fits(spec, where=str(checkpoint), info=trained_on)
    check_fits(spec, where=str(checkpoint), info=data_info(source))  # calibration images of the model's classes
    train = load_train(source, torch.device("cpu"))
    try:
        checks = export_checkpoint(checkpoint, out, train.x, trained_on)
    except ExportCheckError as exc:
        print(f"nas export: error: {exc}", file=sys.stderr)
        return 1
    print(f"{checkpoint}: {spec.code}")
    print(f"wrote {out}/: {ONNX_FILE}, {INT8_ONNX_FILE} ({checks['int8_onnx_bytes']:,} bytes) and {EXPORT_FILE}; "
          f"int8 and its fake-quantised model agree on {100 * checks['int8_argmax_agreement']:.1f} % of "
          f"{checks['int8_check_images']} training images"
          + (f"; {SEVEN_BIT_WEIGHTS}" if checks["int8_weight_bits"] == 7 else ""))
    return 0


def next_command(spec_file: Path) -> str:
    """What to run next with the file just written: the retrain, and a quick check of it."""
    name = shlex.quote(str(spec_file))
    return (f"next: nas retrain {name}\n"
            "      (a checkpoint per seed, the best one as model.onnx and model.int8.onnx, float and int8;\n"
            "      15 epochs x 5 seeds on all 60,000 images: about 22 min for an 8,000-parameter model on a 2-core CPU;\n"
            f"      a quick check in seconds: nas retrain {name} --epochs 3 --seeds 1 --subset 10000, about 97 % for found/b8000)")


if __name__ == "__main__":
    run_command("export")
