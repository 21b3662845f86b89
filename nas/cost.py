"""Model cost as fvcore measures it: parameters (the budget gate) and MACs."""

from __future__ import annotations

import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore scripts helpers with torch.jit, which now warns it is deprecated
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis, parameter_count


def count_params(module: nn.Module) -> int:
    """Trainable and non-trainable parameters (not buffers), as fvcore counts them: every `nn.Parameter` of
    the module (fvcore walks `named_parameters()`), so PReLU slopes count against the budget too."""
    return int(parameter_count(module)[""])


def count_macs(module: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """Multiply-accumulates for one image. fvcore calls one multiply-add a 'flop', so its total is MACs."""
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
