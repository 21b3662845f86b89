import dataclasses

import optuna
import pytest
import torch

from nas.record import Outcome, read_trial
from nas.search import Progress, make_objective
from nas.space import load_space
from nas.train import train

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
