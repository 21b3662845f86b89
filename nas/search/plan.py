"""A search's plan: every input of `nas search` checked before any storage is touched or any data loaded (the
budgets against the space's smallest models, the data, the study's name, seeds, rungs, warm starts and the
output folder), so that bad input is one line before anything is created."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cost import Budgets, check_budgets
from ..data import DataInfo, DataSource, check_data, search_sizes, source_from_args
from ..device import resolve_device, usable_cores
from ..errors import UsageError
from ..fidelity import Fidelity, ladder, parse_rung
from ..space import Space, load_space
from ..store.storage import check_study_name, default_storage, output_dir, studies_dir
from ..store.winner import MAX_FINALIST_SEEDS
from .neighbours import neighbours_default
from .objective import FILLED
from .warm_start import warm_starts

MAX_BUDGET = 10**9  # storages keep 64-bit integers; no CNN here comes near this
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take 32-bit seeds


@dataclass(frozen=True)
class Plan:
    """A search's inputs, checked before any storage is touched or any data loaded."""

    space: Space
    study_name: str
    root: Path
    url: str
    out: Path
    device: torch.device
    data_dir: Path
    trials: int | None
    full: Fidelity
    val_images: int
    asked_rungs: list[Fidelity] | None  # None: the default ladder (or the study's own)
    cheap: tuple[Fidelity, ...]
    starts: list
    neighbours: int = 0  # --neighbours, or its default for this run (`neighbours_default`)
    source: DataSource = DataSource()
    data: DataInfo | None = None


def make_plan(args: argparse.Namespace) -> Plan:
    """Every check that needs no storage: bad input is one line before anything is created."""
    trials = args.trials if args.trials is not None or args.timeout is not None else 50
    if args.budget > MAX_BUDGET:
        raise UsageError(f"--budget {args.budget} is out of range (at most {MAX_BUDGET:,})")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed {args.seed} is out of range (0 to {MAX_SEED})")
    if args.jobs > (cores := usable_cores()):  # on a GPU too: each worker's Python feeds its kernels from a core
        raise UsageError(f"--jobs {args.jobs} is more than the {cores} CPU core(s) this process may use: each "
                         f"worker process needs a core of its own (and about 850 MB of memory); use --jobs {cores} "
                         "or fewer")
    space = load_space(args.space)
    source = source_from_args(args)
    info = check_data(source)  # bad or missing data: one line now, not from every worker
    space = space.for_data(info.shape, flips=info.mirrorable)  # the data's shape, the size rule, flips
    check_budgets(budgets_of(args), space.lowest_specs(), f"space {space.name}")
    # the default name: <space>-b<budget> on MNIST (as ever), <space>-<data>-b<budget> on other data
    named = "" if source.name == "mnist" else re.sub(r"[^A-Za-z0-9_.-]+", "_", str(info.identity["name"]))
    study_name = check_study_name(args.study or default_study_name(space.name, budgets_of(args), named))
    root = studies_dir(args.studies_dir)
    device = resolve_device(args.device)
    data_dir = Path(source.data_dir)
    train_images, val_images = search_sizes(args.subset, source)
    if trials is not None and args.seed + trials > MAX_SEED:  # before open_storage creates a new study's database
        raise UsageError(f"--seed {args.seed} plus {trials:,} trials passes {MAX_SEED} "
                         "(trial seeds are --seed + trial number): use a smaller --seed")
    if not args.eta > 1:
        raise UsageError(f"--eta {args.eta:g} must be > 1 (the best 1/ETA of a rung are promoted)")
    if args.startup_trials is not None and args.sampler != "tpe":
        raise UsageError(f"--startup-trials is TPE's: --sampler {args.sampler} has no model to start")
    if args.widths == FILLED and space.arch is not None:
        raise UsageError(f"--widths filled: space {space.name} has a fixed architecture (only the training is drawn): "
                         "there are no drawn widths to scale")
    if args.finalist_seeds > MAX_FINALIST_SEEDS:
        raise UsageError(f"--finalist-seeds {args.finalist_seeds} is more than {MAX_FINALIST_SEEDS}")
    full = Fidelity(args.epochs, train_images)
    asked = None if args.rungs is None else [] if args.rungs == ["none"] else [parse_rung(t) for t in args.rungs]
    cheap = ladder(full, asked)[:-1]
    starts = warm_starts(space, budgets_of(args), args.warm_start or [], references=not args.no_warm_start)
    url = args.storage or default_storage(root, study_name, args.jobs)
    out = output_dir(root, study_name, url)
    _check_writable(out)
    neighbours = args.neighbours if args.neighbours is not None else neighbours_default(starts)
    return Plan(space, study_name, root, url, out, device, data_dir, trials, full, val_images, asked, cheap, starts,
                neighbours, source, info)


def default_study_name(space: str, budgets: Budgets, data: str = "") -> str:
    """`<space>-b<budget>`, then each device budget: `mnist-b8000-ram12000-flash6000` (another search, another
    study); on other data than MNIST its name after the space's: `colour32-cifar10-b50000`."""
    device = [f"-{name}{value}" for name, value in (("macs", budgets.macs), ("ram", budgets.ram),
                                                      ("flash", budgets.flash)) if value is not None]
    return f"{space}{'-' + data if data else ''}-b{budgets.params}" + "".join(device)


def budgets_of(args: argparse.Namespace) -> Budgets:
    return Budgets(args.budget, args.max_macs, args.max_ram, args.max_flash)


def _check_writable(out: Path) -> None:
    """Refuse, before any training, an output folder that cannot be written."""
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the study's outputs into {out}: {parent} is not a writable directory")
