"""Model cost as fvcore measures it: parameters (the budget gate) and MACs; and a design's parameter count
before it is built, so that one too large to build is refused by its count rather than by running out of memory."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .errors import SpecError
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
