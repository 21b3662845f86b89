"""Write a found model into search_spaces/found/: the winner of a measured search, with its retrain
results and how it was found, in the reference spec format (any command that reads a spec reads it).

    python benchmarks/ship_found.py --study mnist2-b8000 [--storage URL] [--studies-dir studies] \
        --retrain-dir studies/mnist2-b8000/trial42_retrain --command "nas search --budget 8000 ..." \
        --out nas/search_spaces/found/b8000.json

Reads the study (winner, trials per fidelity, the time its trials ran from their own timestamps),
its best.json (the spec and how it was selected) and the retrain's metrics.json (test accuracy per
seed, final epoch); refuses a retrain of another spec than the winner's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli import run_script
from nas.cost import costs
from nas.errors import UsageError
from nas.files import write_json
from nas.store.record import TrialRecord, read_settings, read_trials, trained_per_fidelity
from nas.store.settings import data_of
from nas.store.winner import select_winner
from nas.spec import Spec
from nas.store.storage import load_study, studies_dir


def busy_seconds(records: list[TrialRecord]) -> float:
    """Seconds in which at least one trial ran: the union of the trials' intervals, so the idle gap
    between the runs of a resumed study is not counted, nor twice the time two workers shared."""
    total, end = 0.0, None
    for started, finished in sorted((r.started, r.finished) for r in records if r.started and r.finished):
        begin = started if end is None else max(started, end)  # the part not already counted
        if finished > begin:
            total += (finished - begin).total_seconds()
            end = finished
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True)
    p.add_argument("--storage")
    p.add_argument("--studies-dir")
    p.add_argument("--retrain-dir", type=Path, required=True)
    p.add_argument("--command", required=True, help="the search command as it was run (quoted)")
    p.add_argument("--hardware", help="where the search ran (default: the retrain's device)")
    p.add_argument("--search-seconds", type=float,
                   help="the search's wall time as its runs printed it ('this run: ... in'), finalists included; "
                        "the time the trials ran (trials_busy_seconds) is recorded either way")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args()
    if args.out.exists() and not args.overwrite:
        raise UsageError(f"{args.out} exists: pass --overwrite to replace it")
    metrics_file = args.retrain_dir / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"no retrain results in {args.retrain_dir} (no metrics.json)")
    study = load_study(args.study, args.storage, studies_dir(args.studies_dir))
    winner = select_winner(study)
    if winner is None:
        raise UsageError(f"study {args.study!r} has no complete trial")
    record, reevaluation = winner
    spec = Spec.from_dict(record.spec)
    metrics = json.loads(metrics_file.read_text())
    if Spec.from_dict(metrics["spec"]) != spec:
        raise UsageError(f"{args.retrain_dir} retrained {metrics['code']}, not the winner {spec.code}")
    records = read_trials(study)
    settings = read_settings(study)
    found = {
        "name": args.out.stem,
        "description": f"found by nas search at budget {settings.get('budget'):,}: trial {record.number} of study "
                       f"{study.study_name} (space {settings.get('space')})",
        "code": spec.code,
        "spec": spec.to_dict(),
        "params": metrics["params"],
        "macs": metrics["macs"],
        **{key: costs(spec).to_dict()[key] for key in ("ram_int8", "ram_float32", "flash_int8")},
        "retrain": {k: metrics[k] for k in ("seeds", "epochs", "test_acc", "mean", "std", "min", "max",
                                            "train_images", "test_images", "device", "wall_seconds")}
        | {k: metrics[k] for k in ("int8_test_acc", "int8", "int8_onnx_bytes") if k in metrics},  # since int8
        "search": {
            "command": args.command,
            "study": study.study_name,
            "space": settings.get("space"),
            "budget": settings.get("budget"),
            "wall_seconds": args.search_seconds,
            "trials_busy_seconds": round(busy_seconds(records), 1),  # tenths: a smoke study runs under a second
            "trials": len(records),
            "trials_per_fidelity": {f"{f.epochs}x{f.train_images}": n
                                    for f, n in trained_per_fidelity(records).items()},
            "val_acc": record.value,
            "reevaluation": reevaluation.to_dict() if reevaluation else None,
            "hardware": args.hardware or metrics["device"],
        },
    }
    data, preprocessing = data_of(settings)
    if data != {"name": "mnist"}:  # found on other data: said (an MNIST model's data is read from its shape: nas list)
        found |= {"data": data, "preprocessing": preprocessing}
    write_json(found, args.out)
    print(f"wrote {args.out}: {spec.code}, {metrics['params']:,} params, test {metrics['mean']:.2f} ± "
          f"{metrics['std']:.2f} % (min {metrics['min']:.2f} %) over {len(metrics['seeds'])} seeds")


if __name__ == "__main__":
    run_script("ship_found", main)
