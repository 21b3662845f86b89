"""Checkpoints and exported models: save, load and check them; nothing else writes or reads them.

A checkpoint is a `torch.save` dict of plain data and tensors (readable with `weights_only=True`)
that carries the spec it was built from, so `build(spec)` plus its weights is the model. Exports
(ONNX, `torch.export`) are kept only if they reproduce PyTorch's logits. Both the checkpoint and the ONNX
file's metadata say how to prepare an image (`preprocessing`), so a user of either needs nothing else.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .cost import check_buildable, count_params
from .data import BUILTIN, MNIST_INFO, DataInfo, DataSource, describe_data, source_of
from .errors import CheckpointError, ExportCheckError, SpecError, UsageError, first_line
from .files import MiB, atomic_path, open_input
from .model import build
from .spec import Spec
from .version import provenance

FORMAT = "nas-budget-checkpoint/1"
CHECKPOINT_LIMIT = 512 * MiB  # the largest checkpoint file read: ours are tens of KB
ONNX_FILE, EXPORT_FILE = "model.onnx", "model.pt2"
CHECK_ATOL = CHECK_RTOL = 1e-4  # float32 kernels differ between torch and onnxruntime, but not by more


def save_checkpoint(path: Path, spec: Spec, model: nn.Module, metrics: dict[str, Any],
                    data: DataInfo | None = None, source: str | None = None) -> None:
    """`data`: what the model was trained on (None: MNIST); `source`: its --data (a name or path), so that
    `nas evaluate` finds the test images without being told."""
    data = data or MNIST_INFO
    payload = {
        "format": FORMAT,
        "version": __version__,
        "code": spec.code,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics,
        "preprocessing": data.preprocessing(),  # absent from checkpoints written before it: they load all the same
    }
    if not data.is_mnist:  # checkpoints of MNIST models stay as they were
        payload.update({"class_labels": list(data.classes), "data": dict(data.identity)})
        if source is not None:
            payload["data_source"] = source
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], Spec, nn.Module]:
    """Our checkpoint -> (its dict, its spec, the model with its weights, on CPU, in eval mode).

    Anything else (another framework's file, a corrupt or missing file, a path that is not a regular file
    or is larger than CHECKPOINT_LIMIT, a spec too large to build, weights that do not fit the spec or are
    not finite) raises CheckpointError.
    """
    path = Path(path)
    try:
        # weights_only: a checkpoint is data (dicts, lists, numbers, tensors); never run code from a file
        with open_input(path, "checkpoint file", CHECKPOINT_LIMIT, CheckpointError) as f:
            payload = torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # zip, pickle and torch errors all mean the same: not a checkpoint we can read
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint written by nas retrain: torch.load cannot "
                              f"read it as tensors and plain data ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint written by nas retrain (format: {found!r})")
    try:
        spec = Spec.from_dict(payload["spec"])
    except (KeyError, SpecError, TypeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's spec is unusable ({exc})") from None
    check_buildable(spec, str(path), CheckpointError)  # by its count, before its weights are allocated
    model = build(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the checkpoint's spec ({first_line(exc, 160)})") from None
    # NaN or inf weights (or batch-norm statistics) predict one class for every image: not a model to measure
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"{path}: the weights are not finite (NaN or inf in {bad[0]}{more})")
    return payload, spec, model.eval()


def checkpoint_data(payload: dict[str, Any], path: Path) -> tuple[DataInfo, str | None]:
    """The data a checkpoint's model was trained on (its preprocessing, classes, identity) and its --data;
    a checkpoint written before these were stored: MNIST."""
    pre = payload.get("preprocessing")
    if not isinstance(pre, dict) or "data" not in payload:
        return MNIST_INFO, None
    try:
        listed = lambda v: tuple(float(x) for x in (v if isinstance(v, list) else [v]))  # noqa: E731
        info = DataInfo(dict(payload["data"]), int(pre["channels"]), int(pre["input_size"]),
                        tuple(payload.get("class_labels") or ()), listed(pre["mean"]), listed(pre["std"]),
                        pre.get("resize"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's preprocessing is unusable ({exc})") from None
    source = payload.get("data_source")
    return info, source if isinstance(source, str) else None


def checkpoint_source(payload: dict[str, Any], path: Path, data: str | None, data_dir: str | None,
                      download: bool = False) -> tuple[DataSource, DataInfo]:
    """The data to measure or calibrate a checkpoint's model on: `data` (--data), else what the checkpoint says it
    was trained on (a built-in set by name), prepared to its stored size and channels; with the DataInfo the
    checkpoint stores. A folder or .npz not named: UsageError (one line)."""
    trained_on, recorded = checkpoint_data(payload, path)
    builtin = trained_on.identity.get("name") if trained_on.identity.get("name") in BUILTIN else None
    name = data or recorded or builtin
    if name is None:
        raise UsageError(f"{path} was trained on {describe_data(trained_on.identity)}: pass --data with its folder "
                         "or .npz")
    return source_of(name, data_dir, image_size=trained_on.size, channels=trained_on.channels,
                     download=download), trained_on


def onnx_metadata(model: nn.Module, spec: Spec | None = None, params: int | None = None,
                  data: DataInfo | None = None) -> dict[str, str]:
    """The ONNX file's metadata_props (strings): the preprocessing, the class labels, the design, the code's version.

    `spec` and `params` when the caller has them (params is counted from the model otherwise); without a spec,
    `code` and `spec` are left out. `data`: what the model was trained on (None: MNIST); a mean and std per
    channel are JSON lists, one channel's a number, as MNIST's always were."""
    data = data or MNIST_INFO
    meta = {key: value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else str(value)
            for key, value in data.preprocessing().items()}
    meta["class_labels"] = json.dumps(list(data.classes))
    if not data.is_mnist:
        meta["data"] = json.dumps(data.identity, sort_keys=True)
    if spec is not None:
        meta["code"], meta["spec"] = spec.code, json.dumps(spec.to_dict(), sort_keys=True)
    meta["params"] = str(count_params(model) if params is None else params)
    meta.update({key: value or "unknown" for key, value in provenance().items()})  # commit: None outside a checkout
    return meta


def export_models(model: nn.Module, batch: torch.Tensor, out: Path, *, spec: Spec | None = None,
                  params: int | None = None, data: DataInfo | None = None) -> dict[str, float]:
    """Write model.pt2 and model.onnx for `model` (on CPU, eval mode), each checked against PyTorch on `batch`.

    Each is written under a temporary name and renamed into `out` only once it reproduces the
    logits; returns the max |logit difference| of each. Raises ExportCheckError otherwise. model.onnx
    carries `onnx_metadata(model, spec, params)` in its metadata_props, read back through onnxruntime.
    """
    model = model.cpu().eval()
    meta = onnx_metadata(model, spec, params, data)
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
        import onnx

        export_onnx(model, example, tmp)
        session = save_with_metadata(onnx.load(str(tmp)), tmp, meta, "ONNX")
        return torch.from_numpy(session.run(["logits"], {"images": batch.numpy()})[0])

    diffs = {}
    for name, what, write in ((EXPORT_FILE, "torch.export", write_pt2), (ONNX_FILE, "ONNX (onnxruntime)", write_onnx)):
        with atomic_path(out / name) as tmp:
            diffs[f"{Path(name).suffix[1:]}_max_abs_diff"] = _check_close(what, write(tmp), expected)
    return diffs


def export_onnx(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """`model` (CPU, eval mode) as one self-contained ONNX file (no external .data file), input `images`,
    output `logits`, the batch dimension left dynamic; no metadata, no check (export_models adds both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True,
                          external_data=False, verbose=False)


def _check_close(what: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    same_shape = got.shape == expected.shape
    diff = (got - expected).abs().max().item() if same_shape else math.inf
    if not same_shape or not torch.allclose(got, expected, atol=CHECK_ATOL, rtol=CHECK_RTOL):
        raise ExportCheckError(f"{what} logits differ from PyTorch's on {len(expected)} test images "
                               f"(max |diff| {diff:.3g}, shape {tuple(got.shape)} vs {tuple(expected.shape)}): not written")
    return diff


def save_with_metadata(proto: Any, path: Path, meta: dict[str, str], what: str) -> Any:
    """Save the ONNX model `proto` to `path` with `meta` as its only metadata_props, and open it in onnxruntime;
    ExportCheckError (naming `what`) unless onnxruntime reads back exactly `meta`. Returns the session."""
    import onnx
    import onnxruntime

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = session.get_modelmeta().custom_metadata_map
    if found != meta:
        missing = sorted(k for k in meta if found.get(k) != meta[k])
        raise ExportCheckError(f"{what} metadata read back by onnxruntime differs "
                               f"({', '.join(missing) or 'extra keys'}): not written")
    return session
