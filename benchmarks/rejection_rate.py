"""How often the budget gate rejects candidates, without training anything.

Runs the real space, gate and budget-aware sampler against a stand-in objective whose accuracy
rises with model size (the hardest case: the best candidates crowd the budget line).

    python benchmarks/rejection_rate.py [--space FILE] [--budget N] [--trials N] [--seeds K] [--plain-tpe]
"""

from __future__ import annotations

import argparse
import math
import random
import warnings

import optuna

import torch

from nas import build, count_params
from nas.data import Split, Splits
from nas.search.objective import Progress, budget_screen, make_objective
from nas.search.sampler import BudgetAwareTPESampler
from nas.space import load_space
from nas.train import EpochResult, TrainResult


def stand_in_train(spec, data, *, epochs, seed, on_epoch):
    acc = 99.5 - 300 / math.sqrt(count_params(build(spec))) + random.gauss(0, 0.1)
    record = EpochResult(1, 1, 0.0, acc, acc, 0.0)
    on_epoch(record)
    return TrainResult(None, [record])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--space", default="mnist")
    p.add_argument("--budget", type=int, default=8000)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--plain-tpe", action="store_true", help="TPE without the budget screen, for comparison")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    no_images = Splits(Split(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64)),
                       Split(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64)))  # the stand-in reads none
    space = load_space(args.space)
    tpe = dict(multivariate=True, group=True, n_startup_trials=10, constant_liar=True)
    for seed in range(args.seeds):
        random.seed(seed)
        sampler = (optuna.samplers.TPESampler(seed=seed, **tpe) if args.plain_tpe
                   else BudgetAwareTPESampler(budget_screen(space, args.budget), seed=seed, **tpe))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(make_objective(space, no_images, args.budget, 1, seed, Progress(True, None, None, 1),
                                      trainer=stand_in_train), n_trials=args.trials)
        rejected = [t.user_attrs["outcome"] == "rejected" for t in study.trials]
        late = rejected[20:]
        print(f"seed {seed}: rejected {sum(rejected[:20])}/20 in the first 20 trials, "
              f"{sum(late)}/{len(late)} ({100 * sum(late) / max(1, len(late)):.0f} %) after; "
              f"best candidate {study.best_trial.user_attrs['params']} params")


if __name__ == "__main__":
    main()
