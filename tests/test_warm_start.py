from nas import build, count_params
from nas.bundled import reference_files
from nas.space import load_space
from nas.spec import load_spec
from nas.search.warm_start import narrowed, warm_starts


def test_a_reference_too_large_for_the_budget_is_narrowed_until_it_fits():
    space, final = load_space("mnist_small"), load_spec(reference_files()[-1])  # 7,416 parameters
    starts = warm_starts(space, 4000, [])
    assert [name for name, _, _ in starts] == ["4_final at widths x0.68"]  # 3_gap: a constant LR, not drawn
    name, params, moved = starts[0]
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


def test_a_reference_that_fits_is_queued_as_it_is_and_none_without_references():
    space = load_space("mnist")
    assert [name for name, _, _ in warm_starts(space, 8000, [])] == ["4_final"]
    assert warm_starts(space, 4000, [], references=False) == []
