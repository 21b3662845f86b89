"""Multi-fidelity search: a ladder of rungs, and the rule that promotes a candidate up it.

A candidate is first judged cheaply (a few epochs on a slice of the training images, the LR schedule
compressed to that short run); only the best third at a rung is trained at the next, and only
those that survive every cheap rung get the full training (`--epochs` on all the search images).
Each rung is a fresh training, so a short run gets its whole schedule (warm-up and annealing), where
the first epochs of a long run sit at a one-cycle schedule's peak learning rate.
benchmarks/fidelity_rank.py measures how each rung ranks candidates against the full training.

In Optuna's terms a trial reports its score at cheap rung k (counted from 0) as the intermediate value
of step k, and epoch e of its full training (counted from 1) as step K+e (K = number of cheap rungs;
step K itself is never reported). One step is one fidelity, and every rule (nas.search.pruner)
compares values at one step only: never across fidelities. A study without cheap rungs (K = 0) is
exactly the earlier full-fidelity search: epoch e is step e.

A cheap rung is counted in images (every candidate trains on the same images) or in optimiser steps
(`--rungs-in steps`): then a rung's images are those of a batch of STEP_BATCH, and a candidate of batch
b trains on b/STEP_BATCH of that many, so every candidate takes the same number of steps. Counted in
images, a rung gives a batch-256 candidate half the steps of a batch-128 one, and a first rung of
2 epochs x 11,000 images only 86: too few for its schedule to say what the candidate can do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import UsageError

# the default ladder, as shares of the full fidelity: (epochs, images). 2/15 x 1/5 and 4/15 x 1/2 of the
# full 15 x 55,000: 2.7 % and 13 % of its cost (in images trained on)
DEFAULT_RUNGS = ((2 / 15, 1 / 5), (4 / 15, 1 / 2))
REDUCTION_FACTOR = 3  # keep the best 1/3 at each cheap rung (successive halving's "eta"; --eta)
MIN_RUNG_IMAGES = 256  # below this a rung's score says little; such rungs are dropped
RUNG_UNITS = ("images", "steps")  # what a cheap rung counts (--rungs-in); studies made before count images
DEFAULT_RUNG_UNIT = "images"
STEP_BATCH = 128  # counted in steps, a rung's images are for this batch size (the common one: its cost is unchanged)


@dataclass(frozen=True)
class Fidelity:
    """How thoroughly a candidate is judged: epochs of training on how many images. Trials of
    different fidelities are never compared."""

    epochs: int
    train_images: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Fidelity | None":
        try:
            return cls(int(data["epochs"]), int(data["train_images"]))
        except (KeyError, TypeError, ValueError):
            return None

    def __str__(self) -> str:
        return f"{self.epochs} epoch{'s' * (self.epochs != 1)} x {self.train_images:,} images"

    @property
    def cost(self) -> int:
        """Images trained on: what a rung costs, to compare rungs (not seconds: those depend on the load)."""
        return self.epochs * self.train_images


def parse_rung(text: str) -> Fidelity:
    """'2x11000' -> Fidelity(2, 11000) (a command-line rung)."""
    try:
        epochs, images = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"rung {text!r}: expected EPOCHSxIMAGES, e.g. 2x11000") from None
    if epochs < 1 or images < 1:
        raise UsageError(f"rung {text!r}: epochs and images must be positive")
    return Fidelity(epochs, images)


def ladder(full: Fidelity, cheap: list[Fidelity] | None = None) -> tuple[Fidelity, ...]:
    """The rungs a candidate climbs, cheapest first, ending at `full`.

    `cheap` None: the default ladder scaled to `full`; [] : full fidelity only. Each cheap rung must
    cost less than the next (epochs x images) and use no more epochs or images than the full one.
    """
    if cheap is None:
        cheap = [Fidelity(max(1, round(full.epochs * e)), int(full.train_images * n)) for e, n in DEFAULT_RUNGS]
        cheap = [r for r in cheap if r.train_images >= MIN_RUNG_IMAGES]
    # drop repeats: a tiny run scales two rungs onto one, or a rung onto the full fidelity
    rungs = (*(r for r in dict.fromkeys(cheap) if r != full), full)
    for low, high in zip(rungs, rungs[1:]):
        if low.epochs > full.epochs or low.train_images > full.train_images:
            raise UsageError(f"rung {low.epochs}x{low.train_images} is above the full fidelity "
                             f"{full.epochs}x{full.train_images} (--epochs x training images)")
        if low.epochs * low.train_images >= high.epochs * high.train_images:
            raise UsageError(f"rungs must cost more at each step: {low.epochs}x{low.train_images} is not "
                             f"cheaper than {high.epochs}x{high.train_images}")
    return rungs


def rung_images(rung: Fidelity, batch_size: int, unit: str, available: int) -> int:
    """How many images a candidate of `batch_size` trains on at a cheap rung: the rung's own count, or (in
    steps) as many as give it the steps of a batch of STEP_BATCH on the rung's images; at most `available`."""
    if unit == "images":
        return min(rung.train_images, available)
    return min(available, max(batch_size, round(rung.train_images * batch_size / STEP_BATCH)))
