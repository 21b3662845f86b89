"""The architecture spec: a plain, immutable, JSON-serialisable description of one candidate.

A `Spec` is what a search trial samples, what the builder turns into a module, what `best.json`
and exported spec files hold, and what every checkpoint carries. It holds no torch objects.

Its JSON form is versioned. Version 2 (written since per-block kinds, activations, the gap_mlp head,
EMA and separate augmentation strengths) has `"version": 2`; version 1 has no `version` key and one
augmentation strength `train.augment`. `Spec.from_dict` reads both and upgrades version 1 in memory,
so old spec files, checkpoints and the trials of old studies keep loading; the in-memory form is v2.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from .bundled import find_spec, spec_names_hint
from .errors import SpecError
from .files import TEXT_LIMIT, read_text_file, write_json

VERSION = 2  # of the JSON form that `Spec.to_dict` writes
PADDINGS = ("valid", "same")
TRANSITIONS = ("pool", "1x1_pool", "pool_1x1")
BLOCKS = ("conv3", "sep3", "conv1")  # 3x3 conv; depthwise 3x3 then pointwise 1x1; 1x1 conv
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "silu")
HEADS = ("gap_conv", "gap_linear", "gap_mlp", "flatten_linear")
STEMS = ("none", "stride2", "stride2_pool")  # none; a 3x3 stride-2 conv (/2); that conv, then a 2x2 max-pool (/4)
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
# Version 1's augmentation strength a meant rotation ±15°·a, shift ±10 %·a of the side, scale 1 ± 10 %·a.
V1_AUGMENT = (15.0, 0.10, 0.10)
# The shape of the data the spec is for, when left out: MNIST (codes name it only where it differs).
MNIST_SHAPE = {"in_channels": 1, "input_size": 28, "num_classes": 10}
# Fields added after version 2 was first written, left out of the JSON form at these defaults, so the files,
# hashes and codes of every spec written before them stay byte for byte what they were.
LEFT_OUT = {"arch": {"stem": "none"}, "train": {"flip": 0.0, "crop": 0}}


@dataclass(frozen=True)
class Interval:
    """The values a numeric field may take: from `low` to `high` (None: no upper bound), each end
    closed or open; `integer`: whole numbers only. `unit` and `note` only add to the error message."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    unit: str = ""  # e.g. "degrees": "in [0, 180] degrees"
    note: str = ""  # e.g. "(0 = no weight averaging)"

    def admits(self, value: Any) -> bool:
        """Whether `value` is a number of the right kind (never a bool) inside the interval."""
        if not (_is_int(value) if self.integer else _is_number(value)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def expected(self) -> str:
        """What a value must be, e.g. 'an integer from 1 to 1024', 'a number in [0, 1)', 'a positive integer'."""
        if self.integer:
            low = int(self.low) + 1 if self.low_open else int(self.low)
            if self.high is None:
                return "a positive integer" if low == 1 else f"an integer >= {low}"
            return f"an integer from {low} to {int(self.high) - 1 if self.high_open else int(self.high)}"
        if self.high is None and (self.low, self.low_open) == (0, True):
            return "a positive number"
        if self.high is None:
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number {'of ' + self.unit + ' ' if self.unit else ''}{self}"

    def must_be(self, key: str) -> str:
        """The error message of a value outside: 'train.ema must be in [0, 1) (0 = no weight averaging)'."""
        said = self.expected() if self.integer or self.high is None else f"{self}{' ' + self.unit if self.unit else ''}"
        return f"{key} must be {said}{' ' + self.note if self.note else ''}"

    def __str__(self) -> str:  # 'in [0, 1)'
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


# One table of the values each numeric field may take: spec validation and the space parser both check
# against it, so a space can only offer values a spec holds, and a spec holds only values a space can offer.
# Keyed by the spec field's path; the shape of arch.stages by the space's keys: how many stages, how many
# blocks in each, and each block's width. transition_width and head_width are 0 where unused (no 1x1
# transition, no gap_mlp head); a space draws them only where they are used, so from 1.
RANGES: dict[str, Interval] = {
    "arch.stages": Interval(1, 4, integer=True),  # how many stages (3 max-pools: 28 px -> 3 px)
    "arch.blocks_per_stage": Interval(1, 8, integer=True),
    "arch.width": Interval(1, 1024, integer=True),  # each block's output channels
    "arch.transition_width": Interval(0, 1024, integer=True),
    "arch.head_width": Interval(0, 1024, integer=True),
    "arch.dropout": Interval(0, 1, high_open=True),
    "arch.in_channels": Interval(1, integer=True),
    "arch.input_size": Interval(1, integer=True),
    "arch.num_classes": Interval(1, integer=True),
    "train.lr": Interval(0, low_open=True),  # no upper bound: a diverging LR is the trainer's to report
    "train.batch_size": Interval(1, 65536, integer=True),
    "train.label_smoothing": Interval(0, 1, high_open=True),
    "train.weight_decay": Interval(0, 1),
    "train.rotation": Interval(0, 180, unit="degrees"),
    "train.shift": Interval(0, 1, note="(a fraction of the side)"),
    "train.scale": Interval(0, 1, high_open=True),
    "train.ema": Interval(0, 1, high_open=True, note="(0 = no weight averaging)"),
    "train.flip": Interval(0, 1, note="(the probability of a horizontal flip)"),
    "train.crop": Interval(0, 16, integer=True),  # pixels of padding around a random crop of the image's size
    "train.augment": Interval(0, 2),  # version 1's one augmentation strength
}


def augment_strengths(a: float) -> tuple[float, float, float]:
    """(rotation in degrees, shift, scale) of version 1's single augmentation strength `a`."""
    rotation, shift, scale = V1_AUGMENT
    return rotation * a, shift * a, scale * a


@dataclass(frozen=True)
class Arch:
    """A plain CNN: stages of conv blocks, a transition between stages, then a head.

    `stages` holds the output width of every block, stage by stage, and `kinds` the kind of each
    block in the same shape (left out: every block a 3x3 conv, as in version 1). Between two stages
    sits a transition: a 2x2 max-pool, optionally with a 1x1 conv of `transition_width` channels
    before ("1x1_pool") or after ("pool_1x1") it. `head_width` is the hidden width of the gap_mlp head.
    `stem` shrinks a large image before the first stage: a 3x3 stride-2 conv to the first block's width
    (with its batch norm and activation), and with "stride2_pool" a 2x2 max-pool after it.
    """

    stages: tuple[tuple[int, ...], ...]
    transition: str
    transition_width: int
    padding: str
    head: str
    batch_norm: bool
    dropout: float
    kinds: tuple[tuple[str, ...], ...] = ()
    activation: str = "relu"
    head_width: int = 0
    in_channels: int = MNIST_SHAPE["in_channels"]
    input_size: int = MNIST_SHAPE["input_size"]
    num_classes: int = MNIST_SHAPE["num_classes"]
    stem: str = "none"

    def __post_init__(self) -> None:
        if not self.kinds:  # one in-memory form: "all 3x3 convs" is spelt out, so equal designs compare equal
            object.__setattr__(self, "kinds", tuple(("conv3",) * len(stage) for stage in self.stages))


@dataclass(frozen=True)
class Train:
    """The training schedule a candidate was sampled with (the number of epochs is the caller's)."""

    optimizer: str
    lr: float
    schedule: str
    batch_size: int
    label_smoothing: float
    weight_decay: float
    rotation: float = 0.0  # degrees: each image turns by U(-rotation, rotation)
    shift: float = 0.0  # fraction of the side: each image moves by U(-shift, shift) along each axis
    scale: float = 0.0  # each image is scaled by 1 + U(-scale, scale)
    ema: float = 0.0  # decay of an exponential moving average of the weights, which is then the model; 0 = off
    flip: float = 0.0  # probability that an image is mirrored left to right (0.5: either way alike); 0 = never
    crop: int = 0  # pad each side by `crop` pixels of black, then cut a random crop of the image's size; 0 = off


def v1_strength(train: Train) -> float | None:
    """The version-1 strength `augment` that these three strengths stand for, or None if none does."""
    a = train.rotation / V1_AUGMENT[0]
    close = all(math.isclose(value, limit * a, rel_tol=1e-9, abs_tol=1e-12)
                for value, limit in zip((train.shift, train.scale), V1_AUGMENT[1:]))
    return a if close else None


@dataclass(frozen=True)
class Spec:
    arch: Arch
    train: Train

    @property
    def code(self) -> str:
        """A short human-readable code that tells designs apart: every field that can differ between two
        designs is in it, e.g. `v c8-16 T8 c16-16-16 gapc bn d.05 | sgd .05 oc b128 ls0 wd0 a.5`.

        Numbers have 3 significant digits (the EMA decay 4). Left out where they change nothing: the
        transition's width with a plain max-pool, the head's width with any head but gap_mlp; left out
        where they are MNIST's: the input's channels and side (else `in3x32` first) and the classes (else
        `cls100` after the head). Stored trial records keep the code they were written with.
        """
        a, t = self.arch, self.train
        width = {"pool": "M", "1x1_pool": f"T{a.transition_width}", "pool_1x1": f"M{a.transition_width}"}
        kind = {"conv3": "", "sep3": "s", "conv1": "p"}  # a block's width is prefixed by its kind
        shape = (a.in_channels, a.input_size) != (MNIST_SHAPE["in_channels"], MNIST_SHAPE["input_size"])
        parts = [f"in{a.in_channels}x{a.input_size}"] if shape else []
        parts += {"none": [], "stride2": ["stem2"], "stride2_pool": ["stem2M"]}[a.stem]
        parts.append(a.padding[0])
        for i, (stage, kinds) in enumerate(zip(a.stages, a.kinds)):
            if i:
                parts.append(width[a.transition])
            parts.append("c" + "-".join(kind[k] + str(w) for w, k in zip(stage, kinds)))
        head = {"gap_conv": "gapc", "gap_linear": "gapl", "gap_mlp": f"gapm{a.head_width}",
                "flatten_linear": "fc"}[a.head]
        parts.append(head)
        parts += [] if a.num_classes == MNIST_SHAPE["num_classes"] else [f"cls{a.num_classes}"]
        parts.append("bn" if a.batch_norm else "nobn")
        parts += [] if a.activation == "relu" else [{"leaky_relu": "lrelu"}.get(a.activation, a.activation)]
        parts.append(f"d{_short(a.dropout)}")
        sched = {"onecycle": "oc", "cosine": "cos", "step": "step", "constant": "const"}[t.schedule]
        parts += ["|", t.optimizer, _short(t.lr), sched, f"b{t.batch_size}", f"ls{_short(t.label_smoothing)}",
                  f"wd{_short(t.weight_decay)}"]
        strength = v1_strength(t)  # in version 1's proportions: its code, unchanged
        parts += ([f"a{_short(strength)}"] if strength is not None
                  else [f"rot{_short(t.rotation)}", f"sh{_short(t.shift)}", f"sc{_short(t.scale)}"])
        parts += [f"ema{_short(t.ema, 4)}"] if t.ema else []
        parts += ([f"fl{_short(t.flip)}"] if t.flip else []) + ([f"cr{t.crop}"] if t.crop else [])
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The version-2 JSON form: {"version": 2, "arch": {...}, "train": {...}}; the fields of LEFT_OUT only
        where they differ from their default."""
        data = asdict(self)
        for part, defaults in LEFT_OUT.items():
            data[part] = {k: v for k, v in data[part].items() if k not in defaults or v != defaults[k]}
        return {"version": VERSION, **data}

    @classmethod
    def from_dict(cls, data: Any) -> "Spec":
        """Build and validate a spec from its JSON form, version 1 or 2; raises SpecError naming what is wrong."""
        if not isinstance(data, dict):
            raise SpecError("a spec is an object with the keys 'version', 'arch' and 'train'")
        version = data.get("version", 1)  # version 1 had no version key
        if not _is_int(version) or not 1 <= version <= VERSION:
            raise SpecError(f"unknown spec version {version!r}: this nas-budget reads spec versions 1 and {VERSION}")
        if set(data) - {"version"} != {"arch", "train"}:
            raise SpecError("a spec is an object with exactly the keys 'arch' and 'train' (and 'version')")
        arch, train = (_upgrade_v1(data["arch"], data["train"]) if version == 1 else (data["arch"], data["train"]))
        arch_data = dict(_fields_of(Arch, arch, "arch"))
        for key, what in (("stages", "channel widths"), ("kinds", "block kinds")):
            value = arch_data.get(key, ())
            if not isinstance(value, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in value):
                raise SpecError(f"arch.{key} must be a list of lists of {what}")
            arch_data[key] = tuple(tuple(s) for s in value)
        spec = cls(Arch(**arch_data), Train(**_fields_of(Train, train, "train")))
        validate(spec)
        return spec


def _upgrade_v1(arch: Any, train: Any) -> tuple[Any, Any]:
    """Version 1 -> version 2: its blocks were all 3x3 convs with ReLU (the defaults), and its one
    augmentation strength `augment` becomes the three strengths it stood for."""
    newer = {"arch": {"kinds", "activation", "head_width", *LEFT_OUT["arch"]},
             "train": {"rotation", "shift", "scale", "ema", *LEFT_OUT["train"]}}
    for where, block in (("arch", arch), ("train", train)):
        if isinstance(block, dict) and set(block) & newer[where]:
            keys = ", ".join(sorted(set(block) & newer[where]))
            raise SpecError(f"{where}: {keys}: only in spec version {VERSION}; add \"version\": {VERSION} "
                            "(a spec without one is read as version 1)")
    if not isinstance(train, dict):
        return arch, train  # _fields_of says what is wrong
    if "augment" not in train:
        raise SpecError("train: missing key(s) augment")
    a = train["augment"]
    _check_range("train.augment", a)
    upgraded = {k: v for k, v in train.items() if k != "augment"}
    upgraded.update(zip(("rotation", "shift", "scale"), augment_strengths(a)))
    return arch, upgraded


def _short(x: float, digits: int = 3) -> str:
    """0.05 -> '.05', 1.0 -> '1', 0.0 -> '0': compact numbers for codes."""
    text = f"{x:.{digits}g}"
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


def _check_range(key: str, value: Any) -> None:
    _check(RANGES[key].admits(value), RANGES[key].must_be(key))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def feature_sizes(arch: Arch) -> list[int]:
    """Spatial size of the feature map after each stage (before the next transition)."""
    size, shrink, sizes = stem_size(arch.input_size, arch.stem), (2 if arch.padding == "valid" else 0), []
    for i, kinds in enumerate(arch.kinds):
        if i:
            size //= 2  # every transition has a 2x2 max-pool
        size -= shrink * sum(kind != "conv1" for kind in kinds)  # a 1x1 conv keeps the size, even unpadded
        sizes.append(size)
    return sizes


def stem_size(size: int, stem: str) -> int:
    """The side of the map after the stem: the stride-2 conv (padding 1) halves it, rounding up; the pool halves it."""
    if stem == "none":
        return size
    size = (size + 1) // 2
    return size // 2 if stem == "stride2_pool" else size


def validate(spec: Spec) -> None:
    """Raise SpecError if the spec cannot be built or trained."""
    a, t = spec.arch, spec.train
    _check(len(a.stages) >= 1 and all(len(s) >= 1 for s in a.stages), "arch.stages: every stage needs a block")
    for key, count, what in (("arch.stages", len(a.stages), "stages"),
                             ("arch.blocks_per_stage", max(map(len, a.stages)), "blocks in a stage")):
        r = RANGES[key]
        _check(r.admits(count), f"arch.stages: {count} {what}, expected {r.low:g} to {r.high:g}")
    _check(all(RANGES["arch.width"].admits(w) for s in a.stages for w in s),
           f"arch.stages: each width must be {RANGES['arch.width'].expected()}")
    _check(len(a.kinds) == len(a.stages) and all(len(k) == len(s) for k, s in zip(a.kinds, a.stages)),
           "arch.kinds must give one block kind per width in arch.stages")
    _check(all(k in BLOCKS for kinds in a.kinds for k in kinds), f"arch.kinds: each must be one of {', '.join(BLOCKS)}")
    _check(a.activation in ACTIVATIONS, f"arch.activation must be one of {', '.join(ACTIVATIONS)}")
    _check(a.transition in TRANSITIONS, f"arch.transition must be one of {', '.join(TRANSITIONS)}")
    _check_range("arch.transition_width", a.transition_width)
    _check(a.transition == "pool" or a.transition_width >= 1, "arch.transition_width must be >= 1 with a 1x1 conv")
    _check(a.padding in PADDINGS, f"arch.padding must be one of {', '.join(PADDINGS)}")
    _check(a.head in HEADS, f"arch.head must be one of {', '.join(HEADS)}")
    _check_range("arch.head_width", a.head_width)
    _check(a.head != "gap_mlp" or a.head_width >= 1, "arch.head_width must be >= 1 with the gap_mlp head")
    _check(isinstance(a.batch_norm, bool), "arch.batch_norm must be true or false")
    _check(a.stem in STEMS, f"arch.stem must be one of {', '.join(STEMS)}")
    for name in ("dropout", "in_channels", "input_size", "num_classes"):
        _check_range(f"arch.{name}", getattr(a, name))
    _check(min(feature_sizes(a)) >= 1, f"arch: the feature map shrinks below 1 pixel ({a.padding} padding)")
    _check(t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}")
    _check(t.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}")
    for name in ("lr", "batch_size", "label_smoothing", "weight_decay", "rotation", "shift", "scale", "ema", "flip",
                 "crop"):
        _check_range(f"train.{name}", getattr(t, name))


def load_spec(path: str | os.PathLike) -> Spec:
    """Read a spec file: a bare spec (as a trial's `spec` attribute) or a `best.json`-style record.

    `path` may also name a bundled spec (`found/b8000`, `reference/4_final`, with or without `.json`) when
    no file of that path exists (nas.bundled.find_spec); a missing one's error lists the bundled names.

    Only a regular file of at most TEXT_LIMIT bytes is read (files.read_text_file): a FIFO, a device or a
    huge file is refused (SpecError) before it is read."""
    path = find_spec(path)
    text = read_text_file(path, "spec file", TEXT_LIMIT, SpecError, spec_names_hint())
    try:
        data = json.loads(text)
    except ValueError as exc:  # malformed JSON, or an integer of more than 4,300 digits
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
