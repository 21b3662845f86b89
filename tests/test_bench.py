"""The benchmark and the trainer's speed settings (CPU-safe parts of the GPU path included)."""

import dataclasses
import json
import re

import pytest
import torch
from torch import nn

import nas.train
from nas.bench import baseline
from nas.bench.ablation import parse_speed
from nas.bench.baseline import usual_datasets, usual_train
from nas.bench.command import DEFAULT_SPEC
from nas.bundled import reference_files
from nas.cost import count_params
from nas.data import Split, Splits, load_search_data
from nas.errors import UsageError
from nas.model import build
from nas.spec import load_spec
from nas.train import FastDropout, Speed, evaluate, speed_for, train

from conftest import one_line_error, run_cli

FINAL = reference_files()[-1]  # the classic design (7,416 parameters), as bundled
CLASSIC = DEFAULT_SPEC  # that design as the benchmark trains it (test_default_spec_is_the_classic_design)

QUICK = dataclasses.replace(CLASSIC, train=dataclasses.replace(CLASSIC.train, optimizer="adamw", lr=0.01,
                                                               schedule="constant", batch_size=32))


@pytest.mark.slow  # the benchmark in its own process, both pipelines
def test_bench_runs_both_pipelines_and_ends_with_the_ratio(tmp_path):
    result = run_cli("nas.bench", "--device", "cpu", "--epochs", "1", "--subset", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio \d+\.\d\d", lines[-1]), lines[-1]
    for name in ("(a) nas.train", "(b) DataLoader"):
        line = next(line for line in lines if line.startswith(name))
        assert re.search(r"[\d,]+ img/s .* s/epoch .*val \d+\.\d\d %.*peak RSS [\d,]+ MB", line), line
    assert lines[0].startswith("nas.bench on CPU: ") and "device cpu" in lines[0], lines[0]
    assert "256 training / 5,000 validation images" in result.stdout
    assert DEFAULT_SPEC.code in result.stdout and "7,416 params" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--speed", "warp=1"], "unknown setting 'warp'"),
    (["--spec", "no/such/spec.json"], "no such spec file"),
    (["--epochs", "0"], "positive integer"),
])
def test_bench_bad_input_is_one_line(tmp_path, cli, args, message):
    line = one_line_error(cli("bench", "--device", "cpu", *args, cwd=tmp_path))
    assert line.startswith("nas bench: error: ") and message in line, line


def test_default_spec_is_the_classic_design():
    """The benchmark's own copy (fixed in nas.bench, so that it does not move with the bundled files) is the
    bundled reference design, trained with a weight decay of 1e-4 (the reference file's is 0)."""
    final = load_spec(FINAL)
    assert DEFAULT_SPEC.arch == final.arch
    assert DEFAULT_SPEC.train == dataclasses.replace(final.train, weight_decay=1e-4)
    assert count_params(build(DEFAULT_SPEC)) == json.loads(FINAL.read_text())["params"] == 7416


def test_speed_overrides():
    base = speed_for("cpu")
    assert parse_speed("", base) == base
    changed = parse_speed("channels_last=0, amp=bf16,compile=on", base)
    assert changed == dataclasses.replace(base, channels_last=False, amp=torch.bfloat16, compile=True)
    with pytest.raises(UsageError, match="0 or 1"):
        parse_speed("channels_last=maybe", base)
    with pytest.raises(UsageError, match="amp must be one of none, bf16, fp16"):
        parse_speed("amp=fp8", base)


def _effects(speed: Speed, data: Splits) -> dict:
    """What `train` does with `speed`, seen from inside a one-epoch training on the CPU: the model's layout
    and dropout modules while it trains, the dtype its logits come out in, the optimizer's kernel, and
    whether it tuned the heap or compiled the model."""
    seen = {"layout": set(), "logits": set(), "reuse_memory": False, "compiled": False}
    models, optimizers = [], []
    make_optimizer = nas.train.make_optimizer

    def build_and_watch(spec):
        models.append(build(spec))
        models[-1].register_forward_hook(lambda m, i, out: seen["logits"].add(out.dtype) if m.training else None)
        return models[-1]

    def during_training(_):  # called at the end of each epoch, before the model is put back to plain
        # conv kernels with more than one input channel and pixel: the only ones whose layouts differ
        kernels = {p.is_contiguous() for p in models[-1].parameters() if p.dim() == 4 and min(p.shape[1:]) > 1}
        seen["layout"] = {"contiguous" if k else "channels_last" for k in kernels}
        seen["dropout"] = {type(m) for m in models[-1].modules() if isinstance(m, nn.Dropout)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.train, "build", build_and_watch)
        mp.setattr(nas.train, "make_optimizer",
                   lambda *a, **k: optimizers.append(make_optimizer(*a, **k)) or optimizers[-1])
        mp.setattr(nas.train, "_reuse_freed_memory", lambda: seen.update(reuse_memory=True))
        mp.setattr(torch, "compile", lambda model, **_: seen.update(compiled=True) or model)
        train(CLASSIC, data, epochs=1, seed=0, on_epoch=during_training, speed=speed)
    seen["fused"] = bool(optimizers[-1].defaults.get("fused"))
    return seen


def test_speed_settings_per_device(small_data):
    data = Splits(Split(small_data.train.x[:128], small_data.train.y[:128]),
                  Split(small_data.held_out.x[:64], small_data.held_out.y[:64]))
    plain = _effects(Speed(), data)  # the plain loop: none of the measures
    assert plain == {"layout": {"contiguous"}, "logits": {torch.float32}, "reuse_memory": False, "compiled": False,
                     "dropout": {nn.Dropout}, "fused": False}
    # the CPU: NHWC activations, the cheaper dropout, the fused optimizer step and the heap kept;
    # float32 and no torch.compile (both measured slower on this CPU)
    cpu = _effects(speed_for(torch.device("cpu")), data)
    assert cpu == {"layout": {"channels_last"}, "logits": {torch.float32}, "reuse_memory": True, "compiled": False,
                   "dropout": {FastDropout}, "fused": True}
    assert _effects(speed_for("cpu", compile=True), data)["compiled"]
    # a GPU (decided without one, run here on the CPU): bf16 autocast where the GPU has it, else float32;
    # CUDA's own dropout kernel (already fused) and allocator; NHWC and the fused step as on the CPU
    gpu = _effects(speed_for("cuda", bf16=True), data)
    assert gpu == {"layout": {"channels_last"}, "logits": {torch.bfloat16}, "reuse_memory": False, "compiled": False,
                   "dropout": {nn.Dropout}, "fused": True}
    assert _effects(speed_for("cuda", bf16=False), data)["logits"] == {torch.float32}  # pre-Ampere
    # its own CUDA stream, so that concurrent trials overlap: CUDA only, nothing to see on a CPU
    assert speed_for("cuda", bf16=True).side_stream and not speed_for("cpu").side_stream


def test_a_one_channel_image_reaches_a_first_1x1_conv_in_channels_last(small_data):
    """A 1-channel batch has the same bytes in either order, and `contiguous(memory_format=channels_last)` keeps
    its NCHW strides, from which a 1x1 conv chose NCHW for its output. The trainer gives it channels-last strides
    (no copy), so a design opening with a 1x1 conv trains channels-last from its first layer."""
    x = small_data.train.x[:8]
    assert x.shape[1] == 1 and x.contiguous(memory_format=torch.channels_last).stride(1) != 1  # the trap
    cl = nas.train.channels_last(x)
    assert cl.stride(1) == 1 and cl.data_ptr() == x.data_ptr() and torch.equal(cl, x)
    rgb = torch.rand(2, 3, 5, 5)
    assert nas.train.channels_last(rgb).is_contiguous(memory_format=torch.channels_last)
    opening = dataclasses.replace(CLASSIC.arch, kinds=(("conv1",) + CLASSIC.arch.kinds[0][1:], *CLASSIC.arch.kinds[1:]))
    spec = dataclasses.replace(CLASSIC, arch=opening)
    layouts = set()

    def build_and_watch(s):
        model = build(s)
        model[0].register_forward_hook(  # the 1x1 conv: channels-last strides have the channel stride 1
            lambda m, i, out: layouts.add("channels_last" if out.stride(1) == 1 else "NCHW") if m.training else None)
        return model

    data = Splits(Split(small_data.train.x[:128], small_data.train.y[:128]),
                  Split(small_data.held_out.x[:64], small_data.held_out.y[:64]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.train, "build", build_and_watch)
        train(spec, data, epochs=1, seed=0, speed=speed_for("cpu"))
    assert layouts == {"channels_last"}


def test_fast_dropout_has_dropouts_distribution_and_layout():
    torch.manual_seed(0)
    x = torch.rand(64, 16, 24, 24) + 1  # strictly positive, so a zero means dropped
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.contiguous(memory_format=layout)
        y = FastDropout(0.05)(xi)
        kept = y != 0
        assert abs(kept.float().mean().item() - 0.95) < 0.003
        assert torch.allclose(y[kept], xi[kept] / 0.95)
        assert y.is_contiguous(memory_format=layout)
        # dropped positions are independent of the layout: channels differ in what they drop
        assert not torch.equal(kept[:, 0], kept[:, 1])
    assert torch.equal(FastDropout(0.05).eval()(x), x)
    torch.manual_seed(1)
    a = FastDropout(0.3)(x)
    torch.manual_seed(1)
    assert torch.equal(a, FastDropout(0.3)(x))  # the seeded global generator: deterministic


@pytest.fixture(scope="module")
def data_4k(data_dir):
    return load_search_data(data_dir, torch.device("cpu"), subset=4096)


@pytest.mark.slow  # four trainings on 4,096 images: about 7 s on 2 cores
def test_fast_and_plain_trainers_learn_alike(data_4k):
    """The fast settings change rounding and random streams, not what is learned.

    They cannot agree bit for bit: FastDropout draws other random numbers (and, made from torch's
    generator, shifts the order and augmentation after it). On 512 images the final accuracy is so
    unsettled (~55 %) that rounding alone moved it 4.5 points, so this trains 4,096 images for 2
    epochs down a one-cycle schedule: over seeds 0-9 the difference was -0.50 to +0.98 points
    (mean |difference| 0.35) at 92.5-95.2 %.
    """
    quick = dataclasses.replace(QUICK, train=dataclasses.replace(QUICK.train, schedule="onecycle", batch_size=64))
    fast = train(quick, data_4k, epochs=2, seed=0, speed=speed_for("cpu"))
    plain = train(quick, data_4k, epochs=2, seed=0, speed=Speed())
    assert fast.final_acc > 90 and plain.final_acc > 90
    assert abs(fast.final_acc - plain.final_acc) < 2.0


def test_fast_trainer_is_deterministic_for_a_seed(small_data):
    """The ablation compares variants on one seed: the same seed must give the very same model."""
    a = train(CLASSIC, small_data, epochs=1, seed=3, speed=speed_for("cpu"))
    b = train(CLASSIC, small_data, epochs=1, seed=3, speed=speed_for("cpu"))
    assert a.history[0].train_loss == b.history[0].train_loss and a.final_acc == b.final_acc
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # BN's running stats included


def test_trained_model_is_plain_build_output(small_data):
    result = train(CLASSIC, small_data, epochs=1, seed=0)  # default: speed_for(cpu)
    model = result.model
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert any(type(m) is nn.Dropout for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())
    fresh = build(CLASSIC)
    fresh.load_state_dict(model.state_dict())
    acc = evaluate(model, small_data.held_out)
    assert evaluate(fresh, small_data.held_out) == acc
    assert abs(acc - result.final_acc) <= 0.1  # measured in channels_last during training: last-bit differences


@pytest.mark.slow  # two epochs of bf16 autocast on the CPU: about 10 s on 2 cores
def test_gpu_code_path_runs_on_cpu(small_data):
    """bf16 autocast and the side-stream switch, as a GPU would use them, on the CPU."""
    speed = dataclasses.replace(speed_for("cuda", bf16=True), fast_dropout=True)
    result = train(QUICK, small_data, epochs=2, seed=0, speed=speed)
    assert result.history[0].seconds > 0
    assert result.history[1].train_loss < result.history[0].train_loss  # it learns under bf16
    # the bf16 evaluation counts (nearly) the same images right as float32 does
    assert abs(evaluate(result.model, small_data.held_out, amp=torch.bfloat16)
               - evaluate(result.model, small_data.held_out)) <= 1.0


def test_usual_pipeline_uses_the_same_images(data_dir, small_data):
    train_set, val_set = usual_datasets(data_dir, CLASSIC, subset=len(small_data.train))
    assert len(train_set) == len(small_data.train) and len(val_set) == len(small_data.held_out)
    assert [y for _, y in train_set] == small_data.train.y.tolist()
    images, labels = zip(*val_set)  # no augmentation on the validation side: the same tensors
    assert list(labels) == small_data.held_out.y.tolist()
    assert torch.equal(torch.stack(images), small_data.held_out.x)


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_usual_pipeline_measures_accuracy_as_the_trainer_does(data_dir, small_data, monkeypatch):
    models = []

    def build_and_keep(spec):
        models.append(build(spec))
        return models[-1]

    monkeypatch.setattr(baseline, "build", build_and_keep)  # to measure (b)'s model ourselves
    train_set, val_set = usual_datasets(data_dir, QUICK, subset=256)
    train_seconds, wall_seconds, acc = usual_train(QUICK, train_set, val_set, torch.device("cpu"), epochs=2, seed=0)
    assert len(train_seconds) == len(wall_seconds) == 2
    assert all(0 < t < w for t, w in zip(train_seconds, wall_seconds))
    assert acc == evaluate(models[0], small_data.held_out)  # the same 5,000 images, counted the same way
