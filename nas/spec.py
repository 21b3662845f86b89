"""The architecture spec: a plain, immutable, JSON-serialisable description of one candidate.

A `Spec` is what a search trial samples, what the builder turns into a module, what `best.json`
and exported spec files hold, and what every checkpoint carries. It holds no torch objects.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import SpecError
from .files import write_json

PADDINGS = ("valid", "same")
TRANSITIONS = ("pool", "1x1_pool", "pool_1x1")
HEADS = ("gap_conv", "gap_linear", "flatten_linear")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")


@dataclass(frozen=True)
class Arch:
    """A plain CNN: stages of 3x3 conv blocks, a transition between stages, then a head.

    `stages` holds the output width of every 3x3 conv block, stage by stage. Between two stages
    sits a transition: a 2x2 max-pool, optionally with a 1x1 conv of `transition_width` channels
    before ("1x1_pool") or after ("pool_1x1") it.
    """

    stages: tuple[tuple[int, ...], ...]
    transition: str
    transition_width: int
    padding: str
    head: str
    batch_norm: bool
    dropout: float
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10


@dataclass(frozen=True)
class Train:
    """The training schedule a candidate was sampled with (the number of epochs is the caller's)."""

    optimizer: str
    lr: float
    schedule: str
    batch_size: int
    label_smoothing: float
    weight_decay: float
    augment: float  # 0 = none, 1 = rotation ±15°, translation ±10 %, scale ±10 %


@dataclass(frozen=True)
class Spec:
    arch: Arch
    train: Train

    @property
    def code(self) -> str:
        """A short human-readable code, e.g. `v c10-16 T10 c16-16-16 gapc bn d.05 | sgd .05 oc b128 ls.1 a.5`."""
        a, t = self.arch, self.train
        width = {"pool": "M", "1x1_pool": f"T{a.transition_width}", "pool_1x1": f"M{a.transition_width}"}
        parts = [a.padding[0]]
        for i, stage in enumerate(a.stages):
            if i:
                parts.append(width[a.transition])
            parts.append("c" + "-".join(map(str, stage)))
        head = {"gap_conv": "gapc", "gap_linear": "gapl", "flatten_linear": "fc"}[a.head]
        parts += [head, "bn" if a.batch_norm else "nobn", f"d{_short(a.dropout)}"]
        sched = {"onecycle": "oc", "cosine": "cos", "step": "step", "constant": "const"}[t.schedule]
        parts += ["|", t.optimizer, _short(t.lr), sched, f"b{t.batch_size}", f"ls{_short(t.label_smoothing)}",
                  f"a{_short(t.augment)}"]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Spec":
        """Build and validate a spec from its JSON form; raises SpecError naming what is wrong."""
        if not isinstance(data, dict) or set(data) != {"arch", "train"}:
            raise SpecError("a spec is an object with exactly the keys 'arch' and 'train'")
        arch_data = dict(_fields_of(Arch, data["arch"], "arch"))
        stages = arch_data.get("stages")
        if not isinstance(stages, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in stages):
            raise SpecError("arch.stages must be a list of lists of channel widths")
        arch_data["stages"] = tuple(tuple(s) for s in stages)
        spec = cls(Arch(**arch_data), Train(**_fields_of(Train, data["train"], "train")))
        validate(spec)
        return spec


def _short(x: float) -> str:
    """0.05 -> '.05', 1.0 -> '1', 0.0 -> '0': compact numbers for codes."""
    text = f"{x:.3g}"
    return text[1:] if text.startswith("0.") else text


def _fields_of(kind: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be an object")
    names = {f.name for f in fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    required = {f.name for f in fields(kind) if f.default is MISSING}
    missing = required - set(data)
    if missing:
        raise SpecError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return dict(data)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def feature_sizes(arch: Arch) -> list[int]:
    """Spatial size of the feature map after each stage (before the next transition)."""
    size, shrink, sizes = arch.input_size, (2 if arch.padding == "valid" else 0), []
    for i, stage in enumerate(arch.stages):
        if i:
            size //= 2  # every transition has a 2x2 max-pool
        size -= shrink * len(stage)
        sizes.append(size)
    return sizes


def validate(spec: Spec) -> None:
    """Raise SpecError if the spec cannot be built or trained."""
    a, t = spec.arch, spec.train
    _check(len(a.stages) >= 1 and all(len(s) >= 1 for s in a.stages), "arch.stages: every stage needs a block")
    _check(all(_is_int(w) and w >= 1 for s in a.stages for w in s), "arch.stages: widths must be positive integers")
    _check(a.transition in TRANSITIONS, f"arch.transition must be one of {', '.join(TRANSITIONS)}")
    _check(_is_int(a.transition_width) and a.transition_width >= 0, "arch.transition_width must be an integer >= 0")
    _check(a.transition == "pool" or a.transition_width >= 1, "arch.transition_width must be >= 1 with a 1x1 conv")
    _check(a.padding in PADDINGS, f"arch.padding must be one of {', '.join(PADDINGS)}")
    _check(a.head in HEADS, f"arch.head must be one of {', '.join(HEADS)}")
    _check(isinstance(a.batch_norm, bool), "arch.batch_norm must be true or false")
    _check(_is_number(a.dropout) and 0 <= a.dropout < 1, "arch.dropout must be in [0, 1)")
    for name in ("in_channels", "input_size", "num_classes"):
        _check(_is_int(getattr(a, name)) and getattr(a, name) >= 1, f"arch.{name} must be a positive integer")
    _check(min(feature_sizes(a)) >= 1, f"arch: the feature map shrinks below 1 pixel ({a.padding} padding)")
    _check(t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}")
    _check(_is_number(t.lr) and t.lr > 0, "train.lr must be a positive number")
    _check(t.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}")
    _check(_is_int(t.batch_size) and t.batch_size >= 1, "train.batch_size must be a positive integer")
    _check(_is_number(t.label_smoothing) and 0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
    _check(_is_number(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay must be >= 0")
    _check(_is_number(t.augment) and 0 <= t.augment <= 2, "train.augment must be in [0, 2]")


def load_spec(path: str | os.PathLike) -> Spec:
    """Read a spec file: a bare spec (as a trial's `spec` attribute) or a `best.json`-style record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable JSON spec file ({exc})") from None
    except RecursionError:  # e.g. '[' * 100000: json's parser recurses once per level
        raise SpecError(f"{path}: not a readable JSON spec file (nested too deeply)") from None
    if isinstance(data, dict) and "spec" in data:
        data = data["spec"]
    try:
        return Spec.from_dict(data)
    except (SpecError, TypeError) as exc:
        raise SpecError(f"{path}: {exc}") from None


def save_spec(spec: Spec, path: str | os.PathLike) -> None:
    write_json(spec.to_dict(), path)
