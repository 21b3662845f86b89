import dataclasses
import importlib.util
import json

import optuna
import pytest
import torch
from torch import nn

from nas.data import Split, Splits
from nas.store.record import Outcome, read_trial
from nas.search.objective import Progress, make_objective
from nas.space import load_space
from nas.spec import Train, load_spec
from nas.train import FastDropout, WeightAverage, evaluate, make_scheduler, train

from conftest import ROOT
from test_spec import CLASSIC


def test_trainer_reports_every_epoch_and_learns(small_data):
    quick = dataclasses.replace(CLASSIC, train=dataclasses.replace(CLASSIC.train, optimizer="adamw", lr=0.01,
                                                                   schedule="constant", batch_size=32))
    seen = []
    result = train(quick, small_data, epochs=3, seed=0, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2, 3] and result.history == seen
    assert result.final_acc == seen[-1].eval_acc > 50  # 512 images, 48 steps: well above chance


def test_trainer_is_deterministic_for_a_seed(small_data):
    a = train(CLASSIC, small_data, epochs=1, seed=3)
    b = train(CLASSIC, small_data, epochs=1, seed=3)
    c = train(CLASSIC, small_data, epochs=1, seed=4)
    assert a.history[0].train_loss == b.history[0].train_loss
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # every weight, every BN statistic
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # and the seed matters


def test_the_weight_average_follows_its_update_rule():
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(live, decay=0.5)
    expected = {k: v.clone() for k, v in live.state_dict().items()}
    assert not any(p.requires_grad for p in average.module.parameters())
    for t in range(3):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        live.train()(torch.randn(4, 3))  # moves BN's running statistics and batch count
        average.update()
        decay = min(0.5, (1 + t) / (10 + t))  # 0.1, 0.18, 0.25: the warm-up, then at most 0.5
        for k, v in live.state_dict().items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
    average.copy_counters()
    got = average.module.state_dict()
    assert all(torch.allclose(got[k].float(), expected[k].float()) for k in expected if expected[k].is_floating_point())
    assert got["1.num_batches_tracked"] == 3  # copied, not averaged
    assert not torch.allclose(got["0.weight"], live[0].weight)


def test_training_with_ema_returns_the_average_deterministically(small_data):
    tiny = Splits(Split(small_data.train.x[:256], small_data.train.y[:256]),
                  Split(small_data.held_out.x[:256], small_data.held_out.y[:256]))
    plain = dataclasses.replace(CLASSIC, train=dataclasses.replace(CLASSIC.train, batch_size=32))
    averaged = dataclasses.replace(plain, train=dataclasses.replace(plain.train, ema=0.9))
    live = train(plain, tiny, epochs=1, seed=5)  # the same live training: the average draws no random numbers
    a, b = (train(averaged, tiny, epochs=1, seed=5) for _ in range(2))
    assert a.history[0].train_loss == b.history[0].train_loss == live.history[0].train_loss
    sa, sb, sl = (r.model.state_dict() for r in (a, b, live))
    assert sa.keys() == sl.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # deterministic
    assert not torch.equal(sa["0.weight"], sl["0.weight"])  # the average, not the last live weights
    assert evaluate(a.model, tiny.held_out) == a.history[0].eval_acc  # the epoch's accuracy is the average's
    assert not any(isinstance(m, FastDropout) for m in a.model.modules())  # a plain build(spec) module
    assert all(p.is_contiguous() for p in a.model.parameters())


def test_a_callback_can_stop_training(small_data):
    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CLASSIC, small_data, epochs=3, on_epoch=stop)


def _objective(small_data, budget: int, trainer, trials: int = 3):
    progress = Progress(quiet=True, trials=trials, timeout=None, epochs=2)
    objective = make_objective(load_space("mnist"), small_data, budget=budget, epochs=2, seed=0, progress=progress,
                               trainer=trainer)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: progress.trial_done(t.number, False)])
    return study


def test_gate_rejects_over_budget_candidates_without_training(small_data):
    calls = []
    study = _objective(small_data, 50, trainer=lambda *a, **k: calls.append(1))
    assert calls == []  # no epoch ran
    for trial in study.trials:
        record = read_trial(trial)
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert record.outcome == Outcome.REJECTED and record.params >= 50
        assert record.spec["arch"]["stages"] and record.fidelity.epochs == 2
        assert record.fidelity.train_images == len(small_data.train)
        assert trial.constraints["params"] > 0  # infeasible, so the sampler learns from it


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_candidates_under_budget_train_with_the_given_trainer(small_data):
    """The objective trains through the trainer it is given, and records each epoch and the outcome."""
    seen = []

    def trainer(spec, data, *, epochs, seed, on_epoch):
        seen.append(seed)
        result = train(spec, data, epochs=epochs, seed=seed, on_epoch=on_epoch)
        return result

    study = _objective(small_data, 10**9, trainer, trials=2)
    assert seen == [0, 1]  # seeded per trial
    for trial in study.trials:
        record = read_trial(trial)
        assert record.outcome == Outcome.COMPLETE and len(record.epoch_seconds) == 2 and len(record.curve) == 2
        assert record.value == record.curve[2]  # the final epoch's accuracy, never the best one


def test_one_cycle_reaches_its_peak_in_every_short_run():
    """Cheap rungs and smoke runs are a few steps long; a 5-step run once divided by a zero-length warm-up."""
    for steps in range(2, 40):
        optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        schedule = make_scheduler(Train("sgd", 0.1, "onecycle", 128, 0.0, 0.0), optimizer, steps)
        lrs = []
        for step in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if step < steps - 1:
                schedule.step()
        assert max(lrs) > 0.05 and lrs[-1] < 0.1, (steps, lrs)


def test_recipe_seeds_trains_the_changed_recipe_as_the_trainer_does(small_data, data_dir, tmp_path, capsys):
    """benchmarks/recipe_seeds.py: each seed's line is the trainer's own result for the spec with the
    settings changed (so a finalist's seed reproduces its stored score); a setting no spec has is one line
    on stderr and status 2, before any training."""
    found = importlib.util.spec_from_file_location("recipe_seeds", ROOT / "benchmarks" / "recipe_seeds.py")
    recipe_seeds = importlib.util.module_from_spec(found)
    found.loader.exec_module(recipe_seeds)
    out = tmp_path / "seeds.jsonl"
    args = ["found/b2000", "--set", "batch_size=128", "--set", "ema=0.99", "--seeds", "3", "4", "--epochs", "1",
            "--subset", "512", "--data-dir", str(data_dir), "--out", str(out)]
    assert recipe_seeds.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    found_b2000 = load_spec("found/b2000")
    changed = dataclasses.replace(found_b2000, train=dataclasses.replace(found_b2000.train, batch_size=128, ema=0.99))
    assert [r["seed"] for r in rows] == [3, 4] and rows[0]["code"] == changed.code and "b128" in changed.code
    assert found_b2000.train.batch_size == 64 and rows[0]["changes"] == {"batch_size": 128, "ema": 0.99}
    assert [r["val_acc"] for r in rows] == [train(changed, small_data, epochs=1, seed=s).final_acc for s in (3, 4)]
    capsys.readouterr()
    assert recipe_seeds.main(["found/b2000", "--set", "batch=64", "--seeds", "0", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no training setting batch" in err
