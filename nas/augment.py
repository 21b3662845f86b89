"""Augmentation computed for a whole batch at once, on the batch's device: a random affine map, a horizontal flip and
a random crop from a padded image, each drawn per image without a Python loop over the images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MEAN, STD
from .spec import Train

BACKGROUND = -MEAN / STD  # a black pixel after MNIST's normalisation


def augment(x: torch.Tensor, train: Train, background: tuple[float, ...] | None = None) -> torch.Tensor:
    """The augmentation `train` asks for, on a batch: the affine map first (so a spec without flip or crop draws
    exactly the random numbers it always drew), then the flip, then the crop."""
    x = random_affine(x, train.rotation, train.shift, train.scale, background)
    return random_crop(random_flip(x, train.flip), train.crop, background)


def _black(x: torch.Tensor, background: tuple[float, ...] | None) -> torch.Tensor | float:
    return BACKGROUND if background is None else \
        torch.tensor(background, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def random_flip(x: torch.Tensor, p: float) -> torch.Tensor:
    """Mirror each image left to right with probability `p` (one draw per image)."""
    if p <= 0:
        return x
    flipped = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, pad: int, background: tuple[float, ...] | None = None) -> torch.Tensor:
    """Pad each side by `pad` pixels of black (the data's, as `random_affine`), then cut a crop of the original
    size at a uniformly drawn offset per image: the image moves by a whole number of pixels in [-pad, pad] along
    each axis. Done as one gather of each output pixel's source pixel, black where it falls outside."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    dy, dx = (torch.randint(-pad, pad + 1, (n, 1), device=x.device) for _ in range(2))
    rows = torch.arange(h, device=x.device) + dy  # (N, H): the source row of each output row
    cols = torch.arange(w, device=x.device) + dx  # (N, W)
    inside = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)  # (N, H, W)
    index = (rows.clamp(0, h - 1).unsqueeze(2) * w + cols.clamp(0, w - 1).unsqueeze(1)).view(n, 1, h * w)
    moved = x.reshape(n, x.shape[1], h * w).gather(2, index.expand(-1, x.shape[1], -1)).view_as(x)
    return torch.where(inside.unsqueeze(1), moved, torch.as_tensor(_black(x, background), dtype=x.dtype,
                                                                   device=x.device))


def random_affine(x: torch.Tensor, rotation: float, shift: float, scale: float,
                  background: tuple[float, ...] | None = None) -> torch.Tensor:
    """Rotate by ±`rotation` degrees, shift by ±`shift` of the side and scale by 1 ± `scale`, uniformly per image.

    One affine grid and one `grid_sample` for the batch: no per-sample Python. Uses the global
    torch RNG of x's device, so a seeded trainer gets the same augmentation every run. The draws
    (angle, scale, shift x, shift y) are those of version 1's `augment` strength a, so a version-1
    spec upgraded to (15·a, 0.1·a, 0.1·a) is augmented exactly as before. `background` is a black pixel after the
    data's normalisation, one value per channel (the split's `background`); None: MNIST's.
    """
    if rotation <= 0 and shift <= 0 and scale <= 0:
        return x
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:  # U(-limit, limit), one per image
        return (torch.rand(n, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(rotation))
    zoom = 1 + uniform(scale)
    offset = torch.stack([uniform(2 * shift), uniform(2 * shift)], 1)  # the grid spans [-1, 1]: twice the fraction
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    theta = torch.cat([theta, offset.unsqueeze(2)], 2).to(x.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    black = _black(x, background)
    # shift so the pixels brought in from outside the image are black, not mid-grey
    return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black
