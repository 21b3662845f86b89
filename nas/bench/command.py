"""`nas bench`: measure how fast the project's trainer trains against the pipeline people usually
write, in one run on one machine.

(a) `nas.train.train`: MNIST held in tensors on the device, batched augmentation, `speed_for(device)`.
(b) the usual pipeline (`nas.bench.baseline`): torchvision's MNIST, a `DataLoader` and per-sample PIL
    transforms, with the same model (same initial weights), optimizer and LR schedule.
Both train on the same 55,000 images and validate on the same 5,000 (`nas.data.search_split`).
Each is warmed up on a short run first. The last line is `ratio X`: (a)'s images/s over (b)'s.
`--ablation` times (a) alone with each setting switched in turn (`nas.bench.ablation`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..cli import add_device_args, positive_int
from ..cost import check_buildable, count_params
from ..errors import UsageError
from ..data import check_fits, data_info, header, load_search_data, source_from_args, with_shape
from ..device import describe, load_average, resolve_device
from ..memory import status_mb
from ..model import build
from ..spec import Arch, Spec, Train, load_spec
from ..train import speed_for
from .ablation import ablation, parse_speed
from .baseline import run_usual
from .timing import run_ours

# The classic hand-made final design (7,416 parameters), fixed here so the benchmark does not move
# when the search spaces or reference files change.
DEFAULT_SPEC = Spec(
    Arch(stages=((8, 16), (16, 16, 16)), transition="1x1_pool", transition_width=8, padding="valid",
         head="gap_conv", batch_norm=True, dropout=0.05),
    Train(optimizer="sgd", lr=0.05, schedule="onecycle", batch_size=128, label_smoothing=0.0,
          weight_decay=1e-4, rotation=7.5, shift=0.05, scale=0.05),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=2, help="timed epochs per pipeline")
    parser.add_argument("--spec", help="spec file to train, or a bundled spec's name (found/b8000) "
                             "(default: the classic 7,416-parameter design)")
    parser.add_argument("--subset", type=positive_int,
                        help="train on only this many of the 55,000 training images (for smoke runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings, so both start from the same weights")
    parser.add_argument("--threads", type=positive_int,
                        help="intra-op threads for the project's trainer (default: every usable core)")
    parser.add_argument("--speed", metavar="KEY=VALUE,...",
                        help="change (a)'s settings, e.g. channels_last=0,reuse_memory=0 (see nas.train.Speed)")
    parser.add_argument("--ablation", action="store_true",
                        help="time only the project's trainer, with each speed setting switched in turn")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="with --ablation: how many interleaved rounds each variant is timed")
    add_device_args(parser)


def run(args: argparse.Namespace) -> int:
    source = source_from_args(args)
    if source.name != "mnist" and not args.ablation:
        raise UsageError(f"--data {args.data}: the usual pipeline (b) reads MNIST through torchvision only; "
                         "time the project's trainer on other data with --ablation")
    info = data_info(source)  # loads (or downloads) the data's training images first, once
    spec = load_spec(args.spec) if args.spec else with_shape(DEFAULT_SPEC, info)  # the default: for the data's shape
    check_fits(spec, where=args.spec or "the default spec", info=info)  # before timing anything
    check_buildable(spec, where=args.spec or "the default spec")  # by its count, before it is built
    device = resolve_device(args.device)
    speed = parse_speed(args.speed or "", speed_for(device))
    threads = args.threads or torch.get_num_threads()  # resolve_device set every usable core
    data_dir = Path(source.data_dir)
    data = load_search_data(source, device, args.subset)
    rss = status_mb("VmRSS")  # torch, torchvision and (a)'s data loaded: the floor of both peaks below
    print(f"nas.bench on {describe(device)}, device {device}, torch {torch.__version__}, load {load_average()}"
          + (f", process RSS {rss:,.0f} MB before training" if rss is not None else ""))
    if not info.is_mnist:
        print(header(info))
    print(f"model {spec.code} ({count_params(build(spec)):,} params), {len(data.train):,} training / "
          f"{len(data.held_out):,} validation images, {args.epochs} timed epoch(s) after a warm-up")
    print(f"(a) settings: {speed}", flush=True)
    if args.ablation:
        ablation(spec, data, args.epochs, args.seed, args.rounds, threads, speed)
        print(f"load after: {load_average()}")
        return 0
    # (b) first, in the process as torch starts it (default threads, default allocator settings);
    # (a)'s tensors are freed meanwhile, so neither pipeline's peak memory holds the other's data
    del data
    usual = run_usual(spec, data_dir, device, args.epochs, args.seed, args.subset)
    data = load_search_data(source, device, args.subset)
    torch.set_num_threads(threads)
    ours = run_ours(spec, data, args.epochs, args.seed, speed)
    print(ours.line())
    print(usual.line())
    print(f"load after: {load_average()}")
    print(f"ratio {ours.images_per_second / usual.images_per_second:.2f}")
    return 0

