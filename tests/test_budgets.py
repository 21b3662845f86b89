"""The device budgets: each gate rejects a candidate before any training and records the cost it is over and by
how much; the sampler gets one constraint per active budget, params first; a study keeps its budgets; records
of studies made before device costs still load, and best.json and the report give those trials their costs."""

import shutil
from pathlib import Path

import optuna
import pytest

from nas.cost import Budgets, costs
from nas.errors import UsageError
from nas.report.figures import device_cost_figure
from nas.search.command import check_settings
from nas.search.objective import Progress, budget_screen, make_objective
from nas.search.sampler import TPE_STARTUP_TRIALS, make_sampler
from nas.space import load_space
from nas.spec import Spec
from nas.store.record import Outcome, StudySettings, read_settings, read_trial, read_trials
from nas.store.storage import load_study
from nas.store.winner import best_record, select_winner

TINY = load_space("mnist_tiny")
STORED = Path(__file__).resolve().parent / "stored_before"
UNLIMITED = 10**9


def _search(data, budgets: Budgets, trials: int, trainer, sampler: optuna.samplers.BaseSampler | None = None):
    progress = Progress(quiet=True, trials=trials, timeout=None, epochs=1)
    objective = make_objective(TINY, data, budgets, epochs=1, seed=0, progress=progress, trainer=trainer)
    study = optuna.create_study(direction="maximize", sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: progress.trial_done(t.number, False)])
    return study


@pytest.mark.parametrize("budget, field", [("macs", "macs"), ("ram", "ram_int8"), ("flash", "flash_int8")])
def test_each_gate_rejects_before_any_training_and_records_the_cost_it_is_over(small_data, budget, field):
    trained = []
    study = _search(small_data, Budgets(UNLIMITED, **{budget: 100}), 3, trainer=lambda *a, **k: trained.append(1))
    assert trained == []  # no epoch ran
    for trial in study.trials:
        record = read_trial(trial)
        expected = costs(Spec.from_dict(record.spec))
        assert record.outcome == Outcome.REJECTED and trial.state == optuna.trial.TrialState.PRUNED
        assert (record.params, record.macs, record.ram_int8, record.ram_float32, record.flash_int8) == (
            expected.params, expected.macs, expected.ram_int8, expected.ram_float32, expected.flash_int8)
        [overrun] = record.over_budget  # only the budget it is over, with its cost and excess
        assert (overrun.budget, overrun.cost, overrun.allowed) == (budget, getattr(expected, field), 100)
        assert overrun.over == getattr(expected, field) - 100
        assert list(trial.constraints) == ["params", budget]  # one per active budget, params first
        assert trial.constraints["params"] <= 0 < trial.constraints[budget]


def test_a_candidate_over_several_budgets_names_each(small_data):
    study = _search(small_data, Budgets(10, macs=100, ram=100, flash=100), 1, trainer=None)
    record = read_trial(study.trials[0])
    assert [o.budget for o in record.over_budget] == ["params", "macs", "ram", "flash"]
    assert record.over_budget[0].over == record.params - 9  # params: fewer than the budget fit
    assert all(v > 0 for v in study.trials[0].constraints.values())


def test_a_candidate_within_every_budget_trains_and_carries_all_four_costs(small_data):
    def trainer(spec, data, *, epochs, seed, on_epoch):
        from nas.train import train
        return train(spec, data, epochs=epochs, seed=seed, on_epoch=on_epoch)

    study = _search(small_data, Budgets(UNLIMITED, macs=UNLIMITED, ram=UNLIMITED, flash=UNLIMITED), 1, trainer)
    [record] = read_trials(study)
    assert record.outcome == Outcome.COMPLETE and record.over_budget == ()
    assert None not in (record.params, record.macs, record.ram_int8, record.ram_float32, record.flash_int8)
    assert list(study.trials[0].constraints) == ["params", "macs", "ram", "flash"]
    assert all(v <= 0 for v in study.trials[0].constraints.values())


def test_the_sampler_screen_holds_every_budget():
    spec = next(iter(TINY.lowest_specs()))
    params = TINY.params_for(spec)[0]
    c = costs(TINY.spec_from_params(params))
    assert budget_screen(TINY, Budgets(UNLIMITED, ram=c.ram_int8, flash=c.flash_int8, macs=c.macs))(params) is True
    assert budget_screen(TINY, Budgets(UNLIMITED, ram=c.ram_int8 - 1))(params) is False
    assert budget_screen(TINY, Budgets(c.params))(params) is False  # params: fewer than the budget
    assert budget_screen(TINY, Budgets(UNLIMITED))({}) is None


@pytest.mark.slow  # 50 candidates built and counted per sampler: about 7 s on 2 cores
def test_random_search_keeps_drawing_over_the_budget_where_tpe_learns_not_to(small_data):
    """`--sampler random` learns nothing and screens nothing: after TPE's random start-up, about half its draws
    stay over a budget that about half the tiny space's draws are over, where TPE's proposals mostly fit."""
    from nas.train import EpochResult, TrainResult

    def trainer(spec, data, *, epochs, seed, on_epoch):  # a stand-in: bigger scores better, no training
        result = TrainResult(None, [EpochResult(1, 1, 1.0, 50.0, 90 + costs(spec).params / 100, 0.01)])
        on_epoch(result.history[-1])
        return result

    budgets, after_startup = Budgets(900), 40
    rejected = {}
    for name in ("tpe", "random"):
        sampler = make_sampler(name, budget_screen(TINY, budgets), seed=3)
        study = _search(small_data, budgets, TPE_STARTUP_TRIALS + after_startup, trainer, sampler)
        records = read_trials(study)[TPE_STARTUP_TRIALS:]
        rejected[name] = sum(r.outcome == Outcome.REJECTED for r in records) / after_startup
    assert rejected["random"] >= 0.3 and rejected["tpe"] <= rejected["random"] / 2, rejected


def test_tpe_models_the_study_after_its_start_up_draws(small_data):
    """`--startup-trials N`: TPE's own proposals (the ones the budget screen sees) begin after N trials, rejected
    ones counted; before them every draw is random and unscreened."""
    def trainer(spec, data, *, epochs, seed, on_epoch):  # a stand-in: no training
        raise AssertionError("every candidate is over the budget")

    screened = {}
    for startup in (2, None):  # None: the default, TPE_STARTUP_TRIALS
        calls = []
        sampler = make_sampler("tpe", lambda params: calls.append(params) or None, seed=0, startup=startup)
        _search(small_data, Budgets(10), 6, trainer, sampler)
        screened[startup] = len(calls)
    assert screened == {2: 6 - 2, None: 0} and TPE_STARTUP_TRIALS > 6


def test_with_filled_widths_every_candidate_trains_as_its_widest_copy_within_the_budgets(small_data):
    """`--widths filled`: the spec trained and stored is the drawn design scaled to fill every budget (a draw over
    one narrowed, not rejected), with the factor; the trial's parameters stay the widths drawn; the sampler's
    screen passes what can be scaled to fit."""
    from nas.search.objective import FILLED
    from nas.search.warm_start import filled
    from nas.train import EpochResult, TrainResult

    trained = []

    def trainer(spec, data, *, epochs, seed, on_epoch):  # a stand-in: no training, the spec kept
        trained.append(spec)
        result = TrainResult(None, [EpochResult(1, 1, 1.0, 50.0, 90.0, 0.01)])
        on_epoch(result.history[-1])
        return result

    budgets = Budgets(900, macs=200_000)
    progress = Progress(quiet=True, trials=8, timeout=None, epochs=1)
    objective = make_objective(TINY, small_data, budgets, epochs=1, seed=0, progress=progress, trainer=trainer,
                               widths=FILLED)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=8)
    drawn = [TINY.spec_from_params(t.params) for t in study.trials]
    assert any(costs(d).params >= 900 for d in drawn) and any(costs(d).params < 800 for d in drawn)
    records = read_trials(study)
    assert [r.outcome for r in records] == [Outcome.COMPLETE] * 8 and len(trained) == 8  # none rejected
    for trial, record, spec, design in zip(study.trials, records, trained, drawn):
        fill = filled(design, TINY, budgets)
        assert spec == fill[0] == Spec.from_dict(record.spec) and trial.user_attrs["widths_factor"] == fill[1]
        assert record.params == costs(spec).params < 900 and costs(spec).macs <= 200_000
    screen = budget_screen(TINY, Budgets(900), FILLED)
    assert all(screen(t.params) for t in study.trials) and screen({}) is None
    assert not budget_screen(TINY, Budgets(20), FILLED)(study.trials[0].params)  # even the narrowest is over


def _settings(**budgets) -> StudySettings:
    return StudySettings(budget=3000, space="mnist_tiny", space_file="bundled:mnist_tiny", epochs=1, **budgets)


def test_a_study_is_continued_only_with_its_own_budgets():
    stored = {"budget": 3000, "space": "mnist_tiny", "max_ram": 8192}
    check_settings("s", stored, _settings(max_ram=8192))
    for other, said in ((_settings(), "--max-ram 8,192, not none"), (_settings(max_ram=4096), "not 4,096"),
                        (_settings(max_ram=8192, max_flash=4000), "--max-flash none, not 4,000")):
        with pytest.raises(UsageError, match=said):
            check_settings("s", stored, other)


def test_a_study_made_before_device_budgets_has_none(tmp_path):
    shutil.copy(STORED / "before-split.db", tmp_path)
    study = load_study("before-split", None, tmp_path)
    stored = read_settings(study)
    assert not set(StudySettings.DEVICE_BUDGETS) & set(stored)
    same = {k: stored[k] for k in ("budget", "space", "space_file", "epochs")}
    check_settings("before-split", stored, StudySettings(**same))  # continued as before: no device budget
    with pytest.raises(UsageError, match="--max-ram none, not 4,096"):
        check_settings("before-split", stored, StudySettings(**same, max_ram=4096))
    # its trials load without device costs; best.json and the report compute them from the spec
    records = read_trials(study)
    assert all(r.ram_int8 is None and r.flash_int8 is None and r.over_budget == () for r in records)
    winner, reevaluation = select_winner(study)
    best = best_record(winner, study, reevaluation)
    expected = costs(Spec.from_dict(winner.spec))
    assert (best["ram_int8"], best["ram_float32"], best["flash_int8"]) == (
        expected.ram_int8, expected.ram_float32, expected.flash_int8)
    assert best["max_ram"] is None and best["budget"] == 3000
    figure = device_cost_figure(records, "ram_int8", "peak RAM", None)
    drawn = sorted(x for trace in figure.data if trace.name.startswith("complete (") for x in trace.x)
    assert drawn == sorted(costs(Spec.from_dict(r.spec)).ram_int8 for r in records)


def test_the_report_draws_rejected_candidates_at_their_device_cost_beside_the_budget(small_data):
    study = _search(small_data, Budgets(UNLIMITED, flash=100), 3, trainer=None)
    records = read_trials(study)
    figure = device_cost_figure(records, "flash_int8", "flash", 100)
    [lane] = [trace for trace in figure.data if trace.name.startswith("rejected")]
    assert sorted(lane.x) == sorted(r.flash_int8 for r in records)
    assert [shape.x0 for shape in figure.layout.shapes] == [100]  # the budget, dashed


def test_a_search_under_device_budgets_is_a_study_of_its_own():
    from nas.search.command import default_study_name
    assert default_study_name("mnist", Budgets(8000)) == "mnist-b8000"  # as before
    assert default_study_name("mnist", Budgets(8000, ram=12_000, flash=6000)) == "mnist-b8000-ram12000-flash6000"
    assert default_study_name("mnist", Budgets(8000, 800_000, 12_000, 6000)) == "mnist-b8000-macs800000-ram12000-flash6000"


def test_warm_starts_fit_the_device_budgets_too():
    """A reference over a device budget is narrowed until it fits them all; a named file over one is refused."""
    from nas.search.warm_start import warm_starts
    space = load_space("mnist")
    budgets = Budgets(8000, ram=12_000, flash=6000)
    starts = warm_starts(space, budgets, [])
    assert [name.split(" at widths x")[0] for name, _, _ in starts] == ["found/b8000", "found/b4000", "4_final"]  # all narrowed
    assert all(" at widths x0." in name for name, _, _ in starts)  # found/b4000 too: 18,816 bytes of peak RAM
    for _, params, _ in starts:
        cost = costs(space.spec_from_params(params))
        assert cost.ram_int8 <= 12_000 and cost.flash_int8 <= 6000 and cost.params < 8000
    # the parameters alone: as they are (found/b4000 widened to fill 8,000 is found/b8000: queued once)
    assert [n for n, _, _ in warm_starts(space, 8000, [])] == ["found/b8000", "4_final"]
    with pytest.raises(UsageError, match="reference/4_final: 14,624 bytes of peak RAM at int8 > 12,000"):
        warm_starts(space, budgets, ["reference/4_final"], references=False)
