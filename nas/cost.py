"""What a candidate costs, one function per cost, all computable from the spec before any training:
parameters and MACs as fvcore counts them, the peak activation RAM of one inference (int8 and float32)
and the flash of the int8 model; a design's parameter count before it is built, so that one too large to
build is refused by its count rather than by running out of memory; and the one gate that holds those
costs against the budgets (`Budgets`, `over_budget`, `constraints`).

The RAM and flash formulas (docs/guide.md, "Device costs") read the layer sequence `build(spec)` makes,
walked on PyTorch's meta device (shapes only, no weights), so they cost milliseconds.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from torch import nn

from .errors import SpecError, UsageError
from .model import build
from .spec import Arch, Spec

# The largest model this tool builds, trains or evaluates: far above any design for MNIST's budgets (thousands
# of parameters), far below what fills memory (1024-wide blocks, 8 per stage, 4 stages: 293 million, 1.2 GB of
# float32 weights before gradients and optimizer state).
MAX_BUILD_PARAMS = 50_000_000

with warnings.catch_warnings():  # fvcore scripts helpers with torch.jit, which now warns it is deprecated
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis, parameter_count


def count_params(module: nn.Module) -> int:
    """Trainable and non-trainable parameters (not buffers), as fvcore counts them: every `nn.Parameter` of
    the module (fvcore walks `named_parameters()`), so PReLU slopes count against the budget too."""
    return int(parameter_count(module)[""])


def count_macs(module: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """Multiply-accumulates for one image (of `input_shape`, else the one the module was built for, else MNIST's).
    fvcore calls one multiply-add a 'flop', so its total is MACs."""
    input_shape = input_shape or getattr(module, "input_shape", (1, 1, 28, 28))
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    analysis = FlopCountAnalysis(module, torch.zeros(input_shape, device=device))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():  # likewise for its tracing
        warnings.simplefilter("ignore", FutureWarning)
        macs = int(analysis.total())
    module.train(was_training)
    return macs


def spec_params(spec: Spec | Arch) -> int:
    """The parameter count of `build(spec)`, without allocating its weights: the module is built on PyTorch's
    meta device (shapes only), so a design of billions of parameters is counted in milliseconds. Equal to
    count_params(build(spec)), the count the budget gate uses. Raises SpecError for an invalid spec, as build does,
    and for one with a layer whose size does not even fit a 64-bit integer (e.g. in_channels 10**30)."""
    try:
        with torch.device("meta"):
            module = build(spec)
    except (TypeError, OverflowError, RuntimeError) as exc:
        if "overflow" not in str(exc).lower():
            raise
        raise SpecError("arch: a layer's size overflows a 64-bit integer: more parameters than this tool builds "
                        f"({MAX_BUILD_PARAMS:,})") from None
    return sum(p.numel() for p in module.parameters())


def check_buildable(spec: Spec | Arch, where: str, error: type[Exception] = SpecError) -> int:
    """Refuse (`error`, one line naming `where`) a design above MAX_BUILD_PARAMS, before anything is allocated;
    return its parameter count otherwise."""
    try:
        params = spec_params(spec)
    except SpecError as exc:
        raise error(f"{where}: {exc}") from None
    if params > MAX_BUILD_PARAMS:
        raise error(f"{where}: {params:,} parameters, more than this tool builds ({MAX_BUILD_PARAMS:,})")
    return params


# ------------------------------------------------------------------ device costs from the layer sequence

INT8, FLOAT32 = 1, 4  # bytes per activation value
WEIGHT_QPARAMS = 4 + 1  # per output channel: a float32 scale and an int8 zero point
ACTIVATION_QPARAMS = 4 + 1  # per activation tensor: a float32 scale and an int8 zero point
BIAS_BYTES = 4  # int32
# Layers that write an output buffer of their own. Everything else the builder emits runs without one at
# inference: batch norm is folded into the conv before it, ReLU, leaky ReLU and SiLU run in place (the builder
# makes them inplace=True; an int8 runtime fuses ReLU into the conv's requantisation), dropout is the identity
# and Flatten a view. PReLU has no in-place form in PyTorch or ONNX: it writes a buffer of its own.
BUFFERED = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.PReLU)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.SiLU, nn.PReLU)


@dataclass(frozen=True)
class Layer:
    """One step of an inference at batch 1 that reads one buffer and writes another."""

    kind: str  # the module's class name: Conv2d, Linear, MaxPool2d, AdaptiveAvgPool2d, PReLU
    inputs: int  # values it reads
    outputs: int  # values it writes


def _walk(spec: Spec | Arch) -> list[tuple[nn.Module, tuple[int, ...], tuple[int, ...], nn.Module | None]]:
    """(module, input shape, output shape, the next module) for each module of build(spec), in order, at batch 1.
    The modules are built on the meta device (no weights); shapes follow from each module's settings (a meta
    forward pass for any other module: ten times slower)."""
    arch = spec.arch if isinstance(spec, Spec) else spec
    with torch.device("meta"):
        modules = list(build(spec).eval())
    shape: tuple[int, ...] = (1, arch.in_channels, arch.input_size, arch.input_size)
    walked = []
    for i, module in enumerate(modules):
        after = _shape_after(module, shape)
        walked.append((module, shape, after, modules[i + 1] if i + 1 < len(modules) else None))
        shape = after
    return walked


def _shape_after(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(module, nn.Conv2d):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
        side = lambda n, k, s, p, d: (n + 2 * p - d * (k - 1) - 1) // s + 1  # noqa: E731 (PyTorch's formula)
        return (shape[0], module.out_channels, side(shape[2], kh, sh, ph, dh), side(shape[3], kw, sw, pw, dw))
    if isinstance(module, nn.MaxPool2d) and module.kernel_size == module.stride == 2 and not module.padding \
            and not module.ceil_mode:
        return (*shape[:2], shape[2] // 2, shape[3] // 2)
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
        return (*shape[:2], 1, 1)
    if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) == (1, -1):
        return (shape[0], _numel(shape[1:]))
    if isinstance(module, nn.Linear):
        return (*shape[:-1], module.out_features)
    if isinstance(module, (nn.BatchNorm2d, nn.Dropout, *ACTIVATIONS)):
        return shape
    with torch.device("meta"):  # any other module: ask PyTorch
        return tuple(module(torch.empty(shape)).shape)


def layers(spec: Spec | Arch) -> list[Layer]:
    """The buffered layers of build(spec) in order (BUFFERED): a depthwise-separable block is two (the depthwise
    3x3 conv, then the pointwise 1x1 conv; three with PReLU), a transition one or two (the max-pool, and its 1x1
    conv), a GAP head its pooling and its conv or linear layer(s); a flatten_linear head its linear layer."""
    return [Layer(type(m).__name__, _numel(shape_in), _numel(shape_out))
            for m, shape_in, shape_out, _ in _walk(spec) if isinstance(m, BUFFERED)]


def peak_ram(spec: Spec | Arch, value_bytes: int = INT8) -> int:
    """Peak activation memory of one inference at batch 1, in bytes at `value_bytes` per value (INT8, FLOAT32):
    the largest input + output pair of any buffered layer (`layers`). In a sequential network each layer reads
    its input buffer and writes its output buffer while both are live; every earlier buffer can be freed.
    Weights (in flash) and a kernel's scratch space (im2col, runtime-specific) are not counted."""
    return _peak_values(_walk(spec)) * value_bytes


def _peak_values(walked: list) -> int:
    return max(_numel(shape_in) + _numel(shape_out) for m, shape_in, shape_out, _ in walked
               if isinstance(m, BUFFERED))


def flash_int8(spec: Spec | Arch) -> int:
    """Bytes of the int8 model's data, as a static int8 quantisation stores it: every conv and linear layer's
    weights at one byte each (PReLU slopes too), an int32 bias per output channel where the layer has a bias or
    a batch norm follows it (the batch norm is folded into that conv's weights and bias), a float32 scale and an
    int8 zero point per output channel of its weights (per-channel quantisation), and a float32 scale and int8
    zero point per activation tensor: the input, each buffered layer's output and each activation function's
    output but ReLU's (fused into the conv before it). The exported file is larger (graph, names, metadata)."""
    return _flash(_walk(spec))


def _flash(walked: list) -> int:
    total = ACTIVATION_QPARAMS  # the input image's
    for m, _, _, after in walked:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            channels = m.weight.shape[0]
            biased = m.bias is not None or isinstance(after, nn.BatchNorm2d)
            total += m.weight.numel() + channels * (WEIGHT_QPARAMS + (BIAS_BYTES if biased else 0))
        if isinstance(m, nn.PReLU):  # one slope per channel, quantised per tensor
            total += m.weight.numel() + WEIGHT_QPARAMS
        if isinstance(m, BUFFERED) or (isinstance(m, ACTIVATIONS) and not isinstance(m, nn.ReLU)):
            total += ACTIVATION_QPARAMS
    return total


def spec_macs(spec: Spec | Arch) -> int:
    """fvcore's MAC count of build(spec) in eval mode, from the layer sequence without tracing (milliseconds
    instead of tens of them: for the sampler's screen and the smallest-model check): convs (output values x
    inputs per group x kernel area), linear layers (in x out), batch norms (2 per value: scale and shift), GAP
    (1 per input value); fvcore counts no pooling by max and no activation. tests/test_costs.py holds it to
    count_macs."""
    return _macs(_walk(spec))


def _macs(walked: list) -> int:
    total = 0
    for m, shape_in, shape_out, _ in walked:
        if isinstance(m, nn.Conv2d):
            total += _numel(shape_out) * m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
        elif isinstance(m, nn.BatchNorm2d):
            total += 2 * _numel(shape_in)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            total += _numel(shape_in)
    return total


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ------------------------------------------------------------------ all four costs, and the gate

@dataclass(frozen=True)
class Costs:
    """What a candidate costs: parameters and MACs (fvcore), peak activation RAM at int8 and at float32 and the
    int8 model's flash, in bytes."""

    params: int
    macs: int
    ram_int8: int
    ram_float32: int
    flash_int8: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def costs(spec: Spec, module: nn.Module | None = None) -> Costs:
    """All costs of a spec; `module`: build(spec), if already built (its counts are fvcore's)."""
    module = build(spec) if module is None else module
    size = spec.arch.input_size
    walked = _walk(spec)  # once for every device cost: this runs for every trial
    peak = _peak_values(walked)
    return Costs(count_params(module), count_macs(module, (1, spec.arch.in_channels, size, size)),
                 peak * INT8, peak * FLOAT32, _flash(walked))


def spec_costs(spec: Spec | Arch) -> Costs:
    """The same costs without building weights or tracing: the parameters on the meta device (spec_params), the
    MACs from the layer sequence (spec_macs); a few milliseconds, for the sampler's screen and the smallest-model
    check. Equal to costs(spec) (tests/test_costs.py). One walk of the layer sequence serves every cost."""
    walked = _walk(spec)
    params = sum(p.numel() for m, *_ in walked for p in m.parameters())  # spec_params: the same meta modules
    peak = _peak_values(walked)
    return Costs(params, _macs(walked), peak * INT8, peak * FLOAT32, _flash(walked))


# budget name -> (the flag that sets it, the cost it limits, the unit it is said in)
BUDGETS = {"params": ("--budget", "params", "parameters"), "macs": ("--max-macs", "macs", "MACs"),
           "ram": ("--max-ram", "ram_int8", "bytes of peak RAM at int8"),
           "flash": ("--max-flash", "flash_int8", "bytes of flash at int8")}


@dataclass(frozen=True)
class Budgets:
    """The gate's limits: a model needs fewer parameters than `params` (--budget), and at most `macs` MACs,
    `ram` bytes of peak RAM at int8 and `flash` bytes of flash at int8 (None: no such limit)."""

    params: int
    macs: int | None = None
    ram: int | None = None
    flash: int | None = None

    def __str__(self) -> str:  # '< 8,000 parameters, MACs <= 500,000, peak RAM <= 8,192 B at int8'
        said = [f"< {self.params:,} parameters"] + [f"{what} <= {value:,}{unit}" for what, value, unit in (
            ("MACs", self.macs, ""), ("peak RAM", self.ram, " B"), ("flash", self.flash, " B")) if value is not None]
        return ", ".join(said) + (" at int8" if self.ram or self.flash else "")

    def allowed(self) -> dict[str, int]:
        """The largest cost each active budget lets through, params first (the order of the constraints)."""
        limits = {"params": self.params - 1, "macs": self.macs, "ram": self.ram, "flash": self.flash}
        return {name: limit for name, limit in limits.items() if limit is not None}


@dataclass(frozen=True)
class Overrun:
    """A cost over its budget: by `over` (= cost - allowed)."""

    budget: str  # a key of BUDGETS
    cost: int
    allowed: int

    @property
    def over(self) -> int:
        return self.cost - self.allowed

    def __str__(self) -> str:  # "12,544 bytes of peak RAM at int8 > 8,192 (over by 4,352)"
        if self.budget == "params":
            return f"{self.cost:,} params >= {self.allowed + 1:,}"
        return f"{self.cost:,} {BUDGETS[self.budget][2]} > {self.allowed:,} (over by {self.over:,})"


def over_budget(cost: Costs, budgets: Budgets) -> list[Overrun]:
    """Every budget the candidate does not fit, params first; [] when it fits them all."""
    return [Overrun(name, getattr(cost, BUDGETS[name][1]), allowed) for name, allowed in budgets.allowed().items()
            if getattr(cost, BUDGETS[name][1]) > allowed]


def constraints(cost: Costs, budgets: Budgets) -> dict[str, float]:
    """Optuna's constraint values, one per active budget, params first: feasible when <= 0. The parameter
    budget's is params - budget + 1, as studies have always stored it; the others are the overrun as a fraction
    of their limit, times the parameter budget, so that TPE, which ranks infeasible trials by the sum of their
    violations, weighs 10 % over the RAM budget as it weighs 10 % over the parameter budget."""
    values: dict[str, float] = {}
    for name, allowed in budgets.allowed().items():
        excess = getattr(cost, BUDGETS[name][1]) - allowed
        values[name] = float(excess if name == "params" else excess / max(allowed, 1) * budgets.params)
    return values


def check_budgets(budgets: Budgets, lowest: Iterable[Spec], what: str) -> None:
    """Refuse (UsageError, one line) a budget that not even the smallest of `lowest` fits, each budget on its own:
    for a space (`what`: "space mnist"), its lowest specs (Space.lowest_specs: each numeric choice at its low end,
    for every combination of the categorical ones)."""
    specs = list(lowest)
    allowed_costs = budgets.allowed()
    # the parameter budget alone (most searches): the parameter count alone, a third of the time
    smallest = [spec_costs(spec) for spec in specs] if set(allowed_costs) - {"params"} else None
    for name, allowed in allowed_costs.items():
        flag, cost, unit = BUDGETS[name]
        least = min(spec_params(s) for s in specs) if smallest is None else min(getattr(c, cost) for c in smallest)
        if least > allowed:
            given = budgets.params if name == "params" else allowed
            raise UsageError(f"{flag} {given:,} is below the smallest model {what} can build ({least:,} {unit})")


# ------------------------------------------------------------------ sizes on the command line

MAX_SIZE = 10**15  # storages keep 64-bit integers; no CNN here comes near this
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kKMG]i?)?(B)?")
_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20,
            "Gi": 2**30}


def parse_size(text: str) -> int:
    """A positive count or size: `20000`, `20k`, `1.5M`, `64KB`, `1MiB`, `512B`. k, M and G are powers of 1000 (KB
    and MB too: the SI units), KiB, MiB and GiB powers of 1024; a trailing B (bytes) changes nothing. The result
    must be a whole number above 0 (1.5k is 1500; 1.0001k is refused). Raises ValueError saying what is expected."""
    match = _SIZE.fullmatch(text.strip())
    expected = f"expected a positive size such as 20000, 20k, 1.5M, 64KB or 1MiB, got {text!r}"
    if not match:
        raise ValueError(expected)
    number, prefix, _ = match.groups()
    if prefix not in _FACTORS:  # kiB: no such unit
        raise ValueError(expected)
    whole, _, frac = number.partition(".")
    frac = frac.rstrip("0")
    factor = _FACTORS[prefix]
    numerator = int(whole or "0") * 10 ** len(frac) + int(frac or "0")
    value, rest = divmod(numerator * factor, 10 ** len(frac))
    if rest or value <= 0:
        raise ValueError(expected + (": not a whole number" if rest else ""))
    if value > MAX_SIZE:
        raise ValueError(f"{text!r} is out of range (at most {MAX_SIZE:,})")
    return value
