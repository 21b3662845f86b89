"""Random affine augmentation computed for a whole batch at once, on the batch's device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MEAN, STD

BACKGROUND = -MEAN / STD  # a black pixel after MNIST's normalisation


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
    black = BACKGROUND if background is None else \
        torch.tensor(background, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    # shift so the pixels brought in from outside the image are black, not mid-grey
    return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black
