from nas import build, count_params
from nas.bundled import find_spec, reference_files
from nas.space import load_space
from nas.spec import load_spec
from nas.search.warm_start import narrowed, warm_starts, widened


def test_a_reference_too_large_for_the_budget_is_narrowed_until_it_fits():
    space, final = load_space("mnist"), load_spec(reference_files()[-1])  # 7,416 parameters
    starts = warm_starts(space, 4000, [])
    # the model found at this budget first, then the one found below it widened; 3_gap: a constant LR, not drawn
    assert [name for name, _, _ in starts] == ["found/b4000", "found/b2000 at widths x1.54", "4_final at widths x0.68"]
    # a space that cannot draw a found model leaves it out (mnist_small: no valid padding after a pool and 1x1)
    assert [name for name, _, _ in warm_starts(load_space("mnist_small"), 4000, [])] == ["found/b4000",
                                                                                      "4_final at widths x0.68"]
    name, params, moved = starts[2]
    spec = space.spec_from_params(params)
    # every width at 68 % of the design's, moved onto the space's grid (even widths from 4): the widest under 4,000
    assert spec.code == "v c4-12 T4 c12-12-12 gapc bn d.05 | sgd .05 oc b128 ls0 wd1e-06 a.5"
    assert count_params(build(spec)) == 3764
    assert narrowed(final, space, 8000)[1] == 0.99  # the widest factor is tried first
    assert (spec.arch.kinds, spec.arch.transition, spec.arch.head) == (final.arch.kinds, "1x1_pool", "gap_conv")
    assert moved == {"weight_decay": (0.0, 1e-06)} and spec.train.lr == final.train.lr
    assert narrowed(final, space, 300) is None  # below the space's narrowest widths nothing fits


def test_narrowing_finds_the_widest_factor_that_fits_as_a_scan_of_every_factor_does():
    """Designs already counted too large are skipped: the result is still the first factor whose design fits."""
    from dataclasses import replace

    from nas.search.warm_start import NARROWING_STEPS

    space = load_space("mnist_tiny")
    for path in reference_files():
        spec = load_spec(path)

        def scan(budget, spec=spec):
            def scaled(width, key, factor):
                return int(space.nearest(key, max(1, round(width * factor)))) if width else 0
            for f in NARROWING_STEPS:
                a = spec.arch
                arch = replace(a, stages=tuple(tuple(scaled(w, "arch.width", f) for w in st) for st in a.stages),
                               transition_width=scaled(a.transition_width, "arch.transition_width", f),
                               head_width=scaled(a.head_width, "arch.head_width", f))
                candidate = replace(spec, arch=arch)
                if (params := count_params(build(candidate))) < budget:
                    return candidate, f, params
            return None
        for budget in (700, 1500, 3000, 6000):
            assert narrowed(spec, space, budget) == scan(budget), (path.stem, budget)


def test_the_found_models_nearest_the_budget_start_a_search_at_any_budget():
    """At a found model's budget that model, else the one above narrowed to fit; and the one below widened to fill
    the budget."""
    from nas.search.warm_start import nearest_found

    assert [p.stem for p in nearest_found(8000)] == ["b8000", "b4000"]
    assert [p.stem for p in nearest_found(5000)] == ["b8000", "b4000"]
    assert [p.stem for p in nearest_found(4000)] == ["b4000", "b2000"] and [p.stem for p in nearest_found(2000)] == ["b2000"]
    assert [p.stem for p in nearest_found(1000)] == ["b2000"] and [p.stem for p in nearest_found(50_000)] == ["b8000"]
    space = load_space("mnist_focused")
    starts = warm_starts(space, 5000, [])
    assert [name for name, _, _ in starts] == ["found/b8000 at widths x0.80", "found/b4000 at widths x1.09",
                                               "4_final at widths x0.84"]
    narrow, wide = (space.spec_from_params(params) for _, params, _ in starts[:2])
    b8000, b4000 = (load_spec(find_spec(name)) for name in ("found/b8000", "found/b4000"))
    assert count_params(build(narrow)) < 5000 and narrow.train == b8000.train  # its recipe, narrower widths
    assert [len(stage) for stage in narrow.arch.stages] == [len(stage) for stage in b8000.arch.stages]
    assert 3904 < count_params(build(wide)) < 5000 and wide.train == b4000.train  # its recipe, wider widths
    assert wide.arch.kinds == b4000.arch.kinds and wide.arch.head == b4000.arch.head


def test_a_model_found_at_a_smaller_budget_is_widened_within_every_budget():
    """The widest copy under all the budgets, at one factor above 1; none without room; references stay as made."""
    from nas.cost import Budgets, spec_costs

    space, b4000 = load_space("mnist_focused"), load_spec(find_spec("found/b4000"))
    spec, factor, params = widened(b4000, space, 8000)
    assert factor > 1 and params == count_params(build(spec)) < 8000
    assert all(w >= w0 for stage, stage0 in zip(spec.arch.stages, b4000.arch.stages) for w, w0 in zip(stage, stage0))
    assert widened(b4000, space, 3905) is None  # room for one parameter: no wider copy fits
    capped = widened(b4000, space, Budgets(8000, macs=600_000))  # the MACs bind before the parameters
    assert capped[2] < params and spec_costs(capped[0]).macs <= 600_000 < spec_costs(spec).macs
    # above the largest found model: that model widened; the hand-made design is queued as people made it
    starts = warm_starts(load_space("mnist"), 20_000, [])
    assert [name.split(" at widths x")[0] for name, _, _ in starts] == ["found/b8000", "4_final"]
    assert starts[0][0] != "found/b8000" and starts[1][0] == "4_final"
    b8000 = count_params(build(load_spec(find_spec("found/b8000"))))
    assert b8000 < count_params(build(load_space("mnist").spec_from_params(starts[0][1]))) < 20_000


def test_a_reference_that_fits_is_queued_as_it_is_and_none_without_references():
    space = load_space("mnist")
    # found/b8000 is found/b4000 widened to fill 8,000: that copy is queued once, under the found model's name
    assert [name for name, _, _ in warm_starts(space, 8000, [])] == ["found/b8000", "4_final"]
    assert widened(load_spec(find_spec("found/b4000")), space, 8000)[0] == load_spec(find_spec("found/b8000"))
    assert warm_starts(space, 4000, [], references=False) == []


def test_widen_best_queues_the_widest_copy_of_the_best_once_and_none_without_room(tmp_path):
    """--widen-best: the study's new best is followed by its widest copy, queued as a known design; not when it
    fills the budget, when the copy would add under 10 % of its parameters, or when the study has it already."""
    import optuna
    from optuna.trial import TrialState

    from nas.cost import Budgets
    from nas.search.warm_start import queue_widened_best
    from nas.store.record import warm_start_of

    space, b4000 = load_space("mnist_focused"), load_spec(find_spec("found/b4000"))
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    assert queue_widened_best(study, b4000, 7, space, Budgets(8000)) == "trial 7 at widths x1.46"
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert warm_start_of(queued) == "trial 7 at widths x1.46"
    assert space.spec_from_params(queued.system_attrs["fixed_params"]) == widened(b4000, space, 8000)[0]
    assert queue_widened_best(study, b4000, 7, space, Budgets(8000)) is None  # queued already: once
    assert queue_widened_best(study, load_spec(find_spec("found/b8000")), 9, space, Budgets(8000)) is None  # full
    assert widened(b4000, space, 4200)[2] < 1.1 * 3904  # some room, under 10 % more: that design trained again
    assert queue_widened_best(study, b4000, 3, space, Budgets(4200)) is None
    assert len(study.trials) == 1


def _trained(space_name: str, spec, value: float = 99.0):
    """A study (in memory) whose one complete trial is `spec`, queued as a warm start is, and that trial."""
    import optuna

    space = load_space(space_name)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.params_for(spec)[0])
    trial = study.ask()
    space.sample(trial)
    study.tell(trial, value)
    return space, study, study.trials[0]


def test_the_neighbours_of_a_design_move_one_parameter_each_and_stay_within_the_budget():
    from nas.cost import Budgets, over_budget, spec_costs
    from nas.search.neighbours import neighbours

    space, _, trial = _trained("mnist_focused", load_spec(find_spec("found/b8000")))  # 7,926 of 8,000
    found = neighbours(trial, space, Budgets(8000), 8, seed=0)
    assert len(found) == 8 and found == neighbours(trial, space, Budgets(8000), 8, seed=0)  # the same each time
    assert [name for name, _, _ in found] != [name for name, _, _ in neighbours(trial, space, Budgets(8000), 8, 1)]
    moved = set()
    for name, params, notes in found:
        head, what = name.split(", ", 1)
        key, old, arrow, new = what.split(" ")
        assert head == "trial 0" and arrow == "->" and notes == {} and key not in moved  # a different one each
        moved.add(key)
        spec = space.spec_from_params(params)
        assert spec is not None and not over_budget(spec_costs(spec), Budgets(8000))
        # that parameter alone changed (a block fewer drops that block's parameters; one more adds its own)
        assert {k for k in trial.params.keys() & params.keys() if params[k] != trial.params[k]} == {key}
    assert len({tuple(sorted(p.items())) for _, p, _ in found}) == 8
    assert neighbours(trial, space, Budgets(8000), 0, seed=0) == []


def test_neighbours_follow_a_new_best_by_default_only_where_the_search_has_a_warm_start():
    from nas.search.neighbours import NEIGHBOURS, neighbours_default

    assert neighbours_default([]) == 0 and NEIGHBOURS == 2
    assert neighbours_default(warm_starts(load_space("mnist_focused"), 8000, [])) == NEIGHBOURS


def test_a_step_swaps_a_choice_and_moves_a_number_within_its_range():
    import random

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from nas.search.neighbours import step

    rng = random.Random(0)
    for _ in range(50):
        assert step("relu", CategoricalDistribution(["relu", "silu", "prelu"]), rng) in ("silu", "prelu")
        lr = step(0.316, FloatDistribution(0.05, 0.5, log=True), rng)
        assert 1.19 <= max(lr / 0.316, 0.316 / lr) <= 1.61 or lr == 0.5
        assert step(0.5, FloatDistribution(0.05, 0.5, log=True), rng) < 0.5  # at the top: down
        width = step(18, IntDistribution(4, 32, step=2), rng)
        assert abs(width - 18) in (2, 4) and width % 2 == 0
        assert step(4, IntDistribution(4, 32, step=2), rng) in (6, 8)
        shift = step(0.05, FloatDistribution(0.0, 0.1), rng)
        assert 0.0099 <= abs(shift - 0.05) <= 0.0251 and 0.0 <= shift <= 0.1
    assert step(True, CategoricalDistribution([True]), rng) is True  # nothing to swap with: itself


def test_a_step_an_end_of_the_range_would_cut_short_goes_the_other_way():
    import random

    from optuna.distributions import FloatDistribution, IntDistribution

    from nas.search.neighbours import step

    rng = random.Random(0)
    for _ in range(50):
        # the searched rotation 14.9 in 5-15 went to 15: the best trained again for a 0.1 degree change
        rotation = step(14.9, FloatDistribution(5.0, 15.0), rng)
        assert 14.9 - 2.51 <= rotation <= 14.9 - 0.99
        lr = step(0.45, FloatDistribution(0.05, 0.5, log=True), rng)
        assert 1.19 <= 0.45 / lr <= 1.61
        assert step(30, IntDistribution(4, 32, step=2), rng) in (32, 28, 26)  # +2 fits; +4 would be cut


def test_a_block_a_step_adds_copies_the_block_before_it():
    from nas.search.neighbours import _Moved

    space, _, trial = _trained("mnist_focused", load_spec(find_spec("found/b8000")))
    blocks = trial.params["blocks_s2"]
    spec = space.sample(_Moved({**trial.params, "blocks_s2": blocks + 1}))
    assert spec.arch.stages[1] == (*load_spec(find_spec("found/b8000")).arch.stages[1],
                                   load_spec(find_spec("found/b8000")).arch.stages[1][-1])
    assert spec.arch.kinds[1][-1] == spec.arch.kinds[1][-2]


def test_queue_neighbours_queues_each_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from nas.cost import Budgets
    from nas.search.neighbours import queue_neighbours
    from nas.store.record import warm_start_of

    space, _, trial = _trained("mnist_focused", load_spec(find_spec("found/b4000")))
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    names = queue_neighbours(study, trial, space, Budgets(4000), 2, seed=5)
    assert len(names) == 2 and all(n.startswith("trial 0, ") for n in names)
    assert [warm_start_of(t) for t in study.get_trials(states=(TrialState.WAITING,))] == names
    assert queue_neighbours(study, trial, space, Budgets(4000), 2, seed=5) == []  # queued already: once
    assert len(study.trials) == 2


def test_filling_widens_a_design_with_room_and_narrows_one_over_the_budget():
    """`--widths filled`: the widest copy within the budget, whichever side of it the design is; `can_fill`,
    the sampler's cheap screen, agrees with it on every draw."""
    import optuna

    from nas.cost import Budgets, spec_costs
    from nas.search.warm_start import FILLING_STEPS, can_fill, filled

    space, b4000 = load_space("mnist_focused"), load_spec(find_spec("found/b4000"))  # 3,904 parameters
    wide, factor, params = filled(b4000, space, 8000)
    assert wide == widened(b4000, space, 8000)[0]  # the copy a warm start's widening makes
    assert 7000 < params < 8000 and factor > 1 and wide.train == b4000.train
    assert [len(s) for s in wide.arch.stages] == [len(s) for s in b4000.arch.stages]  # the shape is the design's
    narrow = filled(b4000, space, 2000)
    assert narrow[2] < 2000 and narrow[1] < 1 and narrow[0] == narrowed(b4000, space, 2000)[0]
    assert filled(b4000, space, 100) is None and not can_fill(b4000, space, 100)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(12):
        spec = space.sample(study.ask())
        for budget in (2000, 8000):
            fill = filled(spec, space, Budgets(budget))
            assert can_fill(spec, space, budget) == (fill is not None)
            if fill is not None:  # within the budget, at one of the factors
                assert fill[2] == spec_costs(fill[0]).params < budget and fill[1] in FILLING_STEPS


def test_in_a_filled_study_no_neighbour_fills_to_the_design_of_the_best():
    """Moving one width of a filled design changes the proportions; a move that scales back to the same model
    would train the best again, so it is passed over; every neighbour can be filled."""
    from nas.cost import Budgets
    from nas.search.neighbours import neighbours
    from nas.search.objective import FILLED
    from nas.search.warm_start import can_fill, filled

    b4000 = load_spec(find_spec("found/b4000"))
    space, _, trial = _trained("mnist_focused", b4000)
    best = filled(space.spec_from_params(trial.params), space, 8000)[0]  # what the best trained
    found = neighbours(trial, space, Budgets(8000), 30, seed=0, widths=FILLED)
    assert found and len(found) < len(neighbours(trial, space, Budgets(8000), 30, seed=0))
    for _, params, _ in found:
        spec = space.spec_from_params(params)
        assert can_fill(spec, space, 8000) and filled(spec, space, 8000)[0] != best
