"""`python -m nas.retrain SPEC.json`: train a spec on all 60,000 training images, over several seeds,
and measure its final-epoch test accuracy.

spec file -> module -> train (the spec's schedule, once per seed) -> final-epoch test accuracy ->
a checkpoint per seed, metrics.json, and the best seed as ONNX and as a torch.export program.
The test set is measured once per seed, after the last epoch; no epoch is ever picked by it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .cli import Parser, UsageError, add_device_args, format_duration, positive_int, resolve_device, run_main
from .cost import count_macs, count_params
from .data import load_train_test, resolve_data_dir
from .model import build
from .spec import Spec, load_spec, write_json
from .train import EpochResult, train

CHECKPOINT_FORMAT = "nas-budget-checkpoint/1"  # what nas.evaluate accepts
ONNX_FILE, EXPORT_FILE, METRICS_FILE = "model.onnx", "model.pt2", "metrics.json"
CHECK_BATCH = 256  # test images the exported models are checked on
CHECK_ATOL = CHECK_RTOL = 1e-4  # float32 kernels differ between torch and onnxruntime, but not by more


class ExportCheckError(RuntimeError):
    """An exported model that does not reproduce the PyTorch logits: never ship it."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.retrain", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="spec file: a best.json-style record (nas.export, search_spaces/reference/) or a bare spec")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs per seed (default: 15)")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds to train, 0..K-1 (default: 5)")
    p.add_argument("--subset", type=positive_int, help="train on only the first N training images (smoke runs)")
    p.add_argument("--out", help="output folder (default: <spec folder>/<spec name>_retrain)")
    p.add_argument("--budget", type=positive_int, help="refuse a spec with this many parameters or more")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_device_args(p)
    return p.parse_args(argv)


def default_out(spec_path: Path) -> Path:
    return spec_path.with_name(f"{spec_path.stem}_retrain")


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, an --out that cannot be written or would lose earlier results."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and not overwrite:
        earlier = sorted(p.name for p in out.iterdir() if p.name == METRICS_FILE or p.suffix in (".pt", ".onnx", ".pt2"))
        if earlier:
            raise UsageError(f"{out} already holds results ({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}): "
                             "pass --overwrite or another --out")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")


def hardware(device: torch.device) -> str:
    """The hardware in words, for every timing this command reports."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model}, {torch.get_num_threads()} threads"


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
        left = elapsed / self.done * (self.total - self.done)
        # the running accuracy is on the (augmented) training batches: the test set is not shown per epoch
        print(f"[{format_duration(elapsed)}] seed {seed_index} ({seed_index + 1}/{seeds}) epoch {r.epoch}/{r.epochs} "
              f"loss {r.train_loss:.4f} train acc {r.train_acc:.2f}% ({r.seconds:.1f}s) | left {format_duration(left)}",
              file=sys.stderr, flush=True)


def save_checkpoint(path: Path, spec: Spec, model: nn.Module, metrics: dict[str, Any]) -> None:
    """A checkpoint carries the spec it was built from, so `build(spec)` + the weights is the model."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "code": spec.code,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def export_models(model: nn.Module, batch: torch.Tensor, out: Path) -> dict[str, float]:
    """Write model.pt2 and model.onnx for `model` (on CPU, eval mode), each checked against PyTorch on `batch`.

    Each is written under a temporary name and renamed only once it reproduces the logits.
    """
    model = model.cpu().eval()
    batch = batch.cpu().clone()  # its own storage: torch.export saves the example's, not a view of the test set
    with torch.no_grad():
        expected = model(batch)
    dims = ({0: torch.export.Dim("batch", min=1)},)  # any batch size
    example = (batch[:2].clone(),)

    def write_pt2(tmp: Path) -> torch.Tensor:
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dims), tmp)
        with torch.no_grad():
            return torch.export.load(tmp).module()(batch)

    def write_onnx(tmp: Path) -> torch.Tensor:
        import onnxruntime

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one self-contained file (no external .data file), batch dimension left dynamic
            torch.onnx.export(model, example, str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_shapes=dims, dynamo=True, external_data=False, verbose=False)
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])

    diffs = {}
    for name, what, write in ((EXPORT_FILE, "torch.export", write_pt2), (ONNX_FILE, "ONNX (onnxruntime)", write_onnx)):
        tmp = out / f".tmp.{name}"  # keeps the suffix, which torch.export insists on
        try:
            diffs[f"{Path(name).suffix[1:]}_max_abs_diff"] = _check_close(what, write(tmp), expected)
            os.replace(tmp, out / name)
        finally:
            tmp.unlink(missing_ok=True)
    return diffs


def _check_close(what: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    same_shape = got.shape == expected.shape
    diff = (got - expected).abs().max().item() if same_shape else math.inf
    if not same_shape or not torch.allclose(got, expected, atol=CHECK_ATOL, rtol=CHECK_RTOL):
        raise ExportCheckError(f"{what} logits differ from PyTorch's on {len(expected)} test images "
                               f"(max |diff| {diff:.3g}, shape {tuple(got.shape)} vs {tuple(expected.shape)}): not written")
    return diff


def summarise(accs: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one seed) and min of the per-seed test accuracies."""
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "min": min(accs), "max": max(accs)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'seed':>4} {'test acc':>9} {'train loss':>10} {'train acc':>9} {'s/epoch':>8}"]
    for r in rows:
        lines.append(f"{r['seed']:>4} {r['test_acc']:>8.2f}% {r['train_loss']:>10.4f} {r['train_acc']:>8.2f}% "
                     f"{r['seconds_per_epoch']:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec_path = Path(args.spec)
    spec = load_spec(spec_path)  # a missing, malformed or unbuildable spec stops here, before anything is written
    model = build(spec)
    params, macs = count_params(model), count_macs(model)
    if args.budget is not None and params >= args.budget:
        raise UsageError(f"{spec_path}: {params:,} parameters >= budget {args.budget:,}")
    out = Path(args.out) if args.out else default_out(spec_path)
    check_out_dir(out, args.overwrite)
    device = resolve_device(args.device)
    data = load_train_test(resolve_data_dir(args.data_dir), device, args.subset, args.download)  # once, for all seeds
    out.mkdir(parents=True, exist_ok=True)
    where = hardware(device)
    if not args.quiet:
        print(f"retraining {spec.code}: {params:,} params, {macs:,} MACs, {len(data.train):,} training images, "
              f"{args.seeds} seed(s) x {args.epochs} epochs on {where}", file=sys.stderr)

    progress = Progress(args.quiet, args.seeds, args.epochs)
    rows: list[dict[str, Any]] = []
    best_model, best_acc = None, -1.0
    start = time.perf_counter()
    for k in range(args.seeds):
        try:
            result = train(spec, data, epochs=args.epochs, seed=k,
                           on_epoch=lambda r, k=k: progress.epoch(k, args.seeds, r))
        except FloatingPointError as exc:
            print(f"nas.retrain: error: seed {k}: {exc}", file=sys.stderr)
            return 1
        last = result.history[-1]
        # the held-out split here is the test set: its accuracy after the LAST epoch is the result
        row = {"seed": k, "test_acc": result.final_acc, "train_loss": last.train_loss, "train_acc": last.train_acc,
               "seconds_per_epoch": statistics.fmean(r.seconds for r in result.history)}
        rows.append(row)
        history = [{"epoch": r.epoch, "train_loss": r.train_loss, "train_acc": r.train_acc, "seconds": r.seconds}
                   for r in result.history]
        save_checkpoint(out / f"seed{k}.pt", spec, result.model,
                        {**row, "epochs": args.epochs, "params": params, "macs": macs,
                         "train_images": len(data.train), "test_images": len(data.held_out),
                         "device": where, "history": history})
        if result.final_acc > best_acc:
            best_model, best_acc, best_seed = result.model, result.final_acc, k
    accs = [r["test_acc"] for r in rows]
    stats = summarise(accs)
    try:
        checks = export_models(best_model, data.held_out.x[:CHECK_BATCH], out)
    except ExportCheckError as exc:
        print(f"nas.retrain: error: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - start  # training, per-epoch evaluation, checkpoints and export
    metrics = {
        "spec_file": str(spec_path), "code": spec.code, "spec": spec.to_dict(),
        "params": params, "macs": macs, "seeds": [r["seed"] for r in rows], "epochs": args.epochs,
        "test_acc": accs, **stats, "best_seed": best_seed,
        "train_images": len(data.train), "test_images": len(data.held_out),
        "per_seed": rows, "device": where, "wall_seconds": round(wall, 1),
        "exported": {"onnx": ONNX_FILE, "torch_export": EXPORT_FILE, "seed": best_seed, **checks},
        "version": __version__, "torch": torch.__version__,
    }
    write_json(metrics, out / METRICS_FILE)
    for stale in out.glob("seed*.pt"):  # left by an earlier run (--overwrite) with more seeds
        if stale.stem[4:].isdigit() and int(stale.stem[4:]) >= args.seeds:
            stale.unlink()

    print(table(rows))
    print(f"{spec.code}: {params:,} params, {macs:,} MACs")
    print(f"test accuracy, final epoch of {args.epochs}, {len(accs)} seed(s), {len(data.train):,} training images: "
          f"{stats['mean']:.2f} ± {stats['std']:.2f} %, min {stats['min']:.2f} %")
    print(f"wall time {format_duration(wall)} ({wall:.0f} s) on {where}")
    checkpoints = "seed0.pt" if args.seeds == 1 else f"seed0.pt ... seed{args.seeds - 1}.pt"
    print(f"wrote {out}/: {checkpoints}, {METRICS_FILE}, {ONNX_FILE} and {EXPORT_FILE} (seed {best_seed})")
    return 0


if __name__ == "__main__":
    run_main("nas.retrain", main)
