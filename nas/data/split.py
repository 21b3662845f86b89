"""The tensors the trainer gets, and the two ways training images are split: MNIST's fixed random split (kept
bit for bit, so MNIST studies validate on the same 5,000 images as ever) and a stratified one for other data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPLIT_SEED = 0  # fixed, so every trial and every study validates on the same images


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) float32, normalised
    y: torch.Tensor  # (N,) int64
    # a black pixel after normalisation, per channel, where augmentation brings in pixels from outside the
    # image; None: MNIST's (nas.augment.BACKGROUND)
    background: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def first(self, n: int | None) -> "Split":
        """The first `n` images (all for None): views, no copy. Splits are shuffled once when loaded,
        so the first n are a fixed random sample: smoke runs, cheap rungs and warm-ups take these."""
        return self if n is None else Split(self.x[:n], self.y[:n], self.background)


@dataclass(frozen=True)
class Splits:
    """What the trainer needs: images to train on and held-out images to measure each epoch."""

    train: Split
    held_out: Split


def random_split(n: int, held_out: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices: one random permutation of n, the first `held_out` set aside (MNIST's split)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[held_out:], order[:held_out]


def stratified_split(labels: torch.Tensor, held_out: int, seed: int = SPLIT_SEED
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices with each class held out in proportion to its share of `labels`.

    Shares are rounded by largest remainder, so exactly `held_out` are set aside; a class keeps at least one
    image when it has more than one. Both parts come out shuffled (by `seed`), so their first n are a random sample.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * held_out / n
    take = exact.floor().long()
    order = torch.argsort(exact - take, descending=True, stable=True)
    take[order[:held_out - int(take.sum())]] += 1
    take = torch.minimum(take, (counts - 1).clamp(min=0)) if held_out < n else take
    kept, out = [], []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        out.append(idx[:k])
        kept.append(idx[k:])
    kept_idx, out_idx = torch.cat(kept), torch.cat(out)
    return kept_idx[torch.randperm(len(kept_idx), generator=g)], out_idx[torch.randperm(len(out_idx), generator=g)]
