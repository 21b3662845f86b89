"""Builder: spec -> nn.Module. Deterministic given the torch seed; knows nothing of Optuna."""

from __future__ import annotations

from torch import nn

from .spec import Arch, Spec, feature_sizes, validate


def _block(c_in: int, c_out: int, arch: Arch) -> list[nn.Module]:
    # conv -> BN -> ReLU -> dropout; the conv needs no bias when BN follows (BN's shift replaces it)
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1 if arch.padding == "same" else 0, bias=not arch.batch_norm)
    ]
    if arch.batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if arch.dropout > 0:
        layers.append(nn.Dropout(arch.dropout))
    return layers


def _transition(c_in: int, arch: Arch) -> tuple[list[nn.Module], int]:
    pool = nn.MaxPool2d(2)
    if arch.transition == "pool":
        return [pool], c_in
    squeeze = nn.Conv2d(c_in, arch.transition_width, 1, bias=False)
    layers = [squeeze, pool] if arch.transition == "1x1_pool" else [pool, squeeze]
    return layers, arch.transition_width


def _head(c_in: int, arch: Arch) -> list[nn.Module]:
    if arch.head == "gap_conv":  # GAP, then a bias-free 1x1 conv to the classes
        return [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, arch.num_classes, 1, bias=False), nn.Flatten()]
    if arch.head == "gap_linear":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, arch.num_classes)]
    size = feature_sizes(arch)[-1]
    return [nn.Flatten(), nn.Linear(c_in * size * size, arch.num_classes)]


def build(spec: Spec | Arch) -> nn.Sequential:
    """Turn a spec (or just its architecture) into a module that maps (B, C, H, W) images to logits."""
    arch = spec.arch if isinstance(spec, Spec) else spec
    if isinstance(spec, Spec):
        validate(spec)
    layers: list[nn.Module] = []
    channels = arch.in_channels
    for i, stage in enumerate(arch.stages):
        if i:
            transition, channels = _transition(channels, arch)
            layers += transition
        for width in stage:
            layers += _block(channels, width, arch)
            channels = width
    layers += _head(channels, arch)
    return nn.Sequential(*layers)
