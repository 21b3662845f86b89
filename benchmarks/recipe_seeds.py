"""Does a change to a recipe hold up over seeds? A spec's final-epoch validation accuracy, with some of its
training settings changed, over the seeds you name, on the search split (the test set is never read).

The split and the trainer are the search's, so on the machine that ran a study, a finalist's seed
reproduces its stored score: finalist seed j of trial n is `--seed + (j + 1) * 1,000,000 + n`
(nas.search.finalists). Comparing a change on those seeds pairs it with the finalists' runs. Each seed
is one JSON line (printed, and appended to `--out`); run two processes of one thread each to use two
cores.

    OMP_NUM_THREADS=1 python benchmarks/recipe_seeds.py benchmarks/results/b8000_training/best.json \
        --set batch_size=32 --seeds 1000012 2000012 3000012 --out benchmarks/results/recipe_seeds.jsonl

`--speed amp=bf16` changes how the trainer computes instead (nas.train.Speed, as `nas bench --speed`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.bench.ablation import parse_speed  # noqa: E402
from nas.data import load_search_data, resolve_data_dir  # noqa: E402
from nas.device import describe  # noqa: E402
from nas.errors import DataError  # noqa: E402
from nas.spec import Spec, load_spec  # noqa: E402
from nas.train import speed_for, train  # noqa: E402
from nas.version import provenance  # noqa: E402


def setting(text: str) -> tuple[str, Any]:
    """`name=value` of a training setting; the value as JSON (32, 0.1, "adamw"), else as the plain word."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE, e.g. batch_size=32")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def with_training(spec: Spec, changes: dict[str, Any]) -> Spec:
    """The spec with these training settings changed, validated as any spec file is."""
    data = spec.to_dict()
    unknown = sorted(set(changes) - set(data["train"]))
    if unknown:
        raise ValueError(f"no training setting {', '.join(unknown)} (there are: {', '.join(data['train'])})")
    return Spec.from_dict({**data, "train": {**data["train"], **changes}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="a spec file (a study's best.json) or a bundled name such as found/b8000")
    parser.add_argument("--set", dest="changes", type=setting, action="append", default=[], metavar="NAME=VALUE",
                        help="a training setting to change (repeatable): batch_size=32, lr=0.1, ema=0")
    parser.add_argument("--speed", default="", metavar="KEY=VALUE,...",
                        help="the trainer's settings changed (nas.train.Speed), e.g. amp=bf16 (default: the CPU's own)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds to train")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per training (default: 15)")
    parser.add_argument("--subset", type=int, help="train on only the first N training images (smoke runs)")
    parser.add_argument("--data-dir", help="MNIST's IDX files (default: $NAS_DATA_DIR, else ./data)")
    parser.add_argument("--out", type=Path, help="append each seed's JSON line here")
    args = parser.parse_args(argv)
    try:  # a bad spec, setting or data folder: one line and status 2, before any training
        spec = with_training(load_spec(args.spec), dict(args.changes))
        speed = parse_speed(args.speed, speed_for("cpu"))
        data = load_search_data(resolve_data_dir(args.data_dir), torch.device("cpu"), args.subset)
    except (ValueError, DataError) as exc:  # SpecError and UsageError are ValueErrors
        print(f"recipe_seeds: {exc}", file=sys.stderr)
        return 2
    for seed in args.seeds:
        load, start = os.getloadavg()[0], time.perf_counter()
        result = train(spec, data, epochs=args.epochs, seed=seed, speed=speed)
        row = {"date": time.strftime("%Y-%m-%d"), **provenance(), "spec": args.spec,
               "changes": dict(args.changes), "speed": args.speed, "code": spec.code, "seed": seed,
               "epochs": args.epochs, "train_images": len(data.train), "val_images": len(data.held_out),
               "val_acc": result.final_acc, "curve": [e.eval_acc for e in result.history],
               "seconds": round(time.perf_counter() - start, 1), "hardware": describe(torch.device("cpu")),
               "load_before": load}
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
