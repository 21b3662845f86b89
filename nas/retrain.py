"""`nas retrain SPEC.json`: train a spec on all 60,000 training images with several seeds and report its final-epoch test accuracy (mean ± std, min),
float and int8.

spec file -> module -> train (the spec's schedule, once per seed) -> final-epoch test accuracy, and that of the
model quantised to int8 (nas.quantize, calibrated on training images) -> a checkpoint per seed, metrics.json, and
the best seed as ONNX (float and int8) and as a torch.export program.
The test set is measured once per seed, after the last epoch; no epoch is ever picked by it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .bundled import find_spec, in_package
from .checkpoint import EXPORT_FILE, ONNX_FILE, checkpoint_data, export_models, load_checkpoint, save_checkpoint
from .cli import add_device_args, add_device_budget_args, positive_int, run_command
from .cost import Budgets, Costs, check_buildable, costs, over_budget
from .data import (BUILTIN, DataInfo, DataSource, check_fits, data_info, describe_data, header, load_train_test,
                   source_from_args, source_of)
from .device import describe, resolve_device
from .errors import CheckpointError, DataError, ExportCheckError, UsageError
from .files import write_json
from .model import build
from .progress import format_duration, time_left
from .quantize import INT8_ONNX_FILE, SEVEN_BIT_WEIGHTS, calibration_images, int8_accuracy, quantize_onnx
from .spec import Spec, load_spec
from .store.storage import studies_dir
from .train import EpochResult, train
from .version import provenance

METRICS_FILE = "metrics.json"
ROW_KEYS = ("seed", "test_acc", "int8_test_acc", "int8_weight_bits", "train_loss", "train_acc", "seconds_per_epoch")
CHECK_BATCH = 256  # test images the exported models are checked on


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file: a best.json-style record (nas export, search_spaces/reference/) or a bare "
                                "spec; or a bundled spec's name (found/b8000, reference/4_final: see nas list)")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs per seed")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds to train, 0..K-1")
    p.add_argument("--subset", type=positive_int, help="train on only the first N training images (smoke runs)")
    p.add_argument("--out", help="output folder (default: <spec folder>/<spec name>_retrain; for a bundled spec, "
                                 "<studies dir>/retrain/<spec name>: never inside the package)")
    p.add_argument("--studies-dir", help="where a bundled spec's results go when --out is not given "
                                         "(default: $NAS_STUDIES_DIR, else ./studies)")
    p.add_argument("--budget", type=positive_int, help="refuse a spec with this many parameters or more")
    add_device_budget_args(p, "a spec above is refused before any training")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run in --out: keep each seed whose checkpoint was trained as this run "
                        "trains it (the same spec, epochs, images and data) and train the others; a checkpoint "
                        "trained otherwise is refused (with --overwrite: trained again)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_device_args(p)


def default_out(spec_path: Path, studies: Path) -> Path:
    """Where results go without --out: beside the user's own spec file (`<spec name>_retrain/`), but for a
    bundled spec, or any file inside the installed package, `<studies>/retrain/<spec name>/`: the package is
    never written to."""
    if in_package(spec_path):
        return studies / "retrain" / spec_path.stem
    return spec_path.with_name(f"{spec_path.stem}_retrain")


def chance_warning(mean: float, classes: int, epochs: int, subset: int | None) -> str | None:
    """The warning for a retrain whose mean test accuracy is below twice chance (100 / classes %), else None."""
    chance = 100 / classes
    if mean >= 2 * chance:
        return None
    at = f"test accuracy {mean:.2f} % is at chance ({chance:g} % for {classes} classes)"
    if epochs < 3 or (subset is not None and subset < 10_000):
        return (f"nas retrain: warning: {at}: too few epochs or images to learn anything; "
                "try at least --epochs 3 --subset 10000 (about 97 % for found/b8000, in seconds)")
    return (f"nas retrain: warning: {at}: the model learned nothing; check the spec's training settings "
            "(optimizer, learning rate, schedule)")


def kept_seeds(out: Path, spec: Spec, epochs: int, seeds: int, data, info: DataInfo, replace: bool
               ) -> dict[int, tuple[dict[str, Any], torch.nn.Module]]:
    """--resume: the seeds of a stopped run in `out` to keep, by seed: seedK.pt (K < seeds) with its row of results
    and its model, where it was trained as this run trains seed K (the same spec, epochs, training and test
    images, data: the training this run would give seed K). A checkpoint trained otherwise or unreadable raises
    UsageError before any training, or with `replace` is trained again."""
    kept = {}
    for k in range(seeds):
        path = out / f"seed{k}.pt"
        if not path.is_file():
            continue
        try:
            payload, trained, model = load_checkpoint(path)
            trained_on, _ = checkpoint_data(payload, path)
        except CheckpointError as exc:
            why = str(exc)
        else:
            metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
            differs = ["another spec"] if trained != spec else []
            differs += [f"{what} {metrics.get(key)!r}, not {value!r}" for what, key, value in (
                ("epochs", "epochs", epochs), ("training images", "train_images", len(data.train)),
                ("test images", "test_images", len(data.held_out))) if metrics.get(key) != value]
            if (trained_on.identity, trained_on.preprocessing()) != (info.identity, info.preprocessing()):
                differs.append(f"data {describe_data(trained_on.identity)}")
            if not differs and all(key in metrics for key in ROW_KEYS):
                kept[k] = ({key: metrics[key] for key in ROW_KEYS}, model)
                continue
            why = f"{path} was trained otherwise ({'; '.join(differs) or 'its results are missing'})"
        if not replace:
            raise UsageError(f"--resume: {why}: pass --overwrite too to train it again, or another --out")
    return kept


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, an --out that cannot be written or would lose earlier results."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and not overwrite:
        earlier = sorted(p.name for p in out.iterdir() if p.name == METRICS_FILE or p.suffix in (".pt", ".onnx", ".pt2"))
        if earlier:
            listed = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
            raise UsageError(f"{out} already holds results ({listed}): "
                             "pass --overwrite, --resume (to continue a stopped run) or another --out")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")


class Progress:
    """One line per epoch on stderr: seed, epoch, loss, running training accuracy, time left."""

    def __init__(self, quiet: bool, seeds: int, epochs: int) -> None:
        self.quiet, self.total = quiet, seeds * epochs
        self.start, self.done = time.perf_counter(), 0

    def epoch(self, seed_index: int, seeds: int, r: EpochResult) -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        left = time_left(elapsed, self.done, self.total - self.done)
        # the running accuracy is on the (augmented) training batches: the test set is not shown per epoch
        print(f"[{format_duration(elapsed)}] seed {seed_index} ({seed_index + 1}/{seeds}) epoch {r.epoch}/{r.epochs} "
              f"loss {r.train_loss:.4f} train acc {r.train_acc:.2f}% ({r.seconds:.1f}s) | left {format_duration(left)}",
              file=sys.stderr, flush=True)


# the decimals metrics.json keeps of a mean, std or drop (float and int8 alike): a test accuracy steps by 0.01 points
# on 10,000 images, so four keep every digit that means anything and drop float noise (99.42000000000002)
DECIMALS = 4


def summarise(accs: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one seed), min and max of the per-seed test accuracies, the mean and
    std to DECIMALS."""
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return {"mean": round(statistics.fmean(accs), DECIMALS), "std": round(std, DECIMALS), "min": min(accs),
            "max": max(accs)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'seed':>4} {'test acc':>9} {'int8 acc':>9} {'train loss':>10} {'train acc':>9} {'s/epoch':>8}"]
    for r in rows:
        lines.append(f"{r['seed']:>4} {r['test_acc']:>8.2f}% {r['int8_test_acc']:>8.2f}% {r['train_loss']:>10.4f} "
                     f"{r['train_acc']:>8.2f}% {r['seconds_per_epoch']:>8.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    spec_path = find_spec(args.spec)  # a bundled spec's name (found/b8000) is its file in the package
    out = Path(args.out) if args.out else default_out(spec_path, studies_dir(args.studies_dir))
    return retrain(spec_path, out, epochs=args.epochs,
                   seeds=args.seeds, subset=args.subset, budget=args.budget, max_macs=args.max_macs,
                   max_ram=args.max_ram, max_flash=args.max_flash, overwrite=args.overwrite, resume=args.resume,
                   quiet=args.quiet, device=args.device, data_dir=args.data_dir, download=args.download,
                   data=source_from_args(args) if args.data else None)


def _recorded_data(spec_path: Path, data_dir: str | None, download: bool) -> DataSource:
    """The data a spec file (best.json) says its design was found on, when no --data is given: a built-in set
    by its name; MNIST for a file that says nothing. A folder or .npz must be named again (--data)."""
    try:
        recorded = json.loads(Path(spec_path).read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        recorded = None
    name = recorded.get("name") if isinstance(recorded, dict) else None
    if isinstance(recorded, dict) and "hash" in recorded:
        raise DataError(f"{spec_path} was found on your own data {describe_data(recorded)}: pass --data with its "
                        "folder or .npz")
    return source_of(name if name in BUILTIN else "mnist", data_dir, download=download)


def retrain(spec_path: Path, out: Path, *, epochs: int = 15, seeds: int = 5, subset: int | None = None,
            budget: int | None = None, max_macs: int | None = None, max_ram: int | None = None,
            max_flash: int | None = None, overwrite: bool = False, resume: bool = False, quiet: bool = False,
            device: str = "auto", data_dir: str | None = None, download: bool = False,
            data: DataSource | None = None) -> int:
    """Train the spec in `spec_path` with seeds 0..seeds-1 into `out` (checkpoints, metrics.json, the
    best seed's ONNX and torch.export files) and print its final-epoch test accuracy. Returns the exit
    status: 0, or 1 when a seed diverged or an export failed its check; bad input raises UsageError
    (or SpecError, DataError) before anything is written, a spec over `budget` (parameters: it needs fewer) or over
    `max_macs`, `max_ram` or `max_flash` (at int8, bytes) too. `data`: the images (None: what the spec file says it
    was found on, else MNIST in `data_dir`). `resume`: keep the seeds a stopped run in `out` trained (kept_seeds),
    refusing one trained otherwise unless `overwrite`."""
    spec = load_spec(spec_path)  # a missing, malformed or unbuildable spec stops here, before anything is written
    source = data or _recorded_data(spec_path, data_dir, download)
    info = data_info(source)
    check_fits(spec, where=str(spec_path), info=info)  # so does one made for other images or classes than the data's
    check_buildable(spec, where=str(spec_path))  # and one too large to build, by its count, before allocating
    model = build(spec)
    cost = costs(spec, model)
    refuse_over_budget(cost, str(spec_path), budget, max_macs, max_ram, max_flash)
    check_out_dir(out, overwrite or resume)
    where = resolve_device(device)
    data = load_train_test(source, where, subset, download)  # once, for all seeds
    kept = kept_seeds(out, spec, epochs, seeds, data, info, replace=overwrite) if resume and out.is_dir() else {}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _retrain(spec, spec_path, cost, data, out, describe(where), epochs=epochs, seeds=seeds,
                        quiet=quiet, subset=subset, info=info, source=source, kept=kept, overwrite=overwrite)
    finally:  # interrupted, failed or diverged before any result: leave no empty folder
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def refuse_over_budget(cost: Costs, where: str, budget: int | None, max_macs: int | None = None,
                  max_ram: int | None = None, max_flash: int | None = None) -> None:
    """Refuse (UsageError, one line naming `where` and each budget it is over) a spec with `budget` parameters or
    more, or over --max-macs, --max-ram or --max-flash: the search's gate (nas.cost.over_budget), said alike."""
    why = [f"{cost.params:,} parameters >= budget {budget:,}"] if budget is not None and cost.params >= budget else []
    device = Budgets(cost.params + 1, max_macs, max_ram, max_flash)  # its parameters: said above, in their own words
    why += [str(o) for o in over_budget(cost, device) if o.budget != "params"]
    if why:
        raise UsageError(f"{where}: {'; '.join(why)}")


def _retrain(spec: Spec, spec_path: Path, cost: Costs, data, out: Path, where: str, *, epochs: int,
             seeds: int, quiet: bool, subset: int | None = None, info=None, source: DataSource | None = None,
             kept: dict[int, tuple[dict[str, Any], torch.nn.Module]], overwrite: bool) -> int:
    params, macs = cost.params, cost.macs
    if not quiet and info is not None and not info.is_mnist:
        print(header(info), file=sys.stderr)
    if not quiet:
        print(f"retraining {spec.code}: {params:,} params, {macs:,} MACs, {len(data.train):,} training images, "
              f"{seeds} seed(s) x {epochs} epochs on {where}", file=sys.stderr)

    progress = Progress(quiet, seeds - len(kept), epochs)
    rows: list[dict[str, Any]] = []
    best_model, best_acc = None, -1.0
    check_batch = data.held_out.x[:CHECK_BATCH].cpu()
    calibration = calibration_images(data.train.x)  # training images only: never the test set
    start = time.perf_counter()
    for k in range(seeds):
        if k in kept:  # a stopped run's seed, trained as this one would: its results and model as they were
            row, model = kept[k]
            rows.append(row)
            if not quiet:
                print(f"seed {k} ({k + 1}/{seeds}): kept from seed{k}.pt, test acc {row['test_acc']:.2f}%",
                      file=sys.stderr, flush=True)
            if row["test_acc"] > best_acc:
                best_model, best_acc, best_seed = model, row["test_acc"], k
            continue
        try:
            result = train(spec, data, epochs=epochs, seed=k, on_epoch=lambda r, k=k: progress.epoch(k, seeds, r))
        except FloatingPointError as exc:
            print(f"nas retrain: error: seed {k}: {exc}", file=sys.stderr)
            return 1
        last = result.history[-1]
        try:
            int8_acc, int8_checks = int8_accuracy(result.model, calibration, check_batch, data.held_out.x,
                                                  data.held_out.y)
        except ExportCheckError as exc:
            print(f"nas retrain: error: seed {k}: {exc}", file=sys.stderr)
            return 1
        # the held-out split here is the test set: its accuracy after the LAST epoch is the result
        row = {"seed": k, "test_acc": result.final_acc, "int8_test_acc": int8_acc,
               "int8_weight_bits": int8_checks["int8_weight_bits"], "train_loss": last.train_loss,
               "train_acc": last.train_acc, "seconds_per_epoch": statistics.fmean(r.seconds for r in result.history)}
        rows.append(row)
        history = [{"epoch": r.epoch, "train_loss": r.train_loss, "train_acc": r.train_acc, "seconds": r.seconds}
                   for r in result.history]
        save_checkpoint(out / f"seed{k}.pt", spec, result.model,
                        {**row, "epochs": epochs, "params": params, "macs": macs,
                         "train_images": len(data.train), "test_images": len(data.held_out),
                         "device": where, "history": history}, info, source.name if source else None)
        if result.final_acc > best_acc:
            best_model, best_acc, best_seed = result.model, result.final_acc, k
    accs = [r["test_acc"] for r in rows]
    stats = summarise(accs)
    int8_accs = [r["int8_test_acc"] for r in rows]
    drop = round(statistics.fmean(accs) - statistics.fmean(int8_accs), DECIMALS)
    int8_stats = {**summarise(int8_accs), "drop": drop, "calibration_images": len(calibration)}
    try:
        checks = export_models(best_model, check_batch, out, spec=spec, params=params, data=info)
        checks |= quantize_onnx(out / ONNX_FILE, calibration, out / INT8_ONNX_FILE, check_batch)
    except ExportCheckError as exc:
        print(f"nas retrain: error: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - start  # training, per-epoch evaluation, checkpoints and export
    metrics = {
        "spec_file": str(spec_path), "code": spec.code, "spec": spec.to_dict(),
        "params": params, "macs": macs,
        # the device costs (nas.cost), bytes; the exported int8 file's measured size belongs beside flash_int8
        "ram_int8": cost.ram_int8, "ram_float32": cost.ram_float32, "flash_int8": cost.flash_int8,
        "seeds": [r["seed"] for r in rows], "epochs": epochs,
        "test_acc": accs, **stats, "best_seed": best_seed,
        "int8_test_acc": int8_accs, "int8": int8_stats, "int8_onnx_bytes": checks.pop("int8_onnx_bytes"),
        "train_images": len(data.train), "test_images": len(data.held_out),
        "per_seed": rows, "device": where, "wall_seconds": round(wall, 1),
        **({"kept_seeds": sorted(kept)} if kept else {}),  # from a stopped run: wall_seconds is this run's only
        "exported": {"onnx": ONNX_FILE, "int8_onnx": INT8_ONNX_FILE, "torch_export": EXPORT_FILE, "seed": best_seed,
                     **checks},
        **provenance(), "torch": torch.__version__,
        **({} if info is None or info.is_mnist else info.record()),
    }
    write_json(metrics, out / METRICS_FILE)
    for stale in out.glob("seed*.pt") if overwrite else ():  # an earlier run's with more seeds; --resume keeps them
        if stale.stem[4:].isdigit() and int(stale.stem[4:]) >= seeds:
            stale.unlink()

    print(table(rows))
    print(f"{spec.code}: {params:,} params, {macs:,} MACs, peak RAM {metrics['ram_int8']:,} B at int8 "
          f"({metrics['ram_float32']:,} B at float32), flash {metrics['flash_int8']:,} B at int8")
    print(f"test accuracy, final epoch of {epochs}, {len(accs)} seed(s), {len(data.train):,} training images: "
          f"{stats['mean']:.2f} ± {stats['std']:.2f} %, min {stats['min']:.2f} %; "
          f"int8 {int8_stats['mean']:.2f} ± {int8_stats['std']:.2f} %, min {int8_stats['min']:.2f} % "
          f"(drop {round(int8_stats['drop'], 2) + 0.0:.2f} points)")  # + 0.0: -0.004 is a drop of 0.00, not -0.00
    if any(r["int8_weight_bits"] == 7 for r in rows):
        print(SEVEN_BIT_WEIGHTS)
    print(f"wall time {format_duration(wall)} ({wall:.0f} s) on {where}")
    checkpoints = "seed0.pt" if seeds == 1 else f"seed0.pt ... seed{seeds - 1}.pt"
    print(f"wrote {out}/: {checkpoints}, {METRICS_FILE}, {ONNX_FILE}, {INT8_ONNX_FILE} and {EXPORT_FILE} "
          f"(seed {best_seed})")
    warning = chance_warning(stats["mean"], spec.arch.num_classes, epochs, subset)
    if warning:
        print(warning, file=sys.stderr)
    return 0



if __name__ == "__main__":
    run_command("retrain")
