"""Search-space files: the keys a space file may hold, the domain each takes, and reading a file into domains.

`arch` may instead name a spec file (a path, from the space file's folder or the working directory, or a
bundled spec such as `found/b8000`): every candidate then has that spec's architecture, and only the training
is drawn (a search for the training recipe of a known model).

Every key of a space file is a *domain*: a list of choices, a range `{low, high[, step][, log]}`, or a single
fixed value. `train.lr` may instead map each optimizer to its own domain. The keys added with spec version 2
(`arch.block`, `arch.activation`, `arch.head_width`, `train.ema`, `train.rotation`, `train.shift`,
`train.scale`) and later (`train.flip`, `train.crop`) may be left out and then take their old value, so older
space files draw exactly the specs (and parameter names) they drew before; such a file's `train.augment` is
still drawn as `augment` and mapped onto the three augmentation strengths. A file may `extends:` another
space and write only the keys it changes. `nas.space.load_space` turns the domains into a `Space`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import yaml

from .bundled import find_space, spaces
from .errors import SpaceError, SpecError, first_line
from .files import TEXT_LIMIT, read_text_file
from .spec import (ACTIVATIONS, BLOCKS, HEADS, OPTIMIZERS, PADDINGS, RANGES, SCHEDULES, TRANSITIONS, Interval, Spec,
                   load_spec)

@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None = None
    log: bool = False
    integer: bool = False



Domain = Union[Range, tuple]  # a Range, or a tuple of choices (one choice = a fixed value)


def _ranged(key: str, interval: Interval | None = None) -> tuple[str, Any, str]:
    """A numeric key: its values are checked against the spec's table of ranges (nas.spec.RANGES)."""
    interval = interval or RANGES[key]
    return ("int" if interval.integer else "float", interval.admits, interval.expected())


def _when_used(key: str) -> tuple[str, Any, str]:
    """A width that is 0 in a spec where it is unused: a space draws it only where it is used, so from 1."""
    return _ranged(key, replace(RANGES[key], low=max(RANGES[key].low, 1)))


# key -> (kind, check on every value the domain can take, what is expected)
KEYS: dict[str, tuple[str, Any, str]] = {
    "arch.stages": _ranged("arch.stages"),
    "arch.blocks_per_stage": _ranged("arch.blocks_per_stage"),
    "arch.width": _ranged("arch.width"),
    "arch.block": ("str", BLOCKS.__contains__, f"one of {', '.join(BLOCKS)}"),
    "arch.padding": ("str", PADDINGS.__contains__, f"one of {', '.join(PADDINGS)}"),
    "arch.transition": ("str", TRANSITIONS.__contains__, f"one of {', '.join(TRANSITIONS)}"),
    "arch.transition_width": _when_used("arch.transition_width"),
    "arch.activation": ("str", ACTIVATIONS.__contains__, f"one of {', '.join(ACTIVATIONS)}"),
    "arch.head": ("str", HEADS.__contains__, f"one of {', '.join(HEADS)}"),
    "arch.head_width": _when_used("arch.head_width"),
    "arch.batch_norm": ("bool", lambda v: True, "true or false"),
    "arch.dropout": _ranged("arch.dropout"),
    "train.optimizer": ("str", OPTIMIZERS.__contains__, f"one of {', '.join(OPTIMIZERS)}"),
    "train.lr": _ranged("train.lr"),
    "train.schedule": ("str", SCHEDULES.__contains__, f"one of {', '.join(SCHEDULES)}"),
    "train.batch_size": _ranged("train.batch_size"),
    "train.label_smoothing": _ranged("train.label_smoothing"),
    "train.weight_decay": _ranged("train.weight_decay"),
    "train.ema": _ranged("train.ema"),
    "train.augment": _ranged("train.augment"),
    "train.rotation": _ranged("train.rotation"),
    "train.shift": _ranged("train.shift"),
    "train.scale": _ranged("train.scale"),
    "train.flip": _ranged("train.flip"),
    "train.crop": _ranged("train.crop"),
}
# Keys a space file may leave out, with version 1's value. (train.augment and the three strengths are either
# or: a file with neither draws no augmentation. arch.head_width is needed only where gap_mlp is offered.)
DEFAULTS: dict[str, tuple] = {"arch.block": ("conv3",), "arch.activation": ("relu",), "train.ema": (0.0,),
                               "train.rotation": (0.0,), "train.shift": (0.0,), "train.scale": (0.0,),
                               "train.flip": (0.0,), "train.crop": (0,)}
# Defaults left out of a space's content hash: keys added after studies had stored their space's hash, whose
# default draws what those studies drew (nothing), so such a study's space keeps its hash.
UNHASHED = {"train.flip": (0.0,), "train.crop": (0,)}
OPTIONAL = {*DEFAULTS, "arch.head_width", "train.augment", "train.lr"}


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def parse_domain(raw: Any, key: str, where: str) -> Domain:
    kind, ok, expected = KEYS[key]

    def fail(what: str) -> SpaceError:
        return SpaceError(f"{where}: {key}: expected {what}, got {raw!r}")

    if isinstance(raw, dict):
        if kind not in ("int", "float") or not {"low", "high"} <= set(raw) or set(raw) - {"low", "high", "step", "log"}:
            raise fail(f"choices [..] or a range {{low, high[, step][, log]}} of {expected}")
        low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
        if not all(_of_kind(v, kind) and ok(v) for v in (low, high)) or low > high:
            raise fail(f"a range with low <= high, each {expected}")
        if step is not None and not (_of_kind(step, kind) and step > 0):
            raise fail("a positive step of the key's type")
        if not isinstance(log, bool) or (log and (low <= 0 or step is not None)):
            raise fail("log: true only with low > 0 and no step")
        return Range(low, high, step, log, integer=kind == "int")
    choices = tuple(raw) if isinstance(raw, list) else (raw,)
    if not choices or not all(_of_kind(v, kind) and ok(v) for v in choices):
        raise fail(f"{expected}, a list of them, or a range" if kind in ("int", "float") else f"{expected} or a list of them")
    return choices



class _Reference(yaml.YAMLError):
    """A YAML anchor (`&name`) or alias (`*name`) in a space file, at `line` (counting from 1)."""

    def __init__(self, kind: str, name: str, line: int) -> None:
        plural, sign = ("anchors", "&") if kind == "anchor" else ("aliases", "*")
        super().__init__(f"line {line}: YAML {plural} ({sign}{name}) are not allowed in a space file: "
                         "write each value out")
        self.line = line


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: nested aliases ("billion laughs") expand a few hundred bytes into
    billions of nodes. A space file needs none (the bundled ones use none), so the first anchor or alias is
    refused at its event, before anything is expanded."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Reference("alias", event.anchor, event.start_mark.line + 1)
        if getattr(event, "anchor", None) is not None:
            raise _Reference("anchor", event.anchor, event.start_mark.line + 1)
        return super().compose_node(parent, index)



EXTENDS_DEPTH = 8  # bases deeper than this are a mistake (or a chain built to cost time), not a design


def read_space_file(path: str | Path) -> tuple[str, str, dict[str, Domain], Spec | None, str]:
    """Read and validate a search-space file (a path, or a bundled space's name such as `mnist_tiny`): its name,
    path, domains (left-out keys at DEFAULTS), and the spec `arch:` names with that name as written (None
    and "" where `arch` holds domains); raises SpaceError naming the file and key. A file that `extends:`
    another space is that space with the file's own keys over it (`_merged`).

    Only a regular file of at most TEXT_LIMIT bytes is read (files.read_text_file), YAML anchors and
    aliases are refused, and bases go at most EXTENDS_DEPTH deep, so a hostile file costs bounded time and
    memory."""
    path = find_space(str(path))
    raw, arch_folder = _merged(path, ())
    return _parse(raw, path, arch_folder)


def _read_mapping(path: Path) -> dict[str, Any]:
    """One space file's own top-level mapping, as written (its `extends:` not yet followed)."""
    text = read_text_file(path, "search-space file", TEXT_LIMIT, SpaceError,
                          hint=f" (bundled spaces: {', '.join(spaces())})")
    try:
        raw = yaml.load(text, Loader=_PlainLoader)
    except _Reference as exc:
        raise SpaceError(f"{path}: {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. an integer of more than 4,300 digits
        raise SpaceError(f"{path}: not a readable YAML file ({first_line(exc)})") from None
    except RecursionError:  # e.g. '[' * 100000: the YAML parser recurses once per level
        raise SpaceError(f"{path}: not a readable YAML file (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping with keys 'name', 'arch' and 'train'")
    unknown = set(raw) - {"name", "description", "extends", "arch", "train"}
    if unknown:
        raise SpaceError(f"{path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    return raw


def _merged(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], Path]:
    """The file's mapping with `extends: <space>` followed: the base's `arch` and `train` keys, each replaced
    by the file's own value for that key (a whole domain: `train.lr` too), a key set to null dropped; a
    section that is not a mapping on both sides (`arch: <spec>`) is taken whole. The name and description
    are the file's own. Also the folder a fixed `arch: <spec>` is looked up from: the folder of the file
    that wrote it. The base must be a valid space by itself; its errors are prefixed with `<file>: extends:`."""
    raw = _read_mapping(path)
    if "extends" not in raw:
        return raw, path.parent
    value = raw.pop("extends")
    if not isinstance(value, str) or not value.strip() or "\0" in value:  # no path holds a NUL byte
        raise SpaceError(f"{path}: extends: expected a space file or a bundled space's name, got {value!r}")
    beside = path.parent / value
    base = beside if beside.is_file() else find_space(value)
    chain = (*chain, path.resolve())
    if base.resolve() in chain:
        raise SpaceError(f"{path}: extends: {value}: a loop ({' -> '.join(p.name for p in (*chain, base))})")
    if len(chain) >= EXTENDS_DEPTH:
        raise SpaceError(f"{path}: extends: more than {EXTENDS_DEPTH} spaces deep")
    try:
        base_raw, base_folder = _merged(base, chain)
        _parse(base_raw, base, base_folder)
    except SpaceError as exc:
        raise SpaceError(f"{path}: extends: {exc}") from None
    merged = {section: base_raw[section] for section in ("arch", "train") if section in base_raw}
    for section in ("arch", "train"):
        if isinstance(raw.get(section), dict) and isinstance(merged.get(section), dict):
            merged[section] = {k: v for k, v in {**merged[section], **raw[section]}.items() if v is not None}
        elif section in raw:
            merged[section] = raw[section]
    merged.update({key: raw[key] for key in ("name", "description") if key in raw})
    return merged, path.parent if isinstance(raw.get("arch"), str) else base_folder


def _parse(raw: dict[str, Any], path: Path, arch_folder: Path) -> tuple[str, str, dict[str, Domain], Spec | None, str]:
    """read_space_file's result from a file's (merged) mapping; errors name `path`."""
    where = str(path)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise SpaceError(f"{where}: name: expected letters, digits, '-' or '_', got {name!r}")
    domains: dict[str, Domain] = {}
    fixed = fixed_spec(raw["arch"], arch_folder, where) if isinstance(raw.get("arch"), str) else None
    for section in ("train",) if fixed else ("arch", "train"):
        block = raw.get(section)
        if not isinstance(block, dict):
            also = " (or a spec file, whose architecture every candidate takes)" if section == "arch" else ""
            raise SpaceError(f"{where}: {section}: expected a mapping of keys to domains{also}, got {block!r}")
        for key, value in block.items():
            full = f"{section}.{key}"
            if full not in KEYS:
                allowed = ", ".join(k.split(".")[1] for k in KEYS if k.startswith(section))
                raise SpaceError(f"{where}: {full}: unknown key (expected one of {allowed})")
            if full == "train.lr" and isinstance(value, dict) and not {"low", "high"} & set(value):
                for opt, sub in value.items():  # one LR domain per optimizer
                    if opt not in OPTIMIZERS:
                        raise SpaceError(f"{where}: train.lr.{opt}: unknown optimizer (expected {', '.join(OPTIMIZERS)})")
                    domains[f"train.lr.{opt}"] = parse_domain(sub, "train.lr", where)
                continue
            domains[full] = parse_domain(value, full, where)
    missing = [k for k in KEYS if k not in domains and k not in OPTIONAL and not (fixed and k.startswith("arch."))]
    if "train.lr" not in domains:
        optimizers = domains.get("train.optimizer", ())
        missing += [f"train.lr.{o}" for o in (optimizers if isinstance(optimizers, tuple) else ())
                    if f"train.lr.{o}" not in domains]
    heads = domains.get("arch.head", ())
    if "arch.head_width" not in domains and isinstance(heads, tuple) and "gap_mlp" in heads:
        missing.append("arch.head_width (the gap_mlp head needs it)")
    if missing:
        raise SpaceError(f"{where}: missing key(s) {', '.join(missing)}")
    strengths = [f"train.{k}" for k in ("rotation", "shift", "scale") if f"train.{k}" in domains]
    if "train.augment" in domains and strengths:
        raise SpaceError(f"{where}: train.augment (version 1's one strength) and {', '.join(strengths)} "
                         "exclude each other: use one or the other")
    defaults = {k: v for k, v in DEFAULTS.items() if not (fixed and k.startswith("arch."))}
    return name, str(path), {**defaults, **domains}, fixed, raw["arch"] if fixed else ""


def fixed_spec(value: str, folder: Path, where: str) -> Spec:
    """The spec a space file's `arch: <spec>` names: a path from `folder` (the space file's) where one is
    there, else as load_spec finds it (a path from the working directory, or a bundled spec)."""
    beside = folder / value
    try:
        return load_spec(beside if beside.is_file() else value)
    except SpecError as exc:
        raise SpaceError(f"{where}: arch: {exc}") from None
