"""The benchmark, the trainer's speed settings (CPU-safe parts of the GPU path included) and --jobs."""

import dataclasses
import json
import re

import optuna
import pytest
import torch
from torch import nn

from nas.bench import DEFAULT_SPEC, parse_speed
from nas.cli import UsageError
from nas.model import build
from nas.train import FastDropout, Speed, evaluate, speed_for, train

from conftest import ROOT, run_cli
from test_spec import CLASSIC

TINY = str(ROOT / "search_spaces" / "mnist_tiny.yaml")
QUICK = dataclasses.replace(CLASSIC, train=dataclasses.replace(CLASSIC.train, optimizer="adamw", lr=0.01,
                                                               schedule="constant", batch_size=32))


def test_bench_runs_both_pipelines_and_ends_with_the_ratio(tmp_path):
    result = run_cli("nas.bench", "--device", "cpu", "--epochs", "1", "--subset", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio \d+\.\d\d", lines[-1]), lines[-1]
    for name in ("(a) nas.train", "(b) DataLoader"):
        line = next(line for line in lines if line.startswith(name))
        assert re.search(r"[\d,]+ img/s .* s/epoch .*val \d+\.\d\d %.*peak RSS [\d,]+ MB", line), line
    assert "256 training / 5,000 validation images" in result.stdout
    assert DEFAULT_SPEC.code in result.stdout and "7,416 params" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--speed", "warp=1"], "unknown setting 'warp'"),
    (["--spec", "no/such/spec.json"], "no such spec file"),
    (["--epochs", "0"], "positive integer"),
])
def test_bench_bad_input_is_one_line(tmp_path, args, message):
    result = run_cli("nas.bench", "--device", "cpu", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_default_spec_is_the_classic_design():
    assert DEFAULT_SPEC == CLASSIC


def test_speed_overrides():
    base = speed_for("cpu")
    assert parse_speed("", base) == base
    changed = parse_speed("channels_last=0, amp=bf16,compile=on", base)
    assert changed == dataclasses.replace(base, channels_last=False, amp=torch.bfloat16, compile=True)
    with pytest.raises(UsageError, match="0 or 1"):
        parse_speed("channels_last=maybe", base)


def test_speed_settings_per_device():
    cpu = speed_for(torch.device("cpu"))
    assert cpu.channels_last and cpu.fast_dropout and cpu.fused_optimizer and cpu.reuse_memory
    assert cpu.amp is None and not cpu.compile and not cpu.side_stream  # measured slower on this CPU
    gpu = speed_for("cuda", bf16=True)  # no GPU needed to decide
    assert gpu.amp == torch.bfloat16 and gpu.channels_last and gpu.side_stream and gpu.fused_optimizer
    assert not gpu.fast_dropout and not gpu.reuse_memory  # CUDA's dropout kernel is already fused
    assert speed_for("cuda", bf16=False).amp is None  # pre-Ampere GPUs: float32
    assert speed_for("cpu", compile=True).compile
    assert Speed() == Speed(channels_last=False, amp=None, fast_dropout=False, fused_optimizer=False)


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


def test_fast_and_plain_trainers_learn_alike(small_data):
    fast = train(QUICK, small_data, epochs=3, seed=0, speed=speed_for("cpu"))
    plain = train(QUICK, small_data, epochs=3, seed=0, speed=Speed())
    assert fast.final_acc > 50 and plain.final_acc > 50  # 512 images, 48 steps: well above chance
    assert abs(fast.final_acc - plain.final_acc) < 15


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


def test_gpu_code_path_runs_on_cpu(small_data):
    """bf16 autocast and the side-stream switch, as a GPU would use them, on the CPU."""
    speed = dataclasses.replace(speed_for("cuda", bf16=True), fast_dropout=True)
    result = train(CLASSIC, small_data, epochs=1, seed=0, speed=speed)
    assert 0 <= result.final_acc <= 100 and result.history[0].seconds > 0
    assert 0 <= evaluate(result.model, small_data.held_out, amp=torch.bfloat16) <= 100


def test_search_with_two_jobs_runs_every_trial(tmp_path):
    result = run_cli("nas.search", "--budget", "3000", "--space", TINY, "--trials", "4", "--epochs", "1",
                     "--subset", "128", "--device", "cpu", "--jobs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "this run: 4 trials" in result.stdout
    db = tmp_path / "studies" / "mnist-tiny-b3000.db"
    study = optuna.load_study(study_name="mnist-tiny-b3000", storage=f"sqlite:///{db}")
    assert len(study.trials) == 4 and all(t.state.is_finished() for t in study.trials)
    assert {t.user_attrs["outcome"] for t in study.trials} <= {"complete", "pruned", "rejected", "diverged"}
    if study.best_trials:
        best = json.loads((tmp_path / "studies" / "mnist-tiny-b3000" / "best.json").read_text())
        assert best["trial"] == study.best_trial.number and best["val_acc"] == study.best_value
