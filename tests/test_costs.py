"""The costs the device budgets gate on: the peak-RAM formula against a measurement of the tensors that are
really alive during an inference, the analytic MAC count against fvcore's, the flash formula by hand, and the
sizes the budget flags accept."""

import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from nas.bundled import reference_files
from nas.cost import (FLOAT32, INT8, Budgets, Costs, constraints, costs, count_macs, count_params, flash_int8,
                      layers, over_budget, parse_size, peak_ram, spec_costs, spec_macs)
from nas.model import build
from nas.space import load_space
from nas.spec import Arch, Spec, Train, load_spec

TRAIN = Train(optimizer="sgd", lr=0.05, schedule="onecycle", batch_size=128, label_smoothing=0.0, weight_decay=0.0)


def arch(stages, kinds=(), **kw) -> Spec:
    settings = dict(transition="pool", transition_width=0, padding="valid", head="gap_conv", batch_norm=True,
                    dropout=0.0)
    settings.update(kw)
    return Spec(Arch(stages=stages, kinds=kinds, **settings), TRAIN)


SHAPES = {  # one of each shape the formula must get right
    "separable": arch(((8, 16),), (("conv3", "sep3"),), padding="same"),
    "1x1 blocks and a 1x1 transition": arch(((4, 12), (24,)), (("conv1", "conv1"), ("conv1",)),
                                            transition="1x1_pool", transition_width=6),
    "pooled, pool then 1x1": arch(((8,), (16, 16), (10,)), transition="pool_1x1", transition_width=20),
    "gap_linear head, leaky ReLU, dropout": arch(((6, 10),), head="gap_linear", activation="leaky_relu",
                                                 dropout=0.1),
    "gap_mlp head, SiLU, no batch norm": arch(((8,), (12,)), head="gap_mlp", head_width=16, activation="silu",
                                              batch_norm=False),
    "flatten_linear head": arch(((4,), (8,)), head="flatten_linear"),
    "an expanding 1x1 after a wide map": arch(((2, 32),), (("conv3", "conv1"),)),
    "three-channel 32 px input": arch(((6,),), in_channels=3, input_size=32, num_classes=100),
    "PReLU (not in place: a buffer of its own)": arch(((4, 8),), (("sep3", "conv3"),), activation="prelu"),
}
BUNDLED = {p.stem: load_spec(p) for p in reference_files()} | {f"found/{n}": load_spec(f"found/{n}")
                                                                for n in ("b8000", "b4000", "b2000")}


def deployed(spec: Spec) -> list[nn.Module]:
    """build(spec) as an int8 runtime executes it: each batch norm folded into the conv before it (the conv
    takes its place, the batch norm becomes the identity), dropout the identity (eval mode)."""
    modules = list(build(spec).eval())
    for i, m in enumerate(modules):
        if isinstance(m, nn.BatchNorm2d):
            modules[i - 1], modules[i] = fuse_conv_bn_eval(modules[i - 1], m), nn.Identity()
        elif isinstance(m, nn.Dropout):
            modules[i] = nn.Identity()
    return modules


def measured_peak(spec: Spec) -> int:
    """The most activation bytes alive at once when the layers run one after another at batch 1, each tensor
    freed once nothing refers to it: every tensor's storage is tracked with a weak reference, and a forward
    hook sums the storages alive right after each module wrote its output (its input is still alive then).
    A view (Flatten) or an in-place result (ReLU(inplace=True), Identity) shares its input's storage and adds
    nothing; a new tensor adds its bytes."""
    alive: dict[int, tuple[int, set[int]]] = {}  # storage address -> (bytes, ids of the tensors using it)

    def track(t: torch.Tensor) -> None:
        ptr = t.untyped_storage().data_ptr()
        nbytes, users = alive.setdefault(ptr, (t.untyped_storage().nbytes(), set()))
        if id(t) not in users:
            users.add(id(t))
            weakref.finalize(t, _drop, alive, ptr, id(t))

    peak = [0]

    def hook(module, inputs, output) -> None:
        track(output)
        peak[0] = max(peak[0], sum(nbytes for nbytes, users in alive.values() if users))

    modules = deployed(spec)
    for m in modules:
        m.register_forward_hook(hook)
    a = spec.arch
    x = torch.randn(1, a.in_channels, a.input_size, a.input_size)
    track(x)
    with torch.no_grad():
        for m in modules:  # as nn.Sequential runs them, without its argument tuple holding on to the input
            x = m(x)
    return peak[0]


def _drop(alive: dict, ptr: int, tensor_id: int) -> None:
    if ptr in alive:
        alive[ptr][1].discard(tensor_id)
        if not alive[ptr][1]:
            del alive[ptr]


@pytest.mark.parametrize("name", [*SHAPES, *BUNDLED])
def test_peak_ram_formula_agrees_with_the_tensors_alive_in_an_inference(name):
    spec = SHAPES.get(name) or BUNDLED[name]
    assert peak_ram(spec, FLOAT32) == measured_peak(spec)
    assert peak_ram(spec, FLOAT32) == 4 * peak_ram(spec, INT8)


def test_the_deployed_model_computes_what_the_trained_one_does():
    """The measurement runs the folded model: it must be the same function, or it measures something else."""
    spec = SHAPES["1x1 blocks and a 1x1 transition"]
    torch.manual_seed(0)
    model = build(spec).eval()
    for m in model:  # batch-norm statistics other than the initial ones, so the folding has work to do
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 1, 28, 28)
    folded = deployed(spec)
    for i, m in enumerate(model):  # deployed() builds its own copy: fold this one's layers instead
        folded[i] = (fuse_conv_bn_eval(model[i], model[i + 1]) if i + 1 < len(model)
                     and isinstance(model[i + 1], nn.BatchNorm2d) else nn.Identity() if isinstance(m, nn.BatchNorm2d)
                     else m)
    with torch.no_grad():
        assert torch.allclose(nn.Sequential(*folded)(x), model(x), atol=1e-5)


def test_layers_count_a_separable_block_as_two_and_leave_out_what_runs_in_place():
    spec = SHAPES["separable"]  # conv3 8 (same), sep3 16: depthwise 8 -> 8, pointwise 8 -> 16; GAP; 1x1 conv
    assert [(l.kind, l.inputs, l.outputs) for l in layers(spec)] == [
        ("Conv2d", 784, 8 * 784), ("Conv2d", 8 * 784, 8 * 784), ("Conv2d", 8 * 784, 16 * 784),
        ("AdaptiveAvgPool2d", 16 * 784, 16), ("Conv2d", 16, 10)]
    assert peak_ram(spec) == 8 * 784 + 16 * 784


def test_flash_counted_by_hand():
    """conv3 4 (valid, BN), max-pool, conv3 8 (BN), GAP, 1x1 conv to 10 classes (no bias)."""
    spec = arch(((4,), (8,)))
    weights = 4 * 9 + 8 * 4 * 9 + 10 * 8
    biases = 4 * (4 + 8)  # folded from the two batch norms; the head's conv has none
    weight_qparams = 5 * (4 + 8 + 10)
    activation_qparams = 5 * (1 + 5)  # the input; conv, pool, conv, GAP, conv outputs (ReLU fused)
    assert flash_int8(spec) == weights + biases + weight_qparams + activation_qparams
    prelu = arch(((4,), (8,)), activation="prelu")  # slopes in int8 with one scale each, and their outputs
    assert flash_int8(prelu) == flash_int8(spec) + (4 + 8) + 2 * 5 + 2 * 5


def test_flash_is_about_a_byte_per_weight():
    for name, spec in BUNDLED.items():
        params = count_params(build(spec))
        assert params < flash_int8(spec) < 1.5 * params + 300, name


@pytest.mark.parametrize("name", [*SHAPES, *BUNDLED])
def test_analytic_macs_are_fvcores_count(name):
    spec = SHAPES.get(name) or BUNDLED[name]
    a = spec.arch
    assert spec_macs(spec) == count_macs(build(spec), (1, a.in_channels, a.input_size, a.input_size))


def test_analytic_macs_over_a_space_lowest_models():
    for spec in load_space("mnist_tiny").lowest_specs():
        assert spec_macs(spec) == count_macs(build(spec))


def test_costs_gather_all_four():
    spec = BUNDLED["found/b4000"]
    c = costs(spec)
    assert c == Costs(3904, 516_580, peak_ram(spec), peak_ram(spec, FLOAT32), flash_int8(spec))
    assert c.to_dict()["ram_int8"] == c.ram_int8


def test_the_gate_names_each_budget_and_by_how_much():
    c = Costs(params=3904, macs=516_580, ram_int8=18_816, ram_float32=75_264, flash_int8=4_648)
    assert over_budget(c, Budgets(4000)) == []
    assert over_budget(c, Budgets(3904, macs=516_580, ram=18_816, flash=4_648))[0].budget == "params"
    overruns = over_budget(c, Budgets(5000, macs=500_000, ram=9_408, flash=5000))
    assert [(o.budget, o.over) for o in overruns] == [("macs", 16_580), ("ram", 9_408)]
    assert str(overruns[1]) == "18,816 bytes of peak RAM at int8 > 9,408 (over by 9,408)"
    values = constraints(c, Budgets(5000, macs=500_000, ram=9_408, flash=5000))
    assert list(values) == ["params", "macs", "ram", "flash"]  # params first, one per active budget
    assert values["params"] == 3904 - 5000 + 1 and values["flash"] < 0
    assert values["ram"] == pytest.approx(5000.0)  # 100 % over, weighed as 100 % of the parameter budget
    assert list(constraints(c, Budgets(4000))) == ["params"]


@pytest.mark.parametrize("text, value", [
    ("20000", 20_000), ("20k", 20_000), ("20K", 20_000), ("1.5M", 1_500_000), ("64KB", 64_000), ("64kB", 64_000),
    ("1MiB", 2**20), ("1.5MiB", 3 * 2**19), ("2KiB", 2048), ("512B", 512), ("1G", 10**9), ("1GiB", 2**30),
    (".5k", 500), (" 8 KB ", 8000)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["-1", "0", "0k", "12XB", "1.5", "1.0001k", "k", "", "1e3", "1kiB", "1 M B",
                                  "nan", "1" + "0" * 30])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("name", [*SHAPES, *BUNDLED])
def test_costs_from_the_spec_alone_are_the_gates(name):
    spec = SHAPES.get(name) or BUNDLED[name]
    assert spec_costs(spec) == costs(spec)


def test_bundled_records_carry_their_computed_costs():
    """The found models and the references hold all four costs (README's table reads them); kept in step here."""
    import json

    from nas.bundled import find_spec
    for name in BUNDLED:
        record = json.loads(find_spec(name if name.startswith("found/") else f"reference/{name}").read_text())
        c = costs(Spec.from_dict(record["spec"]))
        assert {k: record[k] for k in c.to_dict()} == c.to_dict(), name
