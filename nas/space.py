"""Search spaces: a `Space` of domains (read from a YAML file by nas.space_file) -> `Space.sample(trial)` -> `Spec`.

This is the only module that calls `trial.suggest_*`. `Space.for_data` fits a space to the data: the data's
shape in every spec, the size rule (nas.size_rule) for images above 32 px, no flips for digits and letters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import optuna

from .errors import SpaceError  # noqa: F401 (nas.space.SpaceError: the error load_space raises)
from .size_rule import size_rule
from .space_file import KEYS, UNHASHED, Domain, Range, read_space_file
from .spec import MNIST_SHAPE, Arch, Spec, Train, augment_strengths, feature_sizes, v1_strength


@dataclass(frozen=True)
class Space:
    name: str
    path: str
    domains: dict[str, Domain]  # "arch.width" -> domain; "train.lr.sgd" for per-optimizer LRs
    # a space file's `arch: <spec>`: that spec, whose architecture every candidate has (only the training is
    # drawn) and whose recipe is a warm start, and its name as the file gives it; None and "" otherwise
    fixed: Spec | None = None
    fixed_from: str = ""
    # the data's in_channels, input_size and num_classes (and the size rule's stem), given to every spec drawn;
    # (): MNIST's (the defaults)
    shape: tuple[tuple[str, Any], ...] = ()
    rule: str = ""  # what for_data changed, for the search's header ("" where nothing)

    def for_data(self, shape: dict[str, int], flips: bool = True) -> "Space":
        """This space drawing specs for data of `shape` ({in_channels, input_size, num_classes}).

        Images above 32 px meet the size rule (nas.size_rule): every spec gets its stem, and the stages
        domain loses the counts too few to bring the map to about 8 px. With `flips` False (digits and
        letters, which a mirror turns into other glyphs or none) the space never draws a flip. Otherwise the
        domains, and so the content hash, are the file's: 28 and 32 px data draws what it always drew."""
        domains, given, said = dict(self.domains), dict(shape), []
        rule = size_rule(shape["input_size"])
        if rule is not None:
            if "arch.stages" in domains:  # (a fixed architecture gets the stem only)
                domains["arch.stages"] = rule.stage_domain(domains["arch.stages"])
            given["stem"] = rule.stem
            said.append(f"size rule: {rule}")
        if not flips and domains.get("train.flip", (0.0,)) != (0.0,):
            domains["train.flip"] = (0.0,)
            said.append("no horizontal flips: the data's classes are digits or letters")
        if given == MNIST_SHAPE and domains == self.domains:
            return self
        return replace(self, domains=domains, shape=tuple(sorted(given.items())), rule="; ".join(said))

    @property
    def arch(self) -> Arch | None:
        """The fixed architecture every candidate has; None where the space draws architectures."""
        return self.fixed.arch if self.fixed is not None else None

    def sample(self, trial: optuna.trial.BaseTrial) -> Spec:
        """Draw one candidate. Parameter names are stable, so studies can be resumed and compared."""
        return self._shaped(Spec(self.arch if self.arch is not None else self._arch(trial), self._train(trial)))

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
        paddings = tuple(p for p in self.domains["arch.padding"] if p == "same" or self._fits_valid(stages, kinds))
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
                     rotation=rotation, shift=shift, scale=scale, ema=float(d("train.ema")),
                     flip=float(d("train.flip")), crop=int(d("train.crop")))

    def _fits_valid(self, stages: tuple[tuple[int, ...], ...], kinds: tuple[tuple[str, ...], ...]) -> bool:
        """Whether 'valid' padding keeps the map at least 3 px wide: at MNIST's 28 px (as ever), or at the data's
        size behind the size rule's stem."""
        shaped = dict(self.shape)
        at = {"input_size": shaped["input_size"], "stem": shaped["stem"]} if "stem" in shaped else {}
        probe = Arch(stages, "pool", 0, "valid", "gap_conv", True, 0.0, kinds=kinds, **at)
        return min(feature_sizes(probe)) >= 3

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
            "augment": strength, "rotation": t.rotation, "shift": t.shift, "scale": t.scale, "ema": t.ema,
            "flip": t.flip, "crop": t.crop}
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
        # the architecture itself must be drawable as it is (its dropout may move into range), or be the fixed one
        same = drawn.arch == a if self.arch is not None else replace(drawn.arch, dropout=a.dropout) == a
        return (replay.params, moved) if same else None

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
        if self.arch is not None:
            yield self._shaped(Spec(self.arch, train))
            return
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
        float key do not count; the order of choices does (samplers see choices in order). A fixed
        architecture counts by its fields, not by the spec file's name."""
        def number(key: str, value: Any) -> Any:
            kind = KEYS.get(key, KEYS["train.lr"])[0]  # train.lr.<optimizer>: train.lr's kind
            return float(value) if kind == "float" and not isinstance(value, bool) else value

        canonical: dict[str, Any] = {}
        for key, domain in sorted(self.domains.items()):
            if UNHASHED.get(key) == domain:  # a key added later, at the default that draws what studies drew before
                continue
            if isinstance(domain, Range):
                canonical[key] = {"low": number(key, domain.low), "high": number(key, domain.high),
                                  "step": None if domain.step is None else number(key, domain.step),
                                  "log": domain.log}
            else:
                canonical[key] = [number(key, choice) for choice in domain]
        if self.arch is not None:  # a fixed architecture: what it is (its file may change under the same name)
            canonical["arch"] = asdict(self.arch)
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




def load_space(path: str | Path) -> Space:
    """Read and validate a search-space file (a path, or a bundled space's name such as `mnist_tiny`); raises
    SpaceError naming the file and key (nas.space_file.read_space_file)."""
    return Space(*read_space_file(path))
