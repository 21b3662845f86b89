"""Write a found model into search_spaces/found/: the winner of a measured search, or a design chosen on
validation outside a search's finalists, with its retrain results and how it was found, in the reference
spec format (any command that reads a spec reads it).

    python benchmarks/ship_found.py --study mnist2-b8000 [--storage URL] [--studies-dir studies] \
        --retrain-dir studies/mnist2-b8000/trial42_retrain --command "nas search --budget 8000 ..." \
        --out nas/search_spaces/found/b8000.json

    python benchmarks/ship_found.py --design wide.json --budget 8000 --space mnist_focused \
        --description "found/b4000 at widths x1.46 (the warm start's widening)" \
        --reevaluation reevaluation.jsonl --retrain-dir runs/wide_retrain --command "..." --out ...

--study reads the study (winner, trials per fidelity, the time its trials ran from their own timestamps),
its best.json (the spec and how it was selected). --design reads the spec file and recipe_seeds.py's JSON
lines for it (its validation accuracy over seeds, unchanged recipe: what it was chosen on). Both read the
retrain's metrics.json (test accuracy per seed, final epoch) and refuse a retrain of another spec.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nas.cli import run_script
from nas.cost import costs
from nas.errors import UsageError
from nas.files import write_json
from nas.store.record import TrialRecord, read_settings, read_trials, trained_per_fidelity
from nas.store.settings import data_of
from nas.store.winner import select_winner
from nas.spec import Spec, load_spec
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
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", help="the measured search whose winner to ship")
    source.add_argument("--design", type=Path, help="a spec file chosen on validation outside a search's "
                                                    "finalists (with --budget, --space, --description, --reevaluation)")
    p.add_argument("--storage")
    p.add_argument("--studies-dir")
    p.add_argument("--budget", type=int, help="--design: the parameter budget it is shipped for")
    p.add_argument("--space", help="--design: the search space that draws it")
    p.add_argument("--description", help="--design: where the design came from")
    p.add_argument("--reevaluation", type=Path,
                   help="--design: recipe_seeds.py's JSON lines with the design's validation accuracy over seeds")
    p.add_argument("--retrain-dir", type=Path, required=True)
    p.add_argument("--command", required=True, help="the search command as it was run (quoted); --design: the "
                                                    "command that made the design")
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
    metrics = json.loads(metrics_file.read_text())
    spec, description, search, data = from_study(args) if args.study else from_design(args)
    if Spec.from_dict(metrics["spec"]) != spec:
        shipped = "the winner" if args.study else "the design"
        raise UsageError(f"{args.retrain_dir} retrained {metrics['code']}, not {shipped} {spec.code}")
    found = {
        "name": args.out.stem,
        "description": description,
        "code": spec.code,
        "spec": spec.to_dict(),
        "params": metrics["params"],
        "macs": metrics["macs"],
        **{key: costs(spec).to_dict()[key] for key in ("ram_int8", "ram_float32", "flash_int8")},
        "retrain": {k: metrics[k] for k in ("seeds", "epochs", "test_acc", "mean", "std", "min", "max",
                                            "train_images", "test_images", "device", "wall_seconds")}
        | {k: metrics[k] for k in ("int8_test_acc", "int8", "int8_onnx_bytes") if k in metrics},  # since int8
        "search": search | {"hardware": args.hardware or metrics["device"]},
    }
    if data is not None:
        found |= data
    write_json(found, args.out)
    print(f"wrote {args.out}: {spec.code}, {metrics['params']:,} params, test {metrics['mean']:.2f} ± "
          f"{metrics['std']:.2f} % (min {metrics['min']:.2f} %) over {len(metrics['seeds'])} seeds")


def from_study(args: argparse.Namespace) -> tuple[Spec, str, dict, dict | None]:
    """The study's winner: its spec, a description, how the search ran and chose it, and its data when not MNIST."""
    study = load_study(args.study, args.storage, studies_dir(args.studies_dir))
    winner = select_winner(study)
    if winner is None:
        raise UsageError(f"study {args.study!r} has no complete trial")
    record, reevaluation = winner
    records = read_trials(study)
    settings = read_settings(study)
    search = {
        "command": args.command,
        "study": study.study_name,
        "space": settings.get("space"),
        "budget": settings.get("budget"),
        "wall_seconds": args.search_seconds,
        "trials_busy_seconds": round(busy_seconds(records), 1),  # tenths: a smoke study runs under a second
        "trials": len(records),
        "trials_per_fidelity": {f"{f.epochs}x{f.train_images}": n for f, n in trained_per_fidelity(records).items()},
        "val_acc": record.value,
        "reevaluation": reevaluation.to_dict() if reevaluation else None,
    }
    description = (f"found by nas search at budget {settings.get('budget'):,}: trial {record.number} of study "
                   f"{study.study_name} (space {settings.get('space')})")
    data, preprocessing = data_of(settings)
    # found on other data: said (an MNIST model's data is read from its shape: nas list)
    other = {"data": data, "preprocessing": preprocessing} if data != {"name": "mnist"} else None
    return Spec.from_dict(record.spec), description, search, other


def from_design(args: argparse.Namespace) -> tuple[Spec, str, dict, None]:
    """A design chosen on validation outside a search's finalists: its spec, where it came from, and the
    validation accuracy over seeds it was chosen on (recipe_seeds.py's lines for it, recipe unchanged)."""
    missing = [f"--{name}" for name in ("budget", "space", "description", "reevaluation") if not getattr(args, name)]
    if missing:
        raise UsageError(f"--design needs {', '.join(missing)}")
    spec = load_spec(args.design)
    params = costs(spec).params
    if params >= args.budget:
        raise UsageError(f"{args.design}: {params:,} parameters >= budget {args.budget:,}")
    if not args.reevaluation.is_file():
        raise UsageError(f"no re-evaluation file {args.reevaluation}")
    runs = []
    for number, line in enumerate(args.reevaluation.read_text(errors="replace").splitlines(), 1):
        try:
            runs += [json.loads(line)] if line.strip() else []
        except ValueError:
            raise UsageError(f"{args.reevaluation}: line {number} is not JSON (recipe_seeds.py's --out)") from None
    # the design's runs with its own recipe and the trainer's own settings; a seed run twice: the last
    own = {run["seed"]: run for run in runs if isinstance(run, dict) and run.get("code") == spec.code
           and not run.get("changes") and not run.get("speed") and "seed" in run}
    if not own:
        raise UsageError(f"{args.reevaluation} has no run of {spec.code} with its own recipe")
    seeds = sorted(own)
    accs = [own[seed]["val_acc"] for seed in seeds]
    reevaluation = {"seeds": seeds, "val_acc": accs, "mean": round(statistics.fmean(accs), 4),
                    "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0, "min": min(accs),
                    **{key: own[seeds[0]].get(key) for key in ("epochs", "train_images", "val_images", "hardware")}}
    search = {"command": args.command, "space": args.space, "budget": args.budget, "reevaluation": reevaluation}
    return spec, args.description, search, None


if __name__ == "__main__":
    run_script("ship_found", main)
