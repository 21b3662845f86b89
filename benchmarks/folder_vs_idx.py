"""MNIST through the own-data path: is a folder of PNG files the same data, loaded in reasonable time, and
trained as fast per epoch as the built-in IDX files?

It writes MNIST out as an image folder (`train/<digit>/<n>.png`, `test/<digit>/<n>.png`; skipped when the
folder already holds it), then in one process: loads the search data of both paths (timed; the folder's
first load decodes every file), checks that both hold the same images (the same multiset of pixel arrays per
split part) and preprocessing, and trains one spec for a few epochs on each, alternating the two paths, so
that both per-epoch times come from the same run. The accuracy of full trainings on the folder comes from
the `nas` commands themselves (`nas retrain ... --data FOLDER`), printed as a hint at the end.

    python benchmarks/folder_vs_idx.py --folder /tmp/mnist_png --spec found/b2000 --epochs 2 --rounds 2 \
        --out benchmarks/results/folder_vs_idx.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data import DataSource, load_search_data, resolve_data_dir  # noqa: E402
from nas.data.load import _raw  # noqa: E402
from nas.spec import load_spec  # noqa: E402
from nas.train import train  # noqa: E402
from nas.version import provenance  # noqa: E402


def write_folder(data_dir: Path, folder: Path) -> float:
    """MNIST's training and test images as PNG files under `folder`; the seconds it took (0: already there)."""
    if (folder / "test" / "9").is_dir():
        return 0.0
    start = time.perf_counter()
    for part in ("train", "test"):
        images, labels, _ = _raw(DataSource("mnist", str(data_dir)), part)
        for digit in range(10):
            (folder / part / str(digit)).mkdir(parents=True, exist_ok=True)
        for n, (image, label) in enumerate(zip(images[:, 0].numpy(), labels.tolist())):
            Image.fromarray(image).save(folder / part / str(label) / f"{n:05d}.png")
    return time.perf_counter() - start


def pixel_digest(images: torch.Tensor) -> list[bytes]:
    """The images as sorted byte strings: equal lists mean the same images, whatever their order."""
    return sorted(image.numpy().tobytes() for image in images.cpu())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="where MNIST is written as PNG files")
    parser.add_argument("--data-dir", help="MNIST's IDX files (default: $NAS_DATA_DIR, else ./data)")
    parser.add_argument("--spec", default="found/b2000", help="the spec trained on both paths")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training")
    parser.add_argument("--rounds", type=int, default=2, help="trainings per path, alternating IDX and folder")
    parser.add_argument("--out", type=Path, help="append the result as one JSON line here")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    device = torch.device("cpu")

    written = write_folder(data_dir, args.folder)
    loads = {}
    splits = {}
    for name, source in (("idx", DataSource("mnist", str(data_dir))), ("folder", DataSource(str(args.folder)))):
        start = time.perf_counter()
        splits[name] = load_search_data(source, device)
        loads[name] = time.perf_counter() - start
    idx, folder = splits["idx"], splits["folder"]
    # the two paths carve their validation split differently (MNIST: a fixed random 5,000; a folder: stratified),
    # so the comparison that matters is the whole training set's, and the preprocessing measured on it
    same_training_set = (pixel_digest(torch.cat([idx.train.x, idx.held_out.x]))
                         == pixel_digest(torch.cat([folder.train.x, folder.held_out.x])))
    same_split_parts = all(pixel_digest(getattr(idx, part).x) == pixel_digest(getattr(folder, part).x)
                           for part in ("train", "held_out"))

    spec = load_spec(args.spec)
    epoch_seconds: dict[str, list[float]] = {"idx": [], "folder": []}
    final_val: dict[str, list[float]] = {"idx": [], "folder": []}
    for round_ in range(args.rounds):
        for name in ("idx", "folder"):
            result = train(spec, splits[name], epochs=args.epochs, seed=round_)
            epoch_seconds[name] += [e.seconds for e in result.history]
            final_val[name].append(result.final_acc)
            print(f"round {round_} {name}: epochs {[round(e.seconds, 2) for e in result.history]} s, "
                  f"val {result.final_acc:.2f} %", flush=True)
    median = {name: statistics.median(s) for name, s in epoch_seconds.items()}
    row = {
        "date": time.strftime("%Y-%m-%d"), **provenance(), "spec": args.spec,
        "cpu": os.cpu_count(), "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0],
        "folder_write_s": round(written, 1), "load_s": {k: round(v, 2) for k, v in loads.items()},
        "train_images": {k: len(s.train) for k, s in splits.items()},
        "val_images": {k: len(s.held_out) for k, s in splits.items()},
        "same_training_set": same_training_set, "same_split_parts": same_split_parts,
        "epochs": args.epochs, "rounds": args.rounds,
        "epoch_s_median": {k: round(v, 2) for k, v in median.items()},
        "folder_over_idx": round(median["folder"] / median["idx"], 3),
        "final_val_acc": final_val,
    }
    print(json.dumps(row))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"accuracy of full trainings: nas retrain {args.spec} --data {args.folder} --seeds 3 --device cpu")


if __name__ == "__main__":
    main()
