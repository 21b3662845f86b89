"""Random affine augmentation computed for a whole batch at once, on the batch's device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MEAN, STD

BACKGROUND = -MEAN / STD  # a black pixel after normalisation
MAX_DEGREES, MAX_SHIFT, MAX_SCALE = 15.0, 0.10, 0.10  # at strength 1


def random_affine(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Rotate by ±15°·s, shift by ±10 %·s of the side and scale by 1 ± 10 %·s, per image.

    One affine grid and one `grid_sample` for the batch: no per-sample Python. Uses the global
    torch RNG of x's device, so a seeded trainer gets the same augmentation every run.
    """
    if strength <= 0:
        return x
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:  # U(-limit, limit), one per image
        return (torch.rand(n, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(MAX_DEGREES) * strength)
    scale = 1 + uniform(MAX_SCALE * strength)
    shift = torch.stack([uniform(2 * MAX_SHIFT * strength), uniform(2 * MAX_SHIFT * strength)], 1)  # grid spans [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    theta = torch.cat([theta, shift.unsqueeze(2)], 2).to(x.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # shift so the pixels brought in from outside the image are black, not mid-grey
    return F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + BACKGROUND
