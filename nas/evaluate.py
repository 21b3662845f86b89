"""`python -m nas.evaluate CHECKPOINT`: test accuracy, per-class accuracy and a confusion matrix of a
checkpoint written by `nas.retrain` — what a user checks before trusting a model.

checkpoint -> (spec, weights) -> module -> predictions on the 10,000 test images -> figure (plotly HTML).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cli import Parser, UsageError, add_device_args, resolve_device, run_main
from .data import Split, load_train_test, resolve_data_dir
from .model import build
from .retrain import CHECKPOINT_FORMAT
from .spec import Spec, SpecError
from .train import EVAL_BATCH


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m nas.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a seed<k>.pt written by nas.retrain")
    p.add_argument("--out", help="confusion-matrix figure, HTML (default: <checkpoint>_confusion.html next to it)")
    add_device_args(p)
    return p.parse_args(argv)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], Spec, nn.Module]:
    """Our checkpoint -> (its dict, its spec, the model with its weights, on CPU); UsageError for anything else."""
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    try:
        # weights_only: a checkpoint is data (dicts, lists, numbers, tensors); never run code from a file
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors all mean the same: not a checkpoint we can read
        raise UsageError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint written by nas.retrain: torch.load cannot "
                         f"read it as tensors and plain data ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise UsageError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint written by nas.retrain (format: {found!r})")
    try:
        spec = Spec.from_dict(payload["spec"])
    except (KeyError, SpecError, TypeError) as exc:
        raise UsageError(f"{path}: the checkpoint's spec is unusable ({exc})") from None
    model = build(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: the weights do not fit the checkpoint's spec ({reason[:160]})") from None
    return payload, spec, model.eval()


@torch.no_grad()
def confusion_matrix(model: nn.Module, split: Split, classes: int) -> torch.Tensor:
    """counts[true, predicted] over the split, computed in large batches on the split's device."""
    counts = torch.zeros(classes * classes, dtype=torch.int64, device=split.y.device)
    for start in range(0, len(split), EVAL_BATCH):
        predicted = model(split.x[start:start + EVAL_BATCH]).argmax(1)
        counts += torch.bincount(split.y[start:start + EVAL_BATCH] * classes + predicted, minlength=classes * classes)
    return counts.view(classes, classes).cpu()


def write_figure(counts: torch.Tensor, title: str, path: Path) -> None:
    import plotly.graph_objects as go

    labels = [str(i) for i in range(len(counts))]
    # colour by share of the true class, so a few errors stand out next to ~1,000 correct answers
    share = 100.0 * counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    off_diag = share.clone().fill_diagonal_(0)
    figure = go.Figure(go.Heatmap(
        z=off_diag.tolist(), x=labels, y=labels, text=counts.tolist(), texttemplate="%{text}",
        colorscale="Reds", colorbar={"title": "errors,<br>% of the<br>true class"},
        hovertemplate="true %{y}, predicted %{x}: %{text} images<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                         width=720, height=680)
    tmp = path.with_name(f".{path.name}.tmp")
    figure.write_html(tmp, include_plotlyjs=True)  # self-contained: opens without a network
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.checkpoint)
    payload, spec, model = load_checkpoint(path)
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}_confusion.html")
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: name a file in an existing directory")
    device = resolve_device(args.device)
    # only the 10,000 test images are needed: subset=1 keeps the training part down to one image
    test = load_train_test(resolve_data_dir(args.data_dir), device, subset=1, download=args.download).held_out
    counts = confusion_matrix(model.to(device), test, spec.arch.num_classes)

    correct, total = counts.diag(), counts.sum(1)
    acc = 100.0 * correct.sum().item() / total.sum().item()
    print(f"{path}: {spec.code}")
    metrics = payload.get("metrics")
    recorded = metrics.get("test_acc") if isinstance(metrics, dict) else None
    note = f" (recorded at training: {recorded:.2f} %)" if isinstance(recorded, float) else ""
    print(f"test accuracy: {acc:.2f} % ({correct.sum().item():,} of {total.sum().item():,}){note}")
    print(f"{'class':>5} {'images':>6} {'correct':>7} {'acc':>7}  most often mistaken for")
    for c in range(len(counts)):
        errors = counts[c].clone()
        errors[c] = 0
        worst = int(errors.argmax())
        mistaken = f"{worst} ({int(errors[worst])})" if errors[worst] > 0 else "-"
        print(f"{c:>5} {int(total[c]):>6} {int(correct[c]):>7} {100.0 * correct[c].item() / max(1, total[c].item()):>6.2f}%  {mistaken}")
    write_figure(counts, f"{spec.code}<br>test accuracy {acc:.2f} %", out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main("nas.evaluate", main)
