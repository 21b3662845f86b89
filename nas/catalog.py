"""`nas list`: the bundled search spaces, the reference designs and found models, and the studies in a studies directory.

Names listed here are what the other commands take: a space's name for `nas search --space`, a model's
name (`found/b8000`, `reference/4_final`) wherever a spec file is taken (`nas retrain`, `nas bench --spec`,
`nas search --warm-start`), a study's name for `--study`. It reads the studies but changes none of them.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from .bundled import ROOT, spaces, spec_files
from .cli import run_command
from .cost import spec_costs
from .data.source import describe_data
from .errors import first_line
from .spec import MNIST_SHAPE, Spec
from .store.settings import data_of

# what each bundled space is for, in one line (a space of another name: its `description:`, else its first comment)
SPACE_PURPOSE = {
    "mnist": "the default: small CNNs for budgets of about 4,000-8,000 parameters (separable and 1x1 blocks, "
             "PReLU/SiLU, EMA)",
    "mnist_classic": "plain 3x3-conv ReLU CNNs around the classic 8k-parameter exercise (the default before spec "
                     "version 2)",
    "mnist_small": "narrow CNNs for tight budgets of about 1,000-4,000 parameters",
    "mnist_tiny": "a small space for budgets of about 500-3,000 parameters, and for smoke runs",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--studies-dir",
                   help="where the studies to list live (default: $NAS_STUDIES_DIR, else ./studies)")


def space_purpose(name: str, path: Path) -> str:
    """One line of what a space is for: its YAML `description:`, else the table, else its first comment."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return " ".join(data["description"].split())
    if name in SPACE_PURPOSE:
        return SPACE_PURPOSE[name]
    comment = " ".join(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#"))
    return re.split(r"(?<=\.)\s", comment, maxsplit=1)[0] if comment else ""


def model_row(name: str, path: Path) -> dict[str, Any]:
    """A bundled spec file's name, costs (parameters, MACs, peak RAM and flash at int8: nas.cost, from its spec), the
    data it is for, its measured float and int8 test accuracy (where its JSON has them) and its code."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return {"name": name, "params": "?", "acc": "", "code": f"cannot read {path.name} ({exc})"}
    retrain = data.get("retrain") or {}
    if "mean" in retrain:
        acc = f"{retrain['mean']:.2f} ± {retrain.get('std', 0):.2f} % ({len(retrain.get('seeds', []))} seeds)"
    elif data.get("published"):
        acc = f"{data['published']} (published)"
    else:
        acc = ""
    # measured for some found models only: by a separate int8 retrain (`int8`), else by their own (`retrain`)
    int8 = (data.get("int8") or {}).get("int8") or retrain.get("int8") or {}
    row = {"name": name, "acc": acc, "code": data.get("code", ""),
           "int8": f"{int8['mean']:.2f} ± {int8.get('std', 0):.2f} %" if "mean" in int8 else ""}
    try:
        spec = Spec.from_dict(data["spec"])
        cost = spec_costs(spec)
    except (KeyError, TypeError, ValueError) as exc:  # SpecError is a ValueError
        return {**row, "params": "?", "code": f"cannot read its spec ({first_line(exc)})"}
    return {**row, "params": f"{cost.params:,}", "macs": f"{cost.macs:,}", "ram": f"{cost.ram_int8:,}",
            "flash": f"{cost.flash_int8:,}", "data": model_data(data.get("data"), spec)}


def model_data(recorded: Any, spec: Spec) -> str:
    """The data a bundled model is for: what its JSON records, else what its shape says (MNIST's: mnist, as every
    model bundled before data was recorded; another: its images and classes)."""
    if isinstance(recorded, dict):
        return describe_data(recorded)
    a = spec.arch
    shape = {"in_channels": a.in_channels, "input_size": a.input_size, "num_classes": a.num_classes}
    if shape == MNIST_SHAPE:
        return "mnist"
    return f"{a.in_channels}x{a.input_size}x{a.input_size}, {a.num_classes} classes"


def study_rows(root: Path) -> list[dict[str, str]]:
    """Every study in the SQLite (`.db`) and journal (`.journal`) files of a studies directory."""
    import optuna

    from .store.record import read_trials
    from .store.settings import read_settings
    from .store.storage import open_storage
    from .store.winner import select_winner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for path in sorted([*root.glob("*.db"), *root.glob("*.journal")]):
        if not path.is_file():
            continue
        url = f"sqlite:///{path}" if path.suffix == ".db" else str(path)
        try:
            storage = open_storage(url)
            names = optuna.get_all_study_names(storage)
        except Exception as exc:  # one unreadable file is reported on its row, the others are still listed
            rows.append({"study": path.stem, "file": path.name, "error": first_line(exc)})
            continue
        for name in names:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
                records = read_trials(study)
                settings = read_settings(study)
                winner = select_winner(study, records)
            except Exception as exc:
                rows.append({"study": name, "file": path.name, "error": first_line(exc)})
                continue
            if winner is None:
                best = "none complete"
            elif winner[1] is not None:
                best = f"{winner[1].mean:.2f} % (mean of {len(winner[1].val_accs)} seeds)"
            else:
                best = f"{winner[0].value:.2f} %"
            budget = settings.get("budget")
            rows.append({"study": name, "file": path.name, "trials": str(len(records)),
                         "budget": f"{budget:,}" if isinstance(budget, int) else "?",
                         "space": str(settings.get("space", "?")), "best": best,
                         "data": describe_data(data_of(settings)[0])})
    return rows


def table(rows: list[dict[str, str]], columns: list[tuple[str, str]], right: tuple[str, ...] = ()) -> list[str]:
    """Rows as aligned text, two spaces in; `columns`: (key, heading); keys in `right` are right-aligned."""
    widths = {k: max([len(h)] + [len(str(r.get(k, ""))) for r in rows]) for k, h in columns}
    def line(values: dict[str, str]) -> str:
        cells = [str(values.get(k, "")).rjust(widths[k]) if k in right else str(values.get(k, "")).ljust(widths[k])
                 for k, _ in columns]
        return ("  " + "  ".join(cells)).rstrip()
    return [line(dict(columns))] + [line(r) for r in rows]


def run(args: argparse.Namespace) -> int:
    from .store.storage import studies_dir

    lines = [f"search spaces (nas search --space NAME), in {ROOT}:"]
    lines += table([{"name": n, "file": p.name, "for": space_purpose(n, p)} for n, p in spaces().items()],
                   [("name", "name"), ("file", "file"), ("for", "what it is for")])
    lines += ["", "models (nas retrain NAME, nas bench --spec NAME, nas search --warm-start NAME):"]
    lines += table([model_row(n, p) for n, p in spec_files().items()],
                   [("name", "name"), ("params", "params"), ("macs", "MACs"), ("ram", "RAM int8"),
                    ("flash", "flash int8"), ("data", "data"), ("acc", "test accuracy"), ("int8", "int8 test"),
                    ("code", "code")], right=("params", "macs", "ram", "flash"))
    lines.append("  (RAM: peak activation bytes of one inference, flash: bytes of the int8 model; both computed from "
                 "the design: nas.cost)")
    root = studies_dir(args.studies_dir)
    lines.append("")
    if not root.is_dir():
        lines.append(f"studies in {root}: none (no such folder; --studies-dir or $NAS_STUDIES_DIR names another)")
    else:
        rows = study_rows(root)
        if not rows:
            lines.append(f"studies in {root}: none")
        else:
            lines.append(f"studies in {root} (nas report/export --study NAME):")
            ok = [r for r in rows if "error" not in r]
            if ok:
                lines += table(ok, [("study", "study"), ("trials", "trials"), ("budget", "budget"),
                                    ("space", "space"), ("best", "best val acc"), ("file", "file"), ("data", "data")],
                               right=("trials", "budget"))
            lines += [f"  {r['study']} ({r['file']}): cannot read it: {r['error']}" for r in rows if "error" in r]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_command("list")
