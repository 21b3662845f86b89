import dataclasses

import optuna
import pytest

from nas import search
from nas.search import Progress, make_objective
from nas.space import load_space
from nas.train import train

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
    assert a.history[0].train_loss == b.history[0].train_loss


def test_a_callback_can_stop_training(small_data):
    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CLASSIC, small_data, epochs=3, on_epoch=stop)


def test_gate_rejects_over_budget_candidates_without_training(small_data, monkeypatch):
    calls = []
    monkeypatch.setattr(search, "train", lambda *a, **k: calls.append(1))
    space = load_space(ROOT / "search_spaces" / "mnist.yaml")
    study = optuna.create_study(direction="maximize")
    progress = Progress(quiet=True, trials=3, timeout=None)
    study.optimize(make_objective(space, small_data, budget=50, epochs=1, seed=0, progress=progress), n_trials=3)
    assert calls == []  # no epoch ran
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["outcome"] == "rejected" and trial.user_attrs["params"] >= 50
        assert trial.user_attrs["spec"]["arch"]["stages"]
        assert trial.constraints["params"] > 0  # infeasible, so the sampler learns from it
    assert progress.rejected == 3
