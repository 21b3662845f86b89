"""The size rule: what a space draws for images larger than the 28-32 px the bundled spaces were made for.

A space describes the stages of a design at MNIST's or CIFAR's size. Images of more than 32 px are first
shrunk by a stem, to at most 32 px where the stem can do it: a 3x3 stride-2 conv (up to 64 px: 64 -> 32),
else that conv and a 2x2 max-pool (96 -> 24, 128 -> 32). Then every spec has at least as many stages as bring
the map to 8 px or less before the head (each stage after the first begins with a 2x2 max-pool), at most 4:

    64 px: stride-2 stem -> 32 px, >= 3 stages (8 px at the head, 'same' padding)
    96 px: stride-2 stem and pool -> 24 px, >= 3 stages (6 px)
    128 px: stride-2 stem and pool -> 32 px, >= 3 stages (8 px); 256 px: -> 64 px, 4 stages (8 px)

Images of more than about 256 px reach the head larger than 8 px (the GAP heads still average them). Images of
at most 32 px meet no rule: the spaces draw exactly what they always drew.
"""

from __future__ import annotations

from dataclasses import dataclass

from .space_file import Domain, Range
from .spec import RANGES, stem_size

BASE = 32  # the largest side the bundled spaces were made for (MNIST 28, colour32 32)
HEAD_SIDE = 8  # the largest feature map the rule lets reach the head, where it can
MAX_STAGES = int(RANGES["arch.stages"].high)


@dataclass(frozen=True)
class SizeRule:
    size: int  # the images' side
    stem: str  # the spec's arch.stem
    stages: int  # the fewest stages a spec may have

    def stage_domain(self, domain: Domain) -> Domain:
        """A space's arch.stages domain (a Range or a tuple of choices) with no fewer than `stages` stages."""
        if isinstance(domain, Range):
            return Range(max(domain.low, self.stages), max(domain.high, self.stages), domain.step, domain.log, True)
        return tuple(c for c in domain if c >= self.stages) or (self.stages,)

    def __str__(self) -> str:
        stem = {"stride2": "a 3x3 stride-2 conv stem", "stride2_pool": "a 3x3 stride-2 conv and 2x2 max-pool stem"}
        side = stem_size(self.size, self.stem)
        head = side // 2 ** (self.stages - 1)
        return (f"{self.size} px images: {stem[self.stem]} (to {side} px), at least {self.stages} stages "
                f"({head} px before the head with 'same' padding)")


def size_rule(size: int) -> SizeRule | None:
    """The rule for images of `size` px (see the module's docstring); None at 32 px or less."""
    if size <= BASE:
        return None
    stem = "stride2" if size <= 2 * BASE else "stride2_pool"
    side, stages = stem_size(size, stem), 1
    while side > HEAD_SIDE and stages < MAX_STAGES:
        side, stages = side // 2, stages + 1
    return SizeRule(size, stem, stages)
