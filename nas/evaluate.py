"""`nas evaluate CHECKPOINT`: the test accuracy, per-class accuracy and confusion matrix of a checkpoint written by `nas retrain`, what a user checks before trusting a model.

checkpoint -> (spec, weights, preprocessing) -> module -> predictions on the data's test images -> figure (plotly HTML).
The test images are those of the data the checkpoint was trained on (or --data), prepared as it stores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .checkpoint import checkpoint_source, load_checkpoint
from .cli import add_device_args, run_command
from .data import check_fits, data_info, load_test
from .device import resolve_device
from .errors import UsageError
from .files import check_replaceable, write_text
from .report import plotlyjs
from .train import confusion, eval_batch_size, split_batches


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a seed<k>.pt written by nas retrain")
    p.add_argument("--out", help="confusion-matrix figure, HTML (default: <checkpoint>_confusion.html next to it)")
    add_device_args(p, doing="evaluate")


def write_figure(counts: torch.Tensor, title: str, path: Path, labels: list[str] | None = None) -> None:
    import plotly.graph_objects as go

    labels = labels or [str(i) for i in range(len(counts))]
    # colour by share of the true class, so a few errors stand out next to ~1,000 correct answers
    share = 100.0 * counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    off_diag = share.clone().fill_diagonal_(0)
    figure = go.Figure(go.Heatmap(
        z=off_diag.tolist(), x=labels, y=labels, text=counts.tolist(), texttemplate="%{text}",
        colorscale="Reds", colorbar={"title": "errors,<br>% of the<br>true class"},
        hovertemplate="true %{y}, predicted %{x}: %{text} images<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         width=720, height=680)
    plotlyjs.write_bundle(path.parent)  # first: the page never points at a missing file
    # plotly.min.js beside the page, shared with the folder's other pages: opens without a network
    write_text(path, figure.to_html(include_plotlyjs=plotlyjs.INCLUDE, full_html=True))


def run(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    payload, spec, model = load_checkpoint(path)
    source, trained_on = checkpoint_source(payload, path, args.data, args.data_dir, args.download)
    check_fits(spec, where=str(path), info=trained_on)  # a model for other images or classes than its own data's
    check_fits(spec, where=str(path), info=data_info(source))  # and data of other classes cannot measure it
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}_confusion.html")
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: name a file in an existing directory")
    check_replaceable(out, "html")  # never the checkpoint itself, or any other file that is not a figure
    device = resolve_device(args.device)
    # the test images, prepared with the preprocessing stored in the checkpoint
    test = load_test(source, device, trained_on)
    counts = confusion(model.to(device), split_batches(test, eval_batch_size(device))).cpu()

    correct, total = counts.diag(), counts.sum(1)
    acc = 100.0 * correct.sum().item() / total.sum().item()
    print(f"{path}: {spec.code}")
    metrics = payload.get("metrics")
    recorded = metrics.get("test_acc") if isinstance(metrics, dict) else None
    note = f" (recorded at training: {recorded:.2f} %)" if isinstance(recorded, float) else ""
    print(f"test accuracy: {acc:.2f} % ({correct.sum().item():,} of {total.sum().item():,}){note}")
    names = [str(c) for c in trained_on.classes] if len(trained_on.classes) == len(counts) else \
        [str(c) for c in range(len(counts))]
    width = max(5, *(len(n) for n in names))
    print(f"{'class':>{width}} {'images':>6} {'correct':>7} {'acc':>7}  most often mistaken for")
    for c in range(len(counts)):
        errors = counts[c].clone()
        errors[c] = 0
        worst = int(errors.argmax())
        mistaken = f"{names[worst]} ({int(errors[worst])})" if errors[worst] > 0 else "-"
        print(f"{names[c]:>{width}} {int(total[c]):>6} {int(correct[c]):>7} "
              f"{100.0 * correct[c].item() / max(1, total[c].item()):>6.2f}%  {mistaken}")
    write_figure(counts, f"{spec.code}<br>test accuracy {acc:.2f} %", out, names)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_command("evaluate")
