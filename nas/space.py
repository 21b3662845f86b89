"""Search spaces: a declarative YAML file -> a validated `Space`; `Space.sample(trial)` -> `Spec`.

This is the only module that calls `trial.suggest_*`. Every key of a space file is a
*domain*: a list of choices, a range `{low, high[, step][, log]}`, or a single fixed value.
`train.lr` may instead map each optimizer to its own domain. The keys added with spec version 2
(`arch.block`, `arch.activation`, `arch.head_width`, `train.ema`, `train.rotation`, `train.shift`,
`train.scale`) may be left out and then take version 1's value, so older space files draw exactly
the specs (and parameter names) they drew before; such a file's `train.augment` is still drawn as
`augment` and mapped onto the three augmentation strengths.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator, Union

import optuna
import yaml

from .bundled import find_space, spaces
from .errors import SpaceError, first_line
from .files import TEXT_LIMIT, read_text_file
from .spec import (ACTIVATIONS, BLOCKS, HEADS, OPTIMIZERS, PADDINGS, RANGES, SCHEDULES, TRANSITIONS, Arch, Interval,
                   Spec, Train, augment_strengths, feature_sizes, v1_strength)


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
_KEYS: dict[str, tuple[str, Any, str]] = {
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
}
# Keys a space file may leave out, with version 1's value. (train.augment and the three strengths are either
# or: a file with neither draws no augmentation. arch.head_width is needed only where gap_mlp is offered.)
_DEFAULTS: dict[str, tuple] = {"arch.block": ("conv3",), "arch.activation": ("relu",), "train.ema": (0.0,),
                               "train.rotation": (0.0,), "train.shift": (0.0,), "train.scale": (0.0,)}
_OPTIONAL = {*_DEFAULTS, "arch.head_width", "train.augment", "train.lr"}


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _parse_domain(raw: Any, key: str, where: str) -> Domain:
    kind, ok, expected = _KEYS[key]

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


@dataclass(frozen=True)
class Space:
    name: str
    path: str
    domains: dict[str, Domain]  # "arch.width" -> domain; "train.lr.sgd" for per-optimizer LRs
    # the data's in_channels, input_size and num_classes, given to every spec drawn; (): MNIST's (the defaults)
    shape: tuple[tuple[str, int], ...] = ()

    def for_data(self, shape: dict[str, int]) -> "Space":
        """This space drawing specs for data of `shape` ({in_channels, input_size, num_classes})."""
        return replace(self, shape=tuple(sorted(shape.items())))

    def sample(self, trial: optuna.trial.BaseTrial) -> Spec:
        """Draw one candidate. Parameter names are stable, so studies can be resumed and compared."""
        return self._shaped(Spec(self._arch(trial), self._train(trial)))

    def _shaped(self, spec: Spec) -> Spec:
        return replace(spec, arch=replace(spec.arch, **dict(self.shape))) if self.shape else spec

    def _draw(self, trial: optuna.trial.BaseTrial, key: str, name: str | None = None) -> Any:
        return _suggest(trial, name or key.split(".")[-1], self.domains[key])

    def _arch(self, trial: optuna.trial.BaseTrial) -> Arch:
        d = lambda key, name=None: self._draw(trial, key, name)  # noqa: E731
        n_stages = d("arch.stages")
        blocks = [d("arch.blocks_per_stage", f"blocks_s{s + 1}") for s in range(n_stages)]
        per_block = lambda key, name: tuple(  # noqa: E731 (one value per block, e.g. width_s2_b1)
            tuple(d(key, f"{name}_s{s + 1}_b{b + 1}") for b in range(n)) for s, n in enumerate(blocks))
        stages, kinds = per_block("arch.width", "width"), per_block("arch.block", "block")
        transition = d("arch.transition") if n_stages > 1 else "pool"
        transition_width = d("arch.transition_width") if transition != "pool" else 0
        # 'valid' padding is only offered where the feature map stays at least 3 pixels wide
        paddings = tuple(p for p in self.domains["arch.padding"] if p == "same" or _fits_valid(stages, kinds))
        padding = _suggest(trial, "padding", paddings or ("same",))
        head = d("arch.head")
        batch_norm, dropout = d("arch.batch_norm"), float(d("arch.dropout"))
        activation = d("arch.activation")
        head_width = d("arch.head_width") if head == "gap_mlp" else 0
        return Arch(stages, transition, transition_width, padding, head, batch_norm, dropout, kinds=kinds,
                    activation=activation, head_width=head_width)

    def _train(self, trial: optuna.trial.BaseTrial) -> Train:
        d = lambda key, name=None: self._draw(trial, key, name)  # noqa: E731
        optimizer = d("train.optimizer")
        lr_key = f"train.lr.{optimizer}" if f"train.lr.{optimizer}" in self.domains else "train.lr"
        lr = _suggest(trial, f"lr_{optimizer}" if lr_key != "train.lr" else "lr", self.domains[lr_key])
        schedule, batch_size = d("train.schedule"), d("train.batch_size")
        label_smoothing, weight_decay = float(d("train.label_smoothing")), float(d("train.weight_decay"))
        if "train.augment" in self.domains:  # a version-1 space: one strength, drawn under its old name
            rotation, shift, scale = augment_strengths(float(d("train.augment")))
        else:
            rotation, shift, scale = (float(d(f"train.{key}")) for key in ("rotation", "shift", "scale"))
        return Train(optimizer, float(lr), schedule, batch_size, label_smoothing, weight_decay,
                     rotation=rotation, shift=shift, scale=scale, ema=float(d("train.ema")))

    def params_for(self, spec: Spec) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]] | None:
        """The sampled parameters that stand for `spec` in this space (to enqueue it as a trial).

        A number outside its range (or off its step) is moved to the nearest value the space draws,
        and listed in the second dict as name -> (spec's value, value used); a choice the space does
        not offer, or a fixed choice that differs, gives None: the space cannot draw that design.
        """
        a, t = spec.arch, spec.train
        # a version-1 space draws one strength: the spec's own if it has v1's proportions, else the largest
        strength = v1_strength(t)
        if strength is None:
            strength = max(value / limit for value, limit in zip((t.rotation, t.shift, t.scale), augment_strengths(1)))
        answers: dict[str, Any] = {  # every name sample() may ask for, with the spec's value
            "stages": len(a.stages), "transition": a.transition, "transition_width": a.transition_width,
            "padding": a.padding, "activation": a.activation, "head": a.head, "head_width": a.head_width,
            "batch_norm": a.batch_norm, "dropout": a.dropout,
            "optimizer": t.optimizer, "lr": t.lr, f"lr_{t.optimizer}": t.lr, "schedule": t.schedule,
            "batch_size": t.batch_size, "label_smoothing": t.label_smoothing, "weight_decay": t.weight_decay,
            "augment": strength, "rotation": t.rotation, "shift": t.shift, "scale": t.scale, "ema": t.ema}
        for s, (stage, kinds) in enumerate(zip(a.stages, a.kinds)):
            answers[f"blocks_s{s + 1}"] = len(stage)
            answers.update({f"width_s{s + 1}_b{b + 1}": width for b, width in enumerate(stage)})
            answers.update({f"block_s{s + 1}_b{b + 1}": kind for b, kind in enumerate(kinds)})
        replay = _Replay(answers)
        try:
            drawn = self.sample(replay)  # type: ignore[arg-type] (it has the suggest_* calls sample makes)
        except _Outside:
            return None
        moved = {name: (answers[name], value) for name, value in replay.params.items() if value != answers[name]}
        drawn_fields = {"lr" if name.startswith("lr_") else name for name in replay.params}  # lr_sgd: lr
        if "augment" in replay.params:
            drawn_fields |= {"rotation", "shift", "scale"}
            if v1_strength(t) is None:  # say what the one strength replaced
                old = f"rotation {t.rotation:g}, shift {t.shift:g}, scale {t.scale:g}"
                moved["augment"] = (old, replay.params["augment"])
        # a training value the space fixes (one choice: nothing is suggested) is not replayed: compare it here
        for field in fields(Train):
            mine, fixed = getattr(t, field.name), getattr(drawn.train, field.name)
            if field.name not in drawn_fields and mine != fixed:
                if isinstance(mine, str):  # e.g. a constant LR where the space fixes one-cycle
                    return None
                moved[field.name] = (mine, fixed)
        # the architecture itself must be drawable as it is (its dropout may move into range)
        return (replay.params, moved) if replace(drawn.arch, dropout=a.dropout) == a else None

    def nearest(self, key: str, value: Any) -> Any:
        """The value nearest `value` that the domain of `key` (e.g. "arch.width") draws; `value` itself
        where the space has no such key."""
        domain = self.domains.get(key)
        if domain is None:
            return value
        if isinstance(domain, tuple):
            return min(domain, key=lambda choice: abs(choice - value))
        if domain.integer:
            return int(_snap(value, domain.low, domain.high, domain.step or 1))
        return _snap(value, domain.low, domain.high, domain.step)

    def lowest_specs(self) -> Iterator[Spec]:
        """Every spec with each numeric choice at its low end, for each combination of the architecture's
        categorical choices (the training choices, which do not change the model, take their first):
        the smallest model the space can build is one of them."""
        train = self._train(_Lowest(None))  # type: ignore[arg-type] (it has the suggest_* calls sample makes)
        stack: list[dict[str, Any]] = [{}]
        while stack:
            chosen = stack.pop()
            try:
                yield self._shaped(Spec(self._arch(_Lowest(chosen)), train))  # type: ignore[arg-type]
            except _Branch as branch:
                stack.extend({**chosen, branch.name: choice} for choice in branch.choices)

    def spec_from_params(self, params: dict[str, Any]) -> Spec | None:
        """The spec a set of sampled parameters stands for, or None if some parameter is missing."""
        try:
            return self.sample(optuna.trial.FixedTrial(params))
        except ValueError:  # FixedTrial: a parameter it was not given
            return None

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of what the space draws: its parsed domains (left-out keys at their defaults), as
        canonical JSON, so whitespace, comments, key order, `description`, the name and `1` for `1.0` in a
        float key do not count; the order of choices does (samplers see choices in order)."""
        def number(key: str, value: Any) -> Any:
            kind = _KEYS.get(key, _KEYS["train.lr"])[0]  # train.lr.<optimizer>: train.lr's kind
            return float(value) if kind == "float" and not isinstance(value, bool) else value

        canonical: dict[str, Any] = {}
        for key, domain in sorted(self.domains.items()):
            if isinstance(domain, Range):
                canonical[key] = {"low": number(key, domain.low), "high": number(key, domain.high),
                                  "step": None if domain.step is None else number(key, domain.step),
                                  "log": domain.log}
            else:
                canonical[key] = [number(key, choice) for choice in domain]
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class _Outside(Exception):
    pass


class _Replay:
    """A stand-in trial that answers each suggest_* with a given value, moved into its range."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.params = answers, {}

    def _number(self, name: str, low: float, high: float, step: float | None) -> float:
        if name not in self.answers:  # e.g. blocks_s2 of a one-stage design, where the space has 2-3 stages
            raise _Outside(name)
        value = _snap(self.answers[name], low, high, step)
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return int(self._number(name, low, high, step))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return float(self._number(name, low, high, step))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if name not in self.answers or self.answers[name] not in choices:
            raise _Outside(name)
        self.params[name] = self.answers[name]
        return self.answers[name]


class _Branch(Exception):
    def __init__(self, name: str, choices: list[Any]) -> None:
        self.name, self.choices = name, choices


class _Lowest:
    """A stand-in trial: numbers at their low end, categorical choices from `chosen` (else branch on them),
    or with `chosen` None, each categorical's first choice."""

    def __init__(self, chosen: dict[str, Any] | None) -> None:
        self.chosen = chosen

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if self.chosen is None:
            return choices[0]
        if name not in self.chosen:
            raise _Branch(name, list(choices))
        return self.chosen[name]


def _fits_valid(stages: tuple[tuple[int, ...], ...], kinds: tuple[tuple[str, ...], ...]) -> bool:
    probe = Arch(stages, "pool", 0, "valid", "gap_conv", True, 0.0, kinds=kinds)
    return min(feature_sizes(probe)) >= 3


def _snap(value: float, low: float, high: float, step: float | None) -> float:
    """`value` moved into [low, high] and onto the step's grid: the nearest value such a range draws."""
    value = min(max(value, low), high)
    return low + round((value - low) / step) * step if step else value


def _suggest(trial: optuna.trial.BaseTrial, name: str, domain: Domain) -> Any:
    if isinstance(domain, tuple):
        return domain[0] if len(domain) == 1 else trial.suggest_categorical(name, list(domain))
    if domain.integer:
        return trial.suggest_int(name, domain.low, domain.high, step=domain.step or 1, log=domain.log)
    return trial.suggest_float(name, domain.low, domain.high, step=domain.step, log=domain.log)


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


def load_space(path: str | Path) -> Space:
    """Read and validate a search-space file (a path, or a bundled space's name such as `mnist_tiny`);
    raises SpaceError naming the file and key.

    Only a regular file of at most TEXT_LIMIT bytes is read (files.read_text_file), and YAML anchors and
    aliases are refused, so a hostile file costs bounded time and memory."""
    path = find_space(str(path))
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
    where = str(path)
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: expected a mapping with keys 'name', 'arch' and 'train'")
    unknown = set(raw) - {"name", "description", "arch", "train"}
    if unknown:
        raise SpaceError(f"{where}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise SpaceError(f"{where}: name: expected letters, digits, '-' or '_', got {name!r}")
    domains: dict[str, Domain] = {}
    for section in ("arch", "train"):
        block = raw.get(section)
        if not isinstance(block, dict):
            raise SpaceError(f"{where}: {section}: expected a mapping of keys to domains, got {block!r}")
        for key, value in block.items():
            full = f"{section}.{key}"
            if full not in _KEYS:
                allowed = ", ".join(k.split(".")[1] for k in _KEYS if k.startswith(section))
                raise SpaceError(f"{where}: {full}: unknown key (expected one of {allowed})")
            if full == "train.lr" and isinstance(value, dict) and not {"low", "high"} & set(value):
                for opt, sub in value.items():  # one LR domain per optimizer
                    if opt not in OPTIMIZERS:
                        raise SpaceError(f"{where}: train.lr.{opt}: unknown optimizer (expected {', '.join(OPTIMIZERS)})")
                    domains[f"train.lr.{opt}"] = _parse_domain(sub, "train.lr", where)
                continue
            domains[full] = _parse_domain(value, full, where)
    missing = [k for k in _KEYS if k not in domains and k not in _OPTIONAL]
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
    return Space(name, str(path), {**_DEFAULTS, **domains})
