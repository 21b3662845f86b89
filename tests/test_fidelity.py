"""Multi-fidelity bookkeeping and the finalists' re-evaluation, with a stand-in trainer on a real study.

The stand-in scores every cheap rung far above any full training (95-99 % against 80-83 %), so a
comparison across fidelities anywhere (the pruner, the best trial, best.json, the Pareto front, a
figure) would show up as a cheap score where a full one belongs.
"""

import json

import optuna
import pytest
import torch

from conftest import TINY, opened_files
from nas import build, count_params
from nas.data import Split, Splits
from nas.errors import UsageError
from nas.fidelity import ladder, parse_rung, rung_images
from nas.search.pruner import (RungPruner, hold_scores, late_promotions, median_first_epoch, promoted,
                              queue_late_promotions)
from nas.search.header import median_rule
from nas.search.summary import summary
from nas.report.figures import rungs_figure, tradeoff_figure
from nas.search.finalists import pending, reevaluate, seeds_of
from nas.fidelity import Fidelity
from nas.store.record import (Outcome, StudySettings, promotion_of, queued_as, read_reevaluations, read_trials,
                              record_reevaluation, rung_attr, write_settings)
from nas.store.winner import select_winner, winner_lead, write_best
from nas.search.objective import Progress, make_objective
from nas.space import load_space
from nas.train import EpochResult, TrainResult

FULL = Fidelity(2, 1000)
CHEAP = (Fidelity(1, 200), Fidelity(1, 500))
BUDGET = 3000


def fake_data(images: int = FULL.train_images) -> Splits:
    return Splits(Split(torch.zeros(images, 1, 28, 28), torch.zeros(images, dtype=torch.int64)),
                  Split(torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.int64)))


def stand_in(calls: list, score=None):
    """A trainer with nas.train.train's signature: a score from the spec's size and the fidelity."""
    def trainer(spec, data, *, epochs, seed, on_epoch=None, speed=None):
        calls.append((spec.code, len(data.train), epochs, seed))
        params = count_params(build(spec))
        if score is not None:
            final = score(spec, seed)
        elif len(data.train) == FULL.train_images:
            final = 80 + params / 1000
        else:
            final = 95 + params / 1000 + len(data.train) / 1000
        result = TrainResult(None)
        for e in range(1, epochs + 1):
            result.history.append(EpochResult(e, epochs, 1.0, 50.0, final - (epochs - e), 0.01))
            if on_epoch:
                on_epoch(result.history[-1])
        return result
    return trainer


def test_ladder_defaults_scale_to_the_full_fidelity_and_bad_rungs_are_refused():
    assert ladder(Fidelity(15, 55_000)) == (Fidelity(2, 11_000), Fidelity(4, 27_500), Fidelity(15, 55_000))
    assert ladder(Fidelity(3, 3000)) == (Fidelity(1, 600), Fidelity(1, 1500), Fidelity(3, 3000))
    assert ladder(Fidelity(2, 256)) == (Fidelity(2, 256),)  # rungs of a few dozen images say nothing: dropped
    assert ladder(FULL, []) == (FULL,)
    assert ladder(FULL, [Fidelity(1, 200), FULL]) == (Fidelity(1, 200), FULL)
    assert parse_rung("2x11000") == Fidelity(2, 11_000)
    for bad in ("2x", "x100", "0x100", "2x0", "two"):
        with pytest.raises(UsageError):
            parse_rung(bad)
    with pytest.raises(UsageError, match="above the full fidelity"):
        ladder(FULL, [Fidelity(3, 100)])
    with pytest.raises(UsageError, match="cost more at each step"):
        ladder(FULL, [Fidelity(1, 500), Fidelity(1, 400)])


def test_promotion_keeps_the_best_third_so_far():
    assert promoted(50.0, [])  # alone at its rung: the best one goes on
    assert not promoted(50.0, [60.0])
    assert promoted(70.0, [60.0, 50.0])
    assert promoted(65.0, [70.0, 60.0, 50.0, 40.0, 30.0])  # 6 scores: the best 2 go on
    assert not promoted(55.0, [70.0, 60.0, 50.0, 40.0, 30.0])
    assert promoted(55.0, [70.0, 60.0, 50.0, 40.0, 30.0], eta=2)  # best 3 of 6
    # holding, a rung promotes nobody before it has eta scores, then as before
    assert not promoted(50.0, [], hold=3) and not promoted(70.0, [60.0], hold=3)
    assert promoted(70.0, [60.0, 50.0], hold=3) and not promoted(60.0, [70.0, 50.0], hold=3)
    assert promoted(65.0, [70.0, 60.0, 50.0, 40.0, 30.0], hold=3)
    # --promote-after 9: nobody before 9 scores, then the best third of them
    eight = [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0]
    assert not promoted(99.0, eight, hold=9) and promoted(99.0, [*eight, 20.0], hold=9)
    assert promoted(75.0, [*eight, 20.0], hold=9) and not promoted(65.0, [*eight, 20.0], hold=9)
    # runs that can wait: unlimited, or enough trials for late promotions up every cheap rung
    assert hold_scores(None, 2) == hold_scores(27, 2) == hold_scores(9, 1) == 3
    assert hold_scores(26, 2) == hold_scores(None, 0) == 0
    assert hold_scores(None, 2, promote_after=9) == 9 and hold_scores(26, 2, 3, 9) == 0
    assert hold_scores(81, 2, 3, 9) == 9 and hold_scores(80, 2, 3, 9) == 3  # too few trials to climb past 9 scores
    assert hold_scores(None, 2, eta=4, promote_after=2) == 4  # never fewer than a best 1/eta needs


def test_the_pruner_compares_one_step_at_a_time():
    study = optuna.create_study(direction="maximize", pruner=RungPruner(cheap_rungs=2))
    for rung0 in (90.0, 91.0, 92.0):  # three candidates through rung 0 only
        trial = study.ask()
        trial.report(rung0, 0)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trial = study.ask()
    trial.report(50.0, 0)  # far below the others at rung 0: stopped
    assert trial.should_prune()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trial = study.ask()
    trial.report(93.0, 0)
    assert not trial.should_prune()
    trial.report(10.0, 1)  # the first score at rung 1: only its own rung's scores count, none yet
    assert not trial.should_prune()
    # full-training epochs are steps 3, 4, ...: never judged against the rungs' steps 0 and 1
    trial.report(5.0, 3)
    assert not trial.should_prune()


def test_the_median_rule_stops_a_full_training_below_the_median_but_never_at_its_last_epoch():
    """Inside the full training the median rule (Optuna's: a candidate's best score so far against the complete
    ones' median at this epoch) judges each epoch but the last: a candidate that falls below only there has
    already trained in full, and completes with its score."""
    curves = iter([[90.0, 91.0, 99.0], [95.0, 96.0, 97.0], [10.0, 11.0, 12.0]])

    def trainer(spec, data, *, epochs, seed, on_epoch=None, speed=None):
        result = TrainResult(None)
        for e, score in enumerate(next(curves), 1):
            result.history.append(EpochResult(e, epochs, 1.0, 50.0, score, 0.01))
            on_epoch(result.history[-1])
        return result

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=RungPruner(0, median_startup=1, median_warmup=1))
    objective = make_objective(load_space(TINY), fake_data(), 10**6, 3, 0, Progress(True, None, None, 3),
                               trainer=trainer)
    study.optimize(objective, n_trials=3)
    records = read_trials(study)
    assert [(r.outcome, r.value) for r in records[:2]] == [(Outcome.COMPLETE, 99.0), (Outcome.COMPLETE, 97.0)]
    assert records[2].outcome == Outcome.PRUNED and records[2].curve == {1: 10.0}  # judged from epoch 1 on


def test_the_median_rule_judges_only_the_last_fifth_of_the_full_training():
    """The search's median rule waits until 4/5 of the full training (epoch 12 of 15): before, a candidate far
    below every complete one trains on; from there it is stopped. Its best score so far is its full training's:
    its cheap rungs' scores (another fidelity, here above the median) do not keep it going, as they did in
    Optuna's MedianPruner."""
    assert [median_first_epoch(e) for e in (1, 3, 5, 10, 15, 30)] == [1, 3, 4, 8, 12, 24]
    assert [median_first_epoch(e, behind_rungs=False) for e in (1, 5, 15)] == [1, 1, 3]  # every draw in full
    assert median_rule(15) == "the median rule from epoch 12, once 5 have completed"  # the run's header says so
    assert median_rule(3) == "no median rule (too few epochs)"  # 3 of 3 is the last epoch: never judged
    study = optuna.create_study(direction="maximize",
                                pruner=RungPruner(2, median_startup=1, median_warmup=median_first_epoch(15)))
    done = study.ask()
    for step in range(2 + 15 + 1):  # its rungs at steps 0 and 1, epochs 1-15 at steps 3-17
        done.report(99.0, step)
    study.tell(done, 99.0)
    weak = study.ask()
    weak.report(99.5, 0), weak.report(99.5, 1)  # through both rungs, each far above the median
    judged = []
    for epoch in range(1, 15):
        weak.report(50.0, 2 + epoch)  # epoch e of the full training is step K + e
        judged.append(weak.should_prune())
    assert judged == [False] * 11 + [True] * 3


def test_a_warm_start_climbs_every_cheap_rung():
    study = optuna.create_study(direction="maximize", pruner=RungPruner(cheap_rungs=2))
    trial = study.ask()
    trial.report(95.6, 0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    study.enqueue_trial({}, user_attrs=queued_as("b4000.json"))
    known = study.ask()  # the queued known design, 0.1 point behind the first score at rung 0
    known.report(95.4, 0)
    assert not known.should_prune()
    known.report(10.0, 1)
    assert not known.should_prune()
    study.tell(known, state=optuna.trial.TrialState.PRUNED)
    drawn = study.ask()  # a drawn one with the same score is screened out
    drawn.report(95.4, 0)
    assert drawn.should_prune()


def screened(study: optuna.Study, score: float, step: int = 0) -> optuna.trial.FrozenTrial:
    """A drawn trial screened out at cheap rung `step` with `score`, as the objective leaves one."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("outcome", Outcome.SCREENED.value)
    trial.report(score, step)
    return study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_a_held_candidate_is_promoted_late_once_the_rung_ranks_it_and_only_once():
    study = optuna.create_study(direction="maximize", pruner=RungPruner(cheap_rungs=2, hold=3))
    best = screened(study, 90.0)  # alone at rung 0: held
    screened(study, 50.0)
    assert late_promotions(study.trials, 0) == []  # two scores: no best third yet
    screened(study, 60.0)
    assert [t.number for t in late_promotions(study.trials, 0)] == [best.number]
    assert late_promotions(study.trials, 0, hold=4) == []  # a rung told to wait for 4 scores (--promote-after)
    assert late_promotions(study.trials, 1) == []
    assert queue_late_promotions(study, 0, 3, None, None) == [best.number]
    assert queue_late_promotions(study, 0, 3, None, None) == []  # queued already: never twice
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert promotion_of(waiting) == (best.number, 1)
    assert read_trials(study)[waiting.number].outcome == Outcome.QUEUED
    said = summary(study)
    assert "1 late promotion(s) queued, not trained yet" in said
    assert "0 running, 1 queued" in said.splitlines()[0]  # waiting to run is not running
    again = study.ask()  # the queued trial runs first, with the held candidate's parameters
    assert again.number == waiting.number and again.suggest_float("x", 0, 1) == best.params["x"]
    # three more scores, all below 60: the rung keeps 2 of 6, so the 60 held since is promoted late too
    for score in (55.0, 40.0, 30.0):
        screened(study, score)
    assert [t.number for t in late_promotions(study.trials, 0)] == [2]


def test_rungs_in_steps_give_every_batch_size_the_same_optimiser_steps():
    assert rung_images(Fidelity(2, 11_000), 128, "steps", 55_000) == 11_000  # the reference batch: as in images
    assert rung_images(Fidelity(2, 11_000), 256, "steps", 55_000) == 22_000
    assert rung_images(Fidelity(2, 11_000), 64, "steps", 55_000) == 5_500
    assert rung_images(Fidelity(4, 27_500), 512, "steps", 55_000) == 55_000  # never more than there are
    assert rung_images(Fidelity(2, 11_000), 256, "images", 55_000) == 11_000
    # a real study of the tiny space (batch 64 or 128) up the ladder, counted in steps
    calls: list = []
    seen: list[tuple[int, int, int]] = []  # (batch size, images, epochs) of every training
    inner = stand_in(calls)

    def trainer(spec, data, **kwargs):
        seen.append((spec.train.batch_size, len(data.train), kwargs["epochs"]))
        return inner(spec, data, **kwargs)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1),
                                pruner=RungPruner(len(CHEAP)))
    objective = make_objective(load_space(TINY), fake_data(), BUDGET, FULL.epochs, 0,
                               Progress(True, None, None, FULL.epochs), trainer=trainer, cheap_rungs=CHEAP,
                               rung_unit="steps")
    study.optimize(objective, n_trials=16)
    first = {batch: images for batch, images, _ in seen if images not in (250, 500, FULL.train_images)}
    assert first == {64: 100, 128: 200}  # rung 1 (1 x 200 images) in steps: 2 steps of either batch
    second = {(batch, images) for batch, images, _ in seen if images in (250, 500)}
    assert second <= {(64, 250), (128, 500)} and second  # rung 2 (1 x 500)
    assert {images for _, images, epochs in seen if epochs == FULL.epochs} == {FULL.train_images}


@pytest.fixture(scope="module")
def climbed():
    """A real study of 30 candidates of the tiny space up the ladder FULL <- CHEAP, as nas.search runs them."""
    calls: list = []
    space = load_space(TINY)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=RungPruner(len(CHEAP)))
    write_settings(study, StudySettings(budget=BUDGET, space=space.name, space_file=TINY, epochs=FULL.epochs,
                                        train_images=FULL.train_images, rungs=[[1, 200], [1, 500]]))
    objective = make_objective(space, fake_data(), BUDGET, FULL.epochs, 0, Progress(True, None, None, FULL.epochs),
                               trainer=stand_in(calls), cheap_rungs=CHEAP)
    study.optimize(objective, n_trials=30)
    return study, calls


def test_a_search_that_holds_promotes_late_and_trains_each_promotion_from_the_rung_above(tmp_path):
    calls: list = []
    space = load_space(TINY)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=RungPruner(len(CHEAP), hold=3))
    objective = make_objective(space, fake_data(), BUDGET, FULL.epochs, 0, Progress(True, None, None, FULL.epochs),
                               trainer=stand_in(calls), cheap_rungs=CHEAP,
                               promote=lambda step: queue_late_promotions(study, step, 3, None, None))
    study.optimize(objective, n_trials=40)
    records = {r.number: r for r in read_trials(study)}
    trained_at: dict[int, list[Fidelity]] = {}
    for code, images, epochs, seed in calls:
        trained_at.setdefault(seed, []).append(Fidelity(epochs, images))
    late = [r for r in records.values() if r.promoted_from is not None]
    assert late and any(r.outcome == Outcome.COMPLETE for r in late)
    for r in late:
        held = records[r.promoted_from]
        start = promotion_of(study.trials[r.number])[1]
        assert held.outcome == Outcome.SCREENED and held.rungs[-1].fidelity == CHEAP[start - 1]
        assert study.trials[held.number].last_step == start - 1
        assert study.trials[r.number].params == study.trials[held.number].params and held.code == r.code
        if r.number in trained_at:  # run (not still queued): from the rung above the held one's, no lower
            assert trained_at[r.number][0] == (*CHEAP, FULL)[start] == (r.rungs[0].fidelity if r.rungs else FULL)
            # its first step: the rung's, or epoch 1 of the full training (step K + 1)
            assert min(study.trials[r.number].intermediate_values) == (start if start < len(CHEAP) else start + 1)
            if r.rungs:
                assert rung_attr(start + 1) in study.trials[r.number].user_attrs
    assert len({r.promoted_from for r in late}) == len(late)  # each held candidate promoted once
    # the first score at each rung is held, not promoted on its own; and at the end nothing promotable is left
    for k in range(len(CHEAP)):
        first = min(n for n, t in enumerate(study.trials) if k in t.intermediate_values)
        assert study.trials[first].last_step == k and records[first].outcome == Outcome.SCREENED
        assert late_promotions(study.trials, k) == []


def test_each_trial_records_its_rungs_and_the_fidelity_it_reached(climbed):
    study, calls = climbed
    records = read_trials(study)
    outcomes = {r.outcome for r in records}
    assert {Outcome.SCREENED, Outcome.COMPLETE} <= outcomes and outcomes <= {Outcome.SCREENED, Outcome.COMPLETE,
                                                                              Outcome.REJECTED}
    trained_at = {}
    for code, images, epochs, seed in calls:
        trained_at.setdefault(seed, []).append(Fidelity(epochs, images))
    for r in records:
        if r.outcome == Outcome.REJECTED:
            assert not r.rungs and not r.curve and r.number not in trained_at
            continue
        ladder_so_far = [s.fidelity for s in r.rungs] + ([FULL] if r.outcome == Outcome.COMPLETE else [])
        assert trained_at[r.number] == ladder_so_far == list((*CHEAP, FULL))[:len(ladder_so_far)]
        assert r.fidelity == ladder_so_far[-1]
        if r.outcome == Outcome.SCREENED:
            assert not r.curve and r.value is None and r.accuracy is None
            assert study.trials[r.number].state == optuna.trial.TrialState.PRUNED
        else:
            assert len(r.rungs) == 2 and set(r.curve) == {1, 2} and r.value == r.curve[2] < 90
    # successive halving: fewer candidates at each rung, each decision by the promotion rule on its rung alone
    at = [sum(len(r.rungs) > k for r in records) for k in range(2)]
    complete = sum(r.outcome == Outcome.COMPLETE for r in records)
    assert at[0] > at[1] > complete >= 1
    for k in range(2):
        seen = []
        for r in sorted((r for r in records if len(r.rungs) > k), key=lambda r: r.number):
            went_on = len(r.rungs) > k + 1 or r.outcome == Outcome.COMPLETE
            assert went_on == promoted(r.rungs[k].val_acc, seen)
            seen.append(r.rungs[k].val_acc)


def test_each_rung_score_is_also_a_number_the_dashboard_can_plot_and_the_pruner_sees_the_same(climbed):
    study, _ = climbed
    shown = 0
    for r, frozen in zip(read_trials(study), study.get_trials(deepcopy=False)):
        numbers = {k: v for k, v in frozen.user_attrs.items() if k.startswith("rung") and k != "rungs"}
        assert numbers == {rung_attr(k): s.val_acc for k, s in enumerate(r.rungs, 1)}
        # the pruner's view: the rung scores at steps 0 .. K-1, as before
        assert {step: v for step, v in frozen.intermediate_values.items() if step < len(CHEAP)} == \
            {k: s.val_acc for k, s in enumerate(r.rungs)}
        shown += len(numbers)
    assert shown > 0


def test_nothing_compares_a_cheap_score_with_a_full_one(climbed, tmp_path):
    study, _ = climbed
    records = read_trials(study)
    full_values = {r.number: r.value for r in records if r.outcome == Outcome.COMPLETE}
    assert study.best_value == max(full_values.values())
    best = write_best(study, tmp_path)
    assert best["val_acc"] == max(full_values.values()) and best["fidelity"] == FULL.to_dict()
    assert json.loads((tmp_path / "best.json").read_text())["trial"] == study.best_trial.number
    figure = tradeoff_figure(records, "params", "parameters", BUDGET)
    placed = [d for trace in figure.data if trace.customdata is not None and trace.yaxis in (None, "y")
              for d in trace.customdata if isinstance(d, (list, tuple)) and len(d) >= 2]
    assert placed and all(d[0] < 90 for d in placed)  # the stand-in's full scores: no cheap score on the axis
    lanes = [t for t in figure.data if t.name and t.name.startswith("screened out")]
    assert len(lanes) == 1 and len(lanes[0].x) == sum(r.outcome == Outcome.SCREENED for r in records)
    panels = rungs_figure(records)
    assert [a.text for a in panels.layout.annotations] == ["rung 1: 1 epoch x 200 images", "rung 2: 1 epoch x 500 images"]


def _complete_study(values: list[float]) -> optuna.Study:
    """A study with complete trials of the given final-epoch values, as the search records them."""
    space = load_space(TINY)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    write_settings(study, StudySettings(budget=BUDGET, space=space.name, space_file=TINY, epochs=FULL.epochs,
                                        train_images=FULL.train_images, rungs=[], finalists=3, finalist_seeds=2))
    from nas.store.record import record_candidate, record_outcome
    for value in values:
        trial = study.ask()
        spec = space.sample(trial)
        module = build(spec)
        record_candidate(trial, spec, count_params(module), 1, FULL)
        record_outcome(trial, Outcome.COMPLETE)
        study.tell(trial, value)
    return study


def test_finalists_are_ranked_by_the_mean_of_new_seeds(tmp_path):
    study = _complete_study([99.0, 99.5, 97.0, 99.3])  # trial 1 was lucky in the search
    again = {1: 98.8, 3: 99.2, 0: 99.1}  # what each finalist scores with new seeds (trial 2 is not a finalist)
    calls: list = []
    trainer = stand_in(calls, score=lambda spec, seed: again[seed % 1_000_000] + (seed // 1_000_000) * 0.01)
    assert select_winner(study)[0].number == 1 and select_winner(study)[1] is None  # before: the single best
    data = fake_data(300)
    reevaluate(study, data, epochs=FULL.epochs, base_seed=0, count=3, seeds=2, quiet=True, trainer=trainer)
    assert sorted(seed for *_, seed in calls) == sorted(seeds_of(n, 0, 2)[j] for n in (0, 1, 3) for j in range(2))
    assert all(images == 300 and epochs == FULL.epochs for _, images, epochs, _ in calls)  # full, on the given split
    assert not set(seed for *_, seed in calls) & {0, 1, 2, 3}  # new seeds, never the search's own
    record, reevaluation = select_winner(study)
    assert record.number == 3 and reevaluation.mean == pytest.approx(99.215)
    best = write_best(study, tmp_path)
    assert best["trial"] == 3 and best["val_acc"] == 99.3  # the search's own score stays what it was
    assert best["reevaluation"]["seeds"] == seeds_of(3, 0, 2)
    assert best["reevaluation"]["val_acc"] == pytest.approx([99.21, 99.22])
    assert best["reevaluation"]["std"] == pytest.approx(0.00707, abs=1e-4)
    assert "mean validation accuracy over 2 new seeds" in best["selected_by"]
    calls.clear()  # a resumed selection trains only what is missing: nothing here
    reevaluate(study, data, epochs=FULL.epochs, base_seed=0, count=3, seeds=2, quiet=True, trainer=trainer)
    assert calls == [] and len(read_reevaluations(study)) == 3


def test_the_winners_lead_is_weighed_against_the_noise_of_the_two_means():
    study = _complete_study([99.0, 99.5, 97.0, 99.3])  # finalists: trials 1, 3, 0 (2 seeds each, as set)
    assert winner_lead(study) is None  # no winner named before the finalists have their seeds
    runs = {1: [98.8, 98.9], 3: [99.3, 99.1], 0: [99.1, 99.4]}  # means 98.85, 99.20, 99.25
    for trial, accs in runs.items():
        for j, acc in enumerate(accs):
            record_reevaluation(study, trial, seeds_of(trial, 0, 2)[j], acc)
    lead = winner_lead(study)
    assert select_winner(study)[0].number == 0 and (lead.runner_up, lead.seeds) == (3, 2)
    assert lead.points == pytest.approx(0.05) and lead.standard_error == pytest.approx((0.045 / 2 + 0.02 / 2) ** 0.5)
    assert not lead.settled  # 0.28 standard errors
    assert lead.sentence() == ("The winner's mean leads trial 3's by 0.05 points, 0.3 standard errors: their order is "
                               "not settled. The same command with --trials 0 --finalist-seeds 4 trains 2 more seed(s) "
                               "of each finalist.")
    more = {0: [99.6, 99.5], 3: [99.1, 99.0], 1: [98.9, 98.9]}  # two more seeds of each, as --finalist-seeds 4 adds
    for trial, accs in more.items():
        for j, acc in enumerate(accs, 2):
            record_reevaluation(study, trial, seeds_of(trial, 0, 4)[j], acc)
    lead = winner_lead(study)  # 99.400 against 99.125, standard error 0.125: 2.2 of them
    assert (lead.runner_up, lead.seeds) == (3, 4) and lead.points == pytest.approx(0.275) and lead.settled
    assert lead.standard_error == pytest.approx(0.125)
    assert lead.sentence() == (f"The winner's mean leads trial 3's by {lead.points:.2f} points, 2.2 standard errors: "
                               "more seeds would seldom reverse it.")


def test_a_lead_over_one_seed_each_says_its_noise_is_unknown():
    study = _complete_study([99.0, 99.5, 97.0, 99.3])
    write_settings(study, StudySettings(budget=BUDGET, space="mnist_tiny", space_file=TINY, epochs=FULL.epochs,
                                        train_images=FULL.train_images, rungs=[], finalists=2, finalist_seeds=1))
    record_reevaluation(study, 1, seeds_of(1, 0, 1)[0], 99.4)
    assert winner_lead(study) is None  # trial 3 has no seed yet
    record_reevaluation(study, 3, seeds_of(3, 0, 1)[0], 99.1)
    lead = winner_lead(study)
    assert (lead.runner_up, lead.standard_error, lead.settled) == (3, None, False)
    assert "by 0.30 points, with one seed, a mean's noise is unknown: their order is not settled. " \
           "The same command with --trials 0 --finalist-seeds 2 trains 1 more seed(s)" in lead.sentence()


def test_workers_splitting_the_finalists_train_each_seed_once():
    study = _complete_study([99.0, 99.5, 97.0, 99.3])
    todo = [(r.number, seed) for r, seed in pending(study, base_seed=0, count=3, seeds=3)]
    assert len(todo) == 9
    record_reevaluation(study, *todo[4], 99.0)  # stored meanwhile, by another machine
    trained = []
    for k in range(2):  # two workers, as `nas search --jobs 2` splits them: every 2nd from the k-th
        calls: list = []
        reevaluate(study, fake_data(300), epochs=FULL.epochs, base_seed=0, count=3, seeds=3, quiet=True,
                   trainer=stand_in(calls, score=lambda spec, seed: 99.0), only=set(todo[k::2]))
        trained.append([seed for *_, seed in calls])
    assert trained == [[seed for _, seed in todo[0::2] if seed != todo[4][1]], [seed for _, seed in todo[1::2]]]
    assert pending(study, base_seed=0, count=3, seeds=3) == [] and select_winner(study)[1] is not None


def test_a_search_with_finalists_never_opens_the_test_set(cli, tmp_path):
    with opened_files() as opened:
        result = cli("search", "--budget", "3000", "--space", TINY, "--trials", "3", "--epochs", "1", "--subset",
                     "256", "--finalists", "2", "--finalist-seeds", "2", "-q", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any("train-images-idx3-ubyte" in p for p in opened)  # the hook sees the data being read
    assert not [p for p in opened if "t10k" in p]
    assert "finalists (top" in result.stdout and "<- winner" in result.stdout
    best = json.loads((tmp_path / "studies" / "mnist_tiny-b3000" / "best.json").read_text())
    assert len(best["reevaluation"]["seeds"]) == 2


@pytest.mark.slow  # a search through both cheap rungs, continued: about 9 s on 2 cores
def test_the_search_command_climbs_the_default_ladder_and_keeps_it(cli, tmp_path):
    args = ["--budget", "3000", "--space", TINY, "--epochs", "1", "--subset", "1500", "--finalists", "0",
            "--no-report", "--device", "cpu", "--neighbours", "0"]  # drawn candidates only: each climbs the rungs
    result = cli("search", *args, "--trials", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("rungs: 1x300 -> 1x750 -> 1x1,500 (epochs x images; the best 1/3 at each cheap rung go on); in the full "
            "training no median rule (too few epochs)") in result.stderr
    study = optuna.load_study(study_name="mnist_tiny-b3000", storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b3000.db")
    assert study.user_attrs["rungs"] == [[1, 300], [1, 750]] and study.user_attrs["rung_unit"] == "images"
    trained = [r for r in read_trials(study) if r.rungs]
    assert trained and all(r.rungs[0].fidelity == Fidelity(1, 300) for r in trained)
    assert all(r.outcome in (Outcome.SCREENED, Outcome.COMPLETE) for r in trained)
    assert "trained at each fidelity (epochs x images): 1x300: " in result.stdout
    # continued without --rungs: the study's own; with other rungs: refused, nothing run
    again = cli("search", *args, "--trials", "1", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    refused = cli("search", *args, "--trials", "1", "--rungs", "none", cwd=tmp_path)
    assert refused.returncode == 2 and "was run with --rungs 1x300 1x750, not none" in refused.stderr
    refused = cli("search", *args, "--trials", "1", "--rungs-in", "steps", cwd=tmp_path)
    assert refused.returncode == 2 and "was run with --rungs-in images, not steps" in refused.stderr
    # counted in steps: said, stored, and kept when the study is continued without --rungs-in
    steps = cli("search", *args, "--trials", "1", "--study", "in-steps", "--rungs-in", "steps", "--sampler", "random",
                cwd=tmp_path)
    assert steps.returncode == 0, steps.stderr
    assert "cheap rungs in optimiser steps: images for a batch of 128" in steps.stderr
    assert "\nsampler: random search (every draw independent" in steps.stderr and "sampler: TPE" in result.stderr
    waits = cli("search", *args, "--timeout", "1", "--study", "waits", "--promote-after", "9", "--startup-trials", "4",
                cwd=tmp_path)
    assert waits.returncode == 0 and "the best 1/3 at each cheap rung go on, once it has 9 scores" in waits.stderr
    assert "sampler: TPE (multivariate; 4 random draws first" in waits.stderr
    refused = cli("search", *args, "--trials", "1", "--study", "in-steps", "--rungs-in", "images", cwd=tmp_path)
    assert refused.returncode == 2 and "was run with --rungs-in steps, not images" in refused.stderr
    assert len(optuna.load_study(study_name="mnist_tiny-b3000",
                                 storage=f"sqlite:///{tmp_path}/studies/mnist_tiny-b3000.db").trials) == 5
