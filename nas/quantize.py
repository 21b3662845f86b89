"""int8: post-training static quantisation of a float ONNX model, calibrated on training images, and its check.

float model.onnx -> onnxruntime's pre-processing (shape inference, graph clean-up) -> `quantize_static`: QDQ
format (QuantizeLinear/DequantizeLinear pairs, what onnxruntime and ST Edge AI load), int8 weights per output
channel (symmetric), int8 activations per tensor (asymmetric), ranges by MinMax over CALIBRATION_IMAGES
training images -> model.int8.onnx. The file is kept only if onnxruntime's int8 run agrees with `FakeQuant`:
the same graph run in PyTorch in float, every weight and activation rounded to the graph's scales and zero points.

On an x86 CPU without VNNI (AVX2 only, e.g. AMD Zen 2), onnxruntime's integer kernels multiply in pairs
summed into int16, which saturates with 8-bit weights (its documentation: use reduce_range there); the check then
fails by tens of steps. A file that fails it is quantised again with 7-bit weights (`reduce_range`), which those
kernels run exactly, and kept if that passes; its metadata and the check's numbers say so.

The calibration images are the caller's: always training images, never test images (nas retrain passes
its training split; the test files are opened only to measure accuracy afterwards).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DataInfo
from .errors import ExportCheckError
from .files import atomic_path

INT8_ONNX_FILE = "model.int8.onnx"
CALIBRATION_IMAGES = 1024  # a fixed number, so a calibration costs the same whatever the training set's size
_BATCH = 256  # images per onnxruntime call, for calibration and for accuracy
CHECK_IMAGES = 256  # images the int8 file is checked on against the fake-quantised model
# int8 vs its fake-quantised run: onnxruntime's integer kernels round each requantised output to its step and may
# round a value that sits on a step's edge the other way; such a one-step difference in an early layer reaches
# the logits through the layers after it. A few steps of the logits' own scale covers that; a wrong scale, zero
# point, layer or rounding mode is tens of steps off (or worse).
LOGIT_STEPS = 4
# what retrain and export print when a file had to be made with 7-bit weights (see the module's docstring)
SEVEN_BIT_WEIGHTS = "int8 weights in 7 bits (reduce_range): this CPU's onnxruntime int8 kernels saturate on 8 (no VNNI)"
MIN_ARGMAX_AGREEMENT = 0.99  # share of images whose predicted class is the same in both
_QRANGE = {2: (0, 255), 3: (-128, 127), 6: (-2**31, 2**31 - 1)}  # ONNX TensorProto uint8, int8, int32


def calibration_images(train_x: torch.Tensor, n: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """`n` training images spread evenly over `train_x` (all of them when it holds fewer): a fixed choice,
    so the same model always quantises to the same file."""
    step = max(1, len(train_x) // n)
    return train_x[::step][:n].detach().cpu().contiguous()


def describe(images: int, weight_bits: int = 8) -> str:
    """What the int8 file's metadata says about how it was made."""
    import onnxruntime

    weights = "weights int8" if weight_bits == 8 else f"weights int8 in {weight_bits} bits (reduce_range)"
    return (f"int8 post-training static quantisation (onnxruntime {onnxruntime.__version__} quantize_static): "
            f"QDQ, {weights} per channel symmetric, activations int8 per tensor, "
            f"MinMax over {images} training images")


def quantize_onnx(float_onnx: Path, calibration: torch.Tensor, out: Path, check: torch.Tensor) -> dict[str, float]:
    """Quantise the float ONNX model `float_onnx` into `out` (int8, QDQ), calibrated on `calibration` (training
    images), and check it on the images `check`: onnxruntime's int8 logits against `FakeQuant` of the written
    graph. `out` carries the float model's metadata (the preprocessing, labels, spec...) plus `quantization`, read
    back through onnxruntime.

    Written under a temporary name, renamed into place only when it passes; returns the check's numbers
    (max |logit difference|, its bound, argmax agreement) and the file's size. Raises ExportCheckError otherwise.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .checkpoint import save_with_metadata

    float_metadata = {p.key: p.value for p in onnx.load(str(float_onnx)).metadata_props}
    batches = [{"images": calibration[i:i + _BATCH].numpy()} for i in range(0, len(calibration), _BATCH)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.left, None)

    def quantize(prepared: Path, tmp: Path, weight_bits: int) -> dict[str, float]:
        quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=weight_bits == 7, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        proto = onnx.load(str(tmp))
        _strip_debug_info(proto)
        metadata = float_metadata | {"quantization": describe(len(calibration), weight_bits)}
        session = save_with_metadata(proto, tmp, metadata, "int8 ONNX")
        return check_int8(session, FakeQuant(proto), check) | {"int8_weight_bits": weight_bits}

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as work, atomic_path(out) as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared))
        try:
            result = quantize(prepared, tmp, 8)
        except ExportCheckError:  # a CPU whose kernels saturate on 8-bit weights (see above), or a real fault
            result = quantize(prepared, tmp, 7)
        result["int8_onnx_bytes"] = tmp.stat().st_size
    return result


def int8_accuracy(model: nn.Module, calibration: torch.Tensor, check: torch.Tensor, images: torch.Tensor,
                  labels: torch.Tensor) -> tuple[float, dict[str, float]]:
    """The accuracy in % on (images, labels) of `model` quantised as `quantize_onnx` does (float ONNX export,
    calibration on `calibration`, the check on `check`), in temporary files; and the check's numbers."""
    from .checkpoint import export_onnx

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as work:
        float_onnx, int8_onnx = Path(work) / "model.onnx", Path(work) / INT8_ONNX_FILE
        export_onnx(model.cpu().eval(), (check[:2].cpu().clone(),), float_onnx)
        checks = quantize_onnx(float_onnx, calibration, int8_onnx, check)
        return onnx_accuracy(int8_onnx, images, labels), checks


def export_checkpoint(checkpoint: Path, out: Path, train_x: torch.Tensor, data: DataInfo | None = None
                      ) -> dict[str, float]:
    """A checkpoint written by nas retrain (any version) -> `out`/ model.onnx, model.pt2 (export_models) and
    model.int8.onnx, calibrated on `train_x` (training images, as nas retrain's are) and checked on training images
    beside them: the test set is not needed. `data`: what the model was trained on (its preprocessing, for the
    files' metadata; None: MNIST). Returns the checks' numbers; CheckpointError for a file that is not
    such a checkpoint, ExportCheckError for an export that fails its check."""
    from .checkpoint import ONNX_FILE, export_models, load_checkpoint
    from .cost import count_params

    _, spec, model = load_checkpoint(checkpoint)
    calibration = calibration_images(train_x)
    # odd indices when the step is even (as for 60,000 images): none of them is a calibration image
    check = train_x[1::max(1, len(train_x) // CHECK_IMAGES)][:CHECK_IMAGES].cpu()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        checks = export_models(model, check, out, spec=spec, params=count_params(model), data=data)
        return checks | quantize_onnx(out / ONNX_FILE, calibration, out / INT8_ONNX_FILE, check)
    finally:  # a failed check: leave no empty folder
        if created and not any(out.iterdir()):
            out.rmdir()


def _strip_debug_info(proto) -> None:
    """Drop the exporter's per-node stack traces and doc strings: they do not change what the model computes and
    were about 40 % of the file's bytes (25 of 59 KB for the 7,948-parameter found/b8000)."""
    proto.graph.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]


def run_onnx(session, images: torch.Tensor) -> torch.Tensor:
    """Logits of an onnxruntime session for `images`, in batches."""
    name = session.get_inputs()[0].name
    x = images.detach().cpu().numpy()
    return torch.from_numpy(np.concatenate([session.run(None, {name: x[i:i + _BATCH]})[0]
                                            for i in range(0, len(x), _BATCH)]))


def onnx_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in % of the ONNX model at `path`, run by onnxruntime on (images, labels)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = run_onnx(session, images).argmax(1)
    return 100.0 * (predicted == labels.cpu()).sum().item() / len(labels)


def check_int8(session, fake: FakeQuant, images: torch.Tensor) -> dict[str, float]:
    """onnxruntime's int8 logits against the fake-quantised model's on `images`: within LOGIT_STEPS steps of the
    logits' scale everywhere and the same class for at least MIN_ARGMAX_AGREEMENT of the images."""
    got = run_onnx(session, images)
    with torch.no_grad():
        expected = fake(images.detach().cpu().float())
    if got.shape != expected.shape:
        raise ExportCheckError(f"int8 ONNX logits have shape {tuple(got.shape)}, not {tuple(expected.shape)}: "
                               "not written")
    diff = (got - expected).abs().max().item()
    bound = LOGIT_STEPS * fake.output_step
    agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
    if not diff <= bound or agreement < MIN_ARGMAX_AGREEMENT:
        raise ExportCheckError(f"int8 ONNX (onnxruntime) differs from the fake-quantised model on {len(images)} "
                               f"images (max |logit diff| {diff:.3g}, bound {bound:.3g}; same class for "
                               f"{100 * agreement:.1f} %): not written")
    return {"int8_max_abs_diff": diff, "int8_diff_bound": bound, "int8_argmax_agreement": agreement,
            "int8_check_images": len(images)}


class FakeQuant(nn.Module):
    """A QDQ ONNX graph run by PyTorch in float: the fake-quantised model.

    Every QuantizeLinear is round-half-to-even to its integer grid and clamp (ONNX's definition), every
    DequantizeLinear maps back with the same scale and zero point; the weights are the graph's int8 values times
    their per-channel scales, the biases its int32 values times theirs. Between them, the float ops of the graph
    (convolution, pooling, activations, matrix products) in torch. Run on a float graph without QDQ nodes it is
    the float model, which the tests check against the PyTorch module it was exported from.
    """

    def __init__(self, proto) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = proto.graph
        self.nodes = list(graph.node)
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.consts: dict[str, torch.Tensor] = {}
        self.qtypes: dict[str, int] = {}  # initializer name -> ONNX element type (for the integer range)
        for init in graph.initializer:
            self.consts[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
            self.qtypes[init.name] = init.data_type
        for node in self.nodes:
            known = node.op_type in _OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant")
            if not known or node.domain not in ("", "ai.onnx"):
                raise ExportCheckError(f"the int8 check cannot run ONNX op {node.domain or 'ai.onnx'}.{node.op_type}: "
                                       "not written")
        # the logits' step: the scale of the last DequantizeLinear, if the output is one (else: float logits)
        last = next((n for n in self.nodes if self.output_name in n.output), None)
        self.output_step = (float(self.consts[last.input[1]].max()) if last is not None
                            and last.op_type == "DequantizeLinear" else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {**{k: v for k, v in self.consts.items()}, self.input_name: x}
        for node in self.nodes:
            attrs = _attributes(node)
            ins = [values[name] if name else None for name in node.input]
            if node.op_type == "Constant":
                out = attrs["value"]
            elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                out = self._qdq(node, ins, attrs)
            else:
                out = _OPS[node.op_type](ins, attrs)
            values[node.output[0]] = out
        return values[self.output_name]

    def _qdq(self, node, ins: list, attrs: dict) -> torch.Tensor:
        x, scale = ins[0], ins[1].double()
        zero = ins[2].double() if len(ins) > 2 and ins[2] is not None else torch.zeros_like(scale)
        if scale.dim() == 1:  # per axis: broadcast along `axis`
            axis = attrs.get("axis", 1) % x.dim()
            shape = [1] * x.dim()
            shape[axis] = -1
            scale, zero = scale.view(shape), zero.view(shape)
        if node.op_type == "QuantizeLinear":
            lo, hi = _QRANGE[self.qtypes.get(node.input[2], 2) if len(node.input) > 2 else 2]
            return torch.clamp(torch.round(x.double() / scale) + zero, lo, hi)  # torch.round: half to even
        return ((x.double() - zero) * scale).float()


def _attributes(node) -> dict:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name == "value":
            value = torch.from_numpy(numpy_helper.to_array(value).copy())
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _pads(attrs: dict, dims: int) -> tuple[list[int], list[int] | None]:
    """ONNX pads (begin..., end...) -> torch's symmetric padding, or an explicit F.pad list when they differ."""
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ExportCheckError(f"the int8 check cannot run auto_pad={attrs['auto_pad']}: not written")
    pads = list(attrs.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    if begin == end:
        return begin, None
    return [0] * dims, [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _conv(ins: list, attrs: dict) -> torch.Tensor:
    x, w = ins[0], ins[1].float()
    b = ins[2].float() if len(ins) > 2 and ins[2] is not None else None
    padding, explicit = _pads(attrs, w.dim() - 2)
    if explicit is not None:
        x = F.pad(x, explicit)
    return F.conv2d(x, w, b, stride=attrs.get("strides", 1), padding=padding, dilation=attrs.get("dilations", 1),
                    groups=attrs.get("group", 1))


def _max_pool(ins: list, attrs: dict) -> torch.Tensor:
    kernel = attrs["kernel_shape"]
    padding, explicit = _pads(attrs, len(kernel))
    x = F.pad(ins[0], explicit, value=-math.inf) if explicit is not None else ins[0]
    return F.max_pool2d(x, kernel, stride=attrs.get("strides", kernel), padding=padding,
                        dilation=attrs.get("dilations", 1), ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _average_pool(ins: list, attrs: dict) -> torch.Tensor:
    kernel = attrs["kernel_shape"]
    padding, explicit = _pads(attrs, len(kernel))
    if explicit is not None:
        raise ExportCheckError("the int8 check cannot run an AveragePool with uneven padding: not written")
    return F.avg_pool2d(ins[0], kernel, stride=attrs.get("strides", kernel), padding=padding,
                        ceil_mode=bool(attrs.get("ceil_mode", 0)),
                        count_include_pad=bool(attrs.get("count_include_pad", 0)))


def _reduce_mean(ins: list, attrs: dict) -> torch.Tensor:
    axes = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
    if axes is None:
        axes = list(range(ins[0].dim()))
    return ins[0].mean(dim=[int(a) for a in axes], keepdim=bool(attrs.get("keepdims", 1)))


def _reshape(ins: list, attrs: dict) -> torch.Tensor:
    x, shape = ins[0], [int(s) for s in ins[1].tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _gemm(ins: list, attrs: dict) -> torch.Tensor:
    a, b = ins[0], ins[1].float()
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        out = out + attrs.get("beta", 1.0) * ins[2].float()
    return out


_OPS = {
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda ins, attrs: ins[0].mean(dim=(2, 3), keepdim=True),
    "ReduceMean": _reduce_mean,
    "Reshape": _reshape,
    "Flatten": lambda ins, attrs: ins[0].reshape(math.prod(ins[0].shape[:attrs.get("axis", 1) % (ins[0].dim() + 1)]),
                                                 -1),
    "Gemm": _gemm,
    "MatMul": lambda ins, attrs: ins[0] @ ins[1].float(),
    "Add": lambda ins, attrs: ins[0] + ins[1].float(),
    "Mul": lambda ins, attrs: ins[0] * ins[1].float(),
    "Sigmoid": lambda ins, attrs: torch.sigmoid(ins[0]),
    "Relu": lambda ins, attrs: F.relu(ins[0]),
    "LeakyRelu": lambda ins, attrs: F.leaky_relu(ins[0], attrs.get("alpha", 0.01)),
    "PRelu": lambda ins, attrs: torch.where(ins[0] >= 0, ins[0], ins[0] * ins[1].float()),
    "Identity": lambda ins, attrs: ins[0],
}
