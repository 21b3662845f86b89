"""Compare int8 post-training quantisations of one checkpoint: onnxruntime's (what nas/quantize.py does) with
MinMax, Percentile and Entropy calibration, and torchao's PT2E flow (x86 quantizer) when torchao is importable.

    python benchmarks/int8_compare.py studies/retrain/b8000/seed0.pt [--calibration 1024]

Every variant calibrates on the same training images (nas.quantize.calibration_images) and is measured on the
10,000 test images; prints float and int8 test accuracy, the drop, the same-class share and the file's bytes.
torchao is not a dependency: `pip install --target DIR torchao` and PYTHONPATH=DIR to include it.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

from nas.checkpoint import export_onnx, load_checkpoint
from nas.data import load_train_test, resolve_data_dir
from nas.quantize import calibration_images, onnx_accuracy


def onnxruntime_variant(float_onnx: Path, out: Path, calibration: torch.Tensor, method: str) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter([{"images": calibration[i:i + 256].numpy()} for i in range(0, len(calibration), 256)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(float_onnx), str(prepared))
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def torchao_variant(model: torch.nn.Module, out: Path, calibration: torch.Tensor) -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    dims = ({0: torch.export.Dim("batch", min=1)},)
    program = torch.export.export(model, (calibration[:2],), dynamic_shapes=dims).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(program, quantizer)
    with torch.no_grad():
        for i in range(0, len(calibration), 256):
            prepared(calibration[i:i + 256])
    torch.onnx.export(convert_pt2e(prepared), (calibration[:2],), str(out), input_names=["images"],
                      output_names=["logits"], dynamic_shapes=dims, dynamo=True, external_data=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--calibration", type=int, default=1024, help="training images to calibrate on")
    p.add_argument("--data-dir")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    _, spec, model = load_checkpoint(Path(args.checkpoint))
    data = load_train_test(resolve_data_dir(args.data_dir), torch.device("cpu"))
    calibration = calibration_images(data.train.x, args.calibration)
    test = data.held_out
    with tempfile.TemporaryDirectory() as work:
        float_onnx = Path(work) / "model.onnx"
        export_onnx(model, (calibration[:2],), float_onnx)
        float_acc = onnx_accuracy(float_onnx, test.x, test.y)
        print(f"{spec.code}\nfloat: {float_acc:.2f} %  ({args.calibration} calibration images)")
        variants = {f"onnxruntime {m}": (lambda out, m=m: onnxruntime_variant(float_onnx, out, calibration, m))
                    for m in ("MinMax", "Percentile", "Entropy")}
        variants["torchao PT2E x86"] = lambda out: torchao_variant(model, out, calibration)
        for name, make in variants.items():
            out = Path(work) / f"{name.replace(' ', '_')}.onnx"
            try:
                make(out)
            except ImportError as exc:
                print(f"{name}: not run ({exc.name} is not installed)")
                continue
            acc = onnx_accuracy(out, test.x, test.y)
            print(f"{name}: int8 {acc:.2f} %, drop {float_acc - acc:.2f} points, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
