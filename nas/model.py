"""Builder: spec -> nn.Module. Deterministic given the torch seed; knows nothing of Optuna."""

from __future__ import annotations

from torch import nn

from .spec import Arch, Spec, feature_sizes, validate


def _activation(channels: int, arch: Arch) -> nn.Module:
    if arch.activation == "prelu":  # one learned slope per channel: `channels` parameters, counted by the gate
        return nn.PReLU(channels)
    if arch.activation == "leaky_relu":
        return nn.LeakyReLU(inplace=True)  # slope 0.01
    if arch.activation == "silu":
        return nn.SiLU(inplace=True)
    return nn.ReLU(inplace=True)


def _block(c_in: int, c_out: int, kind: str, arch: Arch) -> list[nn.Module]:
    # conv -> BN -> activation -> dropout; the conv needs no bias when BN follows (BN's shift replaces it)
    padding = 1 if arch.padding == "same" else 0
    bias = not arch.batch_norm
    if kind == "conv3":
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=padding, bias=bias)]
    elif kind == "sep3":  # depthwise 3x3 (no bias: the pointwise conv right after it absorbs one), pointwise 1x1
        layers = [nn.Conv2d(c_in, c_in, 3, padding=padding, groups=c_in, bias=False),
                  nn.Conv2d(c_in, c_out, 1, bias=bias)]
    else:  # conv1
        layers = [nn.Conv2d(c_in, c_out, 1, bias=bias)]
    if arch.batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(_activation(c_out, arch))
    if arch.dropout > 0:
        layers.append(nn.Dropout(arch.dropout))
    return layers


def _stem(c_in: int, arch: Arch) -> list[nn.Module]:
    """A 3x3 stride-2 conv to the first block's width, with the blocks' batch norm and activation (no dropout
    on the image's first features); "stride2_pool" adds a 2x2 max-pool."""
    width = arch.stages[0][0]
    layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, stride=2, padding=1, bias=not arch.batch_norm)]
    if arch.batch_norm:
        layers.append(nn.BatchNorm2d(width))
    layers.append(_activation(width, arch))
    return layers + ([nn.MaxPool2d(2)] if arch.stem == "stride2_pool" else [])


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
    if arch.head == "gap_mlp":  # GAP, then a tiny dense layer of head_width units
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, arch.head_width),
                _activation(arch.head_width, arch), nn.Linear(arch.head_width, arch.num_classes)]
    size = feature_sizes(arch)[-1]
    return [nn.Flatten(), nn.Linear(c_in * size * size, arch.num_classes)]


def build(spec: Spec | Arch) -> nn.Sequential:
    """Turn a spec (or just its architecture) into a module that maps (B, C, H, W) images to logits."""
    arch = spec.arch if isinstance(spec, Spec) else spec
    if isinstance(spec, Spec):
        validate(spec)
    layers: list[nn.Module] = []
    channels = arch.in_channels
    if arch.stem != "none":
        layers += _stem(channels, arch)
        channels = arch.stages[0][0]
    for i, (stage, kinds) in enumerate(zip(arch.stages, arch.kinds)):
        if i:
            transition, channels = _transition(channels, arch)
            layers += transition
        for width, kind in zip(stage, kinds):
            layers += _block(channels, width, kind, arch)
            channels = width
    layers += _head(channels, arch)
    net = nn.Sequential(*layers)
    net.input_shape = (1, arch.in_channels, arch.input_size, arch.input_size)  # one image: what cost.count_macs feeds
    return net
