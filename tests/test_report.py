import datetime
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import optuna
import plotly.colors
import pytest
from plotly.offline import get_plotlyjs

from conftest import ROOT, SHARED_SEARCH, SHARED_STUDY
from nas.cli import run_command
from nas.cost import count_macs, count_params
from nas.model import build
from nas.store.storage import output_dir
from nas.fidelity import Fidelity
from nas.store.record import (Outcome, RungScore, StudySettings, optuna_state, queued_as, read_trials,
                              record_candidate, record_epochs, record_fidelity, record_outcome, record_rungs,
                              write_settings)
from nas.report.command import Trials, build_report, sections, write_report
from nas.report.figures import SCALE, pareto_front, tradeoff_figure
from nas.report.trials_csv import write_csv
from nas.space import load_space

TINY = str(ROOT / "search_spaces" / "mnist_tiny.yaml")
BUDGET = 1500
FIDELITY = Fidelity(epochs=3, train_images=512)
RUNG = Fidelity(epochs=1, train_images=128)  # one cheap rung before the full training
# what each under-budget candidate of the crafted study becomes, in order (the running one last)
PLAN = [Outcome.COMPLETE, Outcome.PRUNED, Outcome.COMPLETE, Outcome.DIVERGED, Outcome.SCREENED, Outcome.COMPLETE,
        Outcome.PRUNED, Outcome.FAILED, Outcome.INTERRUPTED, Outcome.SCREENED, Outcome.COMPLETE, Outcome.RUNNING]
EPOCHS = {Outcome.COMPLETE: 3, Outcome.PRUNED: 2, Outcome.DIVERGED: 1, Outcome.FAILED: 0, Outcome.INTERRUPTED: 2,
          Outcome.RUNNING: 1, Outcome.SCREENED: 0}


def craft_study(url: str, name: str = "crafted") -> optuna.Study:
    """A study as nas.search leaves it, with every outcome, written through nas.record: real specs and
    fvcore counts from the tiny space, made-up accuracies (training is not what these tests are about),
    one of them a dud at 62 % so that the accuracy axes and colours must cope with a wide range."""
    space = load_space(TINY)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    write_settings(study, StudySettings(budget=BUDGET, space=space.name, space_file=TINY, epochs=3,
                                        train_images=FIDELITY.train_images, rungs=[[RUNG.epochs, RUNG.train_images]]))
    plan = list(PLAN)
    while plan:
        assert len(study.trials) < 60, "the tiny space should give enough candidates under the budget"
        trial = study.ask()
        spec = space.sample(trial)
        module = build(spec)
        params = count_params(module)
        record_candidate(trial, spec, params, count_macs(module), RUNG, (RUNG, FIDELITY))
        trial.set_constraint("params", params - BUDGET + 1)
        if params >= BUDGET:
            record_outcome(trial, Outcome.REJECTED)
            study.tell(trial, state=optuna_state(Outcome.REJECTED))
            continue
        kind = plan.pop(0)
        final = 62.0 if len(plan) == len(PLAN) - 3 else 97.0 + (params % 200) / 100  # the 2nd complete one: a dud
        if kind != Outcome.FAILED:  # steps: 0 the cheap rung, 1 + e the full training's epoch e
            trial.report(final - 5, 0)
            record_rungs(trial, [RungScore(RUNG, final - 5, 0.2)])
        if kind != Outcome.SCREENED:
            record_fidelity(trial, FIDELITY)
        for epoch in range(1, EPOCHS[kind] + 1):
            trial.report(final - 2.5 * (3 - epoch), 1 + epoch)
        record_epochs(trial, [0.5] * EPOCHS[kind])
        record_outcome(trial, kind)
        if kind == Outcome.COMPLETE:
            study.tell(trial, final)
        elif kind != Outcome.RUNNING:
            study.tell(trial, state=optuna_state(kind))  # interrupted: FAIL, told apart by its outcome
    return study


@pytest.fixture(scope="module")
def searched(shared_study, shared_copy) -> Path:
    """A real, small search (the shared study, run with -q): the report nas.search writes at its end."""
    result = shared_study.search
    assert "-q" in SHARED_SEARCH and result.returncode == 0, result.stderr
    assert result.stderr == ""  # the report adds nothing to a quiet run's stderr
    assert f"report: studies/{SHARED_STUDY}/report.html" in result.stdout
    return shared_copy


def _kinds(study) -> dict[int, Outcome]:
    return {r.number: r.outcome for r in read_trials(study)}


def _of(kinds, kind) -> list[int]:
    return sorted(n for n, k in kinds.items() if k == kind)


def _figures(study) -> dict:
    found = {s.title: s for s in sections(Trials.read(study), BUDGET, datetime.datetime.now())}
    assert all(s.figure is not None for s in found.values()), {k: s.note for k, s in found.items()}
    return {k: s.figure for k, s in found.items()}


def _luminance(color: str) -> float:
    """0 black ... 1 white (sRGB weights, gamma left aside: enough to tell near-white apart)."""
    r, g, b = plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type([color], "rgb")[0][0])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def _inside(axis, errors) -> bool:
    """The log-error axis's range holds every point with room to spare (reversed: better is up)."""
    high, low = axis.range
    return low < math.log10(min(errors)) and math.log10(max(errors)) < high


def test_crafted_study_has_every_outcome(crafted):
    counts = {k: list(_kinds(crafted).values()).count(k) for k in Outcome}
    assert counts[Outcome.COMPLETE] == 4 and counts[Outcome.PRUNED] == 2 and counts[Outcome.DIVERGED] == 1
    assert counts[Outcome.FAILED] == 1 and counts[Outcome.INTERRUPTED] == 1 and counts[Outcome.RUNNING] == 1
    assert counts[Outcome.REJECTED] >= 2
    interrupted = next(t for t in crafted.trials if _kinds(crafted)[t.number] == Outcome.INTERRUPTED)
    assert interrupted.state == optuna.trial.TrialState.FAIL


def test_pareto_front():
    points = [(100, 95.0, 0), (200, 97.0, 1), (150, 94.0, 2), (300, 96.0, 3), (400, 99.0, 4), (400, 98.0, 5)]
    assert [p[2] for p in pareto_front(points)] == [0, 1, 4]
    assert pareto_front([]) == []


def test_tradeoff_figure_draws_every_candidate_in_its_place(crafted):
    records = read_trials(crafted)
    kinds = _kinds(crafted)
    fig = tradeoff_figure(records, "params", "parameters", BUDGET)
    by_name = {t.name: t for t in fig.data}

    def numbers(trace):
        return sorted(c[-1] if isinstance(c, (list, tuple)) else c for c in trace.customdata)

    assert numbers(by_name["complete (final-epoch accuracy)"]) == _of(kinds, Outcome.COMPLETE)
    assert numbers(by_name["pruned (accuracy when stopped — not final)"]) == _of(kinds, Outcome.PRUNED)
    assert numbers(by_name["running (latest epoch — not final)"]) == _of(kinds, Outcome.RUNNING)
    assert numbers(by_name["interrupted (last epoch — not final)"]) == _of(kinds, Outcome.INTERRUPTED)
    # no accuracy: rejected, diverged and failed sit in the lane below, at their measured size
    lane = by_name["rejected: ≥ budget, never trained"]
    assert numbers(lane) == _of(kinds, Outcome.REJECTED) and lane.yaxis == "y2"
    assert all(x >= BUDGET for x in lane.x)
    assert numbers(by_name["diverged"]) == _of(kinds, Outcome.DIVERGED)
    assert numbers(by_name["failed"]) == _of(kinds, Outcome.FAILED)
    # the front holds complete trials only, and none of them beats a front point
    front = by_name["Pareto front (complete trials)"]
    complete = [r for r in records if r.outcome == Outcome.COMPLETE]
    assert {c[1] for c in front.customdata} <= set(_of(kinds, Outcome.COMPLETE))
    for x, (acc, _) in zip(front.x, front.customdata):
        assert not any(r.params <= x and r.value > acc for r in complete)
    # the budget: one dashed line through both rows
    assert [s.x0 for s in fig.layout.shapes] == [BUDGET, BUDGET]
    # accuracy axis: log of the error, better is up, ticks are accuracies, every point inside the range
    axis = fig.layout.yaxis
    assert axis.type == "log" and axis.range[0] > axis.range[1]
    assert all(float(t) > 0 for t in axis.ticktext) and len(axis.ticktext) >= 3
    assert _inside(axis, [y for t in fig.data if t.yaxis == "y" for y in t.y])
    # without candidates for the lane, no empty lane row (it hid the cost axis)
    alone = tradeoff_figure([r for r in records if r.accuracy is not None], "params", "parameters", BUDGET)
    assert alone.layout.xaxis.title.text == "parameters" and "yaxis2" not in alone.layout
    # ticks never crowd: at least a tenth of the axis apart
    gaps = [abs(math.log10(a / b)) for a, b in zip(axis.tickvals, axis.tickvals[1:])]
    assert min(gaps) >= abs(axis.range[0] - axis.range[1]) / 10


def test_optuna_figures_do_not_mistake_rejections_for_pruned_trials(crafted):
    kinds = _kinds(crafted)
    figures = _figures(crafted)
    timeline = {t.name: t for t in figures["Timeline"].data}
    assert sorted(timeline["rejected (over budget, not trained)"].y) == _of(kinds, Outcome.REJECTED)
    assert sorted(timeline["pruned"].y) == _of(kinds, Outcome.PRUNED)
    assert sorted(timeline["interrupted"].y) == _of(kinds, Outcome.INTERRUPTED)
    assert set(timeline) >= {"complete", "diverged", "failed", "running"}
    best = next(t for t in figures["Optimization history"].data if t.name == "best so far")
    assert list(best.x) == _of(kinds, Outcome.COMPLETE)
    curves = figures["Learning curves"].data
    # the full training's epochs only: a screened trial's cheap-rung score (step 0) is no point of a curve
    assert sorted(t.meta["trial"] for t in curves) == sorted(r.number for r in read_trials(crafted) if r.curve)
    assert not {t.meta["trial"] for t in curves} & set(_of(kinds, Outcome.SCREENED))
    assert {t.meta["outcome"]: kinds[t.meta["trial"]].value for t in curves} == {
        k: k for k in ("complete", "pruned", "diverged", "interrupted", "running")}


def test_figures_read_at_a_glance(crafted):
    """What made the figures hard to read must not come back."""
    kinds = _kinds(crafted)
    figures = _figures(crafted)
    assert _luminance(SCALE[0]) < 0.5 and _luminance(SCALE[-1]) < 0.85  # both ends of the scale show on white

    # slices: points coloured by their real trial number (not the snapshot's), on the visible scale
    slices = figures["Slices of the most important choices"]
    assert slices.layout.coloraxis.colorscale[0][1] == SCALE[0]
    shown = {n for t in slices.data for n in t.marker.color}
    assert shown <= set(_of(kinds, Outcome.COMPLETE)) and len(shown) == 4
    assert _inside(slices.layout.yaxis, [y for t in slices.data for y in t.y])

    # parallel coordinates: every line in a colour that shows, the best one on top and darkest-to-lightest
    # in the order of accuracy; the dud (62 %) is not pushed to white
    parallel = figures["Parallel coordinates"]
    lines = [t for t in parallel.data if t.mode == "lines"]
    assert len(lines) == 4 and all(_luminance(t.line.color) < 0.85 for t in lines)
    accs = [float(t.customdata[0][1]) for t in lines]
    assert accs == sorted(accs) and min(accs) == 62.0
    assert [t.y[0] for t in lines] == sorted(t.y[0] for t in lines) and lines[-1].y[0] == 1
    scale = next(t for t in parallel.data if t.mode == "markers")
    assert scale.marker.colorscale[0][1] == SCALE[0]

    # learning curves: complete trials told apart (own shade, own legend entry), each hover naming its trial
    curves = [t for t in figures["Learning curves"].data if t.meta["outcome"] == "complete"]
    assert len({t.line.color for t in curves}) == len({t.legendgroup for t in curves}) == len(curves) == 4
    assert all(t.showlegend and f"trial {t.meta['trial']} " in t.hovertemplate for t in curves)
    assert _inside(figures["Learning curves"].layout.yaxis, [y for t in figures["Learning curves"].data for y in t.y])
    assert figures["Learning curves"].data[-1].meta["outcome"] == "complete"  # drawn on top

    # history: every point inside both axes
    history = figures["Optimization history"]
    points = next(t for t in history.data if t.name == "final-epoch accuracy")
    assert _inside(history.layout.yaxis, list(points.y))
    low, high = history.layout.xaxis.range
    assert low < min(points.x) and max(points.x) < high


def test_report_page_shares_one_plotly_js_beside_it(crafted, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plotly.min.js").write_text("/* an older plotly's copy */")  # refreshed, never trusted
    path = write_report(crafted, out)
    assert path == out / "report.html" and sorted(p.name for p in out.iterdir()) == ["plotly.min.js", "report.html"]
    assert (out / "plotly.min.js").read_text() == get_plotlyjs()
    page = path.read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [attrs.strip() for attrs, _ in scripts if "src" in attrs] == ['charset="utf-8" src="plotly.min.js"']
    assert "<link" not in page and "http" not in "".join(attrs for attrs, _ in scripts)  # nothing from a network
    assert not [body for _, body in scripts if len(body) > 100_000] and len(page) < 1_000_000  # plotly.js not inside
    assert page.count('class="plotly-graph-div"') == 11 and "not drawn" not in page
    bundle = (out / "plotly.min.js").stat()
    write_report(crafted, out)  # a second page in the folder: the one copy stays as it is
    assert (out / "plotly.min.js").stat().st_mtime_ns == bundle.st_mtime_ns and len(list(out.iterdir())) == 2
    n = {k: list(_kinds(crafted).values()).count(k) for k in Outcome}
    assert (f"{n[Outcome.COMPLETE]} complete, {n[Outcome.PRUNED]} pruned, 2 screened, {n[Outcome.REJECTED]} rejected, "
            "1 diverged, 1 failed, 1 interrupted, 1 running") in page
    assert "1 trial(s) interrupted" in page
    best = max((r for r in read_trials(crafted) if r.outcome == Outcome.COMPLETE), key=lambda r: r.value)
    assert f"#{best.number}: {best.value:.2f} % validation accuracy" in page
    for r in read_trials(crafted):  # the top table: every complete trial's code, HTML-escaped
        if r.outcome == Outcome.COMPLETE:
            assert f"<code>{r.code}</code>" in page


@pytest.mark.parametrize("kinds, says", [
    ([], "This study has no trials yet."),
    ([Outcome.REJECTED, Outcome.REJECTED], "No trial has completed yet (2 rejected by the budget gate)"),
    ([Outcome.REJECTED, Outcome.PRUNED], "No trial has completed yet (1 rejected by the budget gate)"),
    ([Outcome.COMPLETE], "needs at least 2 completed trials"),
])
def test_young_studies_give_a_page_that_says_so(kinds, says):
    space = load_space(TINY)
    study = optuna.create_study(direction="maximize")
    write_settings(study, StudySettings(budget=BUDGET, space=space.name, space_file=TINY, epochs=1))
    for i, kind in enumerate(kinds):
        trial = study.ask()
        record_candidate(trial, space.sample(trial), 1000 + 500 * i, 10_000, Fidelity(1, 512))
        record_outcome(trial, kind)
        if kind == Outcome.COMPLETE:
            trial.report(90.0, 1)
            study.tell(trial, 98.5)
        else:
            study.tell(trial, state=optuna_state(kind))
    page = build_report(study)
    assert says in page
    assert "not drawn" not in page  # every missing figure is explained, none failed


def test_a_queued_trial_is_said_queued_not_running(tmp_path):
    """A trial enqueued for a worker (a warm start, a late promotion, a retry) has not started: the page, its
    counts and trials.csv call it queued, and nothing draws it as running."""
    space = load_space(TINY)
    study = optuna.create_study(direction="maximize")
    write_settings(study, StudySettings(budget=BUDGET, space=space.name, space_file=TINY, epochs=1))
    trial = study.ask()
    record_candidate(trial, space.sample(trial), 1000, 10_000, Fidelity(1, 512))
    record_outcome(trial, Outcome.COMPLETE)
    trial.report(90.0, 1)
    study.tell(trial, 98.5)
    study.enqueue_trial({}, user_attrs=queued_as("4_final"))
    assert [r.outcome for r in read_trials(study)] == [Outcome.COMPLETE, Outcome.QUEUED]
    page = build_report(study)
    assert "0 running, 1 queued" in page and "1 trial(s) queued, not started yet" in page
    assert "marked running" not in page
    rows = write_csv(study, tmp_path / "trials.csv").read_text().splitlines()
    assert rows[2].startswith("1,queued,")


@pytest.mark.slow  # over 3 s on 2 cores (see pyproject.toml)
def test_cli_writes_the_report_and_refuses_bad_input(crafted_db, tmp_path, monkeypatch, capsys, cli):
    db = tmp_path / "copy.db"
    shutil.copy(crafted_db, db)
    ok = cli("report", "--study", "crafted", "--storage", f"sqlite:///{db}", "--out", "here", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "here/report.html" and (tmp_path / "here" / "report.html").is_file()

    monkeypatch.chdir(tmp_path)  # the rest in-process too: the same command, without a torch import each
    monkeypatch.delenv("NAS_STUDIES_DIR", raising=False)
    (tmp_path / "afile").write_text("x")
    for args, status, message in (
            # a study outside the default storage: its folder is named by the storage too (no collisions)
            (["--study", "crafted", "--storage", f"sqlite:///{db}"], 0,
             str(output_dir(Path("studies"), "crafted", f"sqlite:///{db}") / "report.html")),
            (["--study", "crafted", "--storage", f"sqlite:///{db}", "--studies-dir", "elsewhere"], 0,
             str(output_dir(Path("elsewhere"), "crafted", f"sqlite:///{db}") / "report.html")),
            (["--study", "nope"], 2, "no study 'nope'"),
            (["--study", "nope", "--storage", f"sqlite:///{db}"], 2, "studies there: crafted"),
            (["--study", "crafted", "--storage", f"sqlite:///{db}", "--out", "afile"], 2, "cannot write the report"),
            ([], 2, "--study")):
        with pytest.raises(SystemExit) as exit:
            run_command("report", args)
        out, err = capsys.readouterr()
        assert exit.value.code == status, err
        if status:
            assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
            assert err.startswith("nas report: error:")
        else:
            assert out.strip() == message and Path(message).is_file()


def test_search_writes_the_report_unless_told_not_to(searched, cli):
    report = searched / "studies" / SHARED_STUDY / "report.html"
    assert report.is_file() and f"Search report: {SHARED_STUDY}" in report.read_text()
    before = report.read_bytes()
    # the same settings (continued), one more trial; the finalists are not what this is about
    again = cli("search", *SHARED_SEARCH, "--trials", "1", "--finalists", "0", "--no-report", cwd=searched)
    assert again.returncode == 0, again.stderr
    assert "report:" not in again.stdout and report.read_bytes() == before


# ---------------------------------------------------------------- in a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Records what the console would show as errors into an attribute of <html>, which --dump-dom prints.
RECORDER = """<script>(function () {
  var errors = [], root = document.documentElement;
  function keep(text) { errors.push(String(text)); root.setAttribute("data-console-errors", JSON.stringify(errors)); }
  root.setAttribute("data-console-errors", "[]");
  var error = console.error;
  console.error = function () { keep(Array.prototype.join.call(arguments, " ")); error.apply(console, arguments); };
  window.addEventListener("error", function (e) { keep("uncaught: " + (e.message || e.target && e.target.src)); }, true);
  window.addEventListener("unhandledrejection", function (e) { keep("unhandled rejection: " + e.reason); });
})();</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run should have installed it")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _run_chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)  # fresh, never the user's
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=180)


class _Figures(HTMLParser):
    """For each plotly div of a rendered page: does it hold an SVG, and a drawn trace?"""

    def __init__(self):
        super().__init__()
        self.found: dict[str, set[str]] = {}
        self._open: list[tuple[str, int]] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            self._depth += 1
            if "plotly-graph-div" in (a.get("class") or "").split():
                self._open.append((a["id"], self._depth))
                self.found[a["id"]] = set()
        for fig, _ in self._open:
            if tag == "svg":
                self.found[fig].add("svg")
            if tag == "g" and (a.get("class") or "").startswith("trace"):
                self.found[fig].add("trace")

    def handle_endtag(self, tag):
        if tag == "div":
            if self._open and self._open[-1][1] == self._depth:
                self._open.pop()
            self._depth -= 1


@pytest.mark.slow  # headless Chromium, twice per page
@pytest.mark.parametrize("source", ["crafted", "searched"])
def test_report_renders_in_headless_chromium(source, crafted, searched, tmp_path):
    if source == "crafted":
        report = write_report(crafted, tmp_path)
    else:
        report = searched / "studies" / SHARED_STUDY / "report.html"
    page = report.read_text()
    expected = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)
    assert len(expected) == (11 if source == "crafted" else 10)  # the searched study is too small for cheap rungs
    assert (report.parent / "plotly.min.js").is_file()  # the page loads it from beside itself, from disk
    probe = report.parent / "probe.html"  # the same page with the error recorder first in <head>, beside it too
    probe.write_text(page.replace("<head>", "<head>" + RECORDER, 1))

    shown = _run_chromium(probe, tmp_path, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
                          "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    recorded = re.search(r'data-console-errors="([^"]*)"', shown.stdout)
    assert recorded, "the error recorder did not run"
    assert json.loads(recorded.group(1).replace("&quot;", '"')) == []
    console = [line for line in shown.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if re.search(r"error|uncaught|failed to load", line, re.I)], console
    figures = _Figures()
    figures.feed(shown.stdout)
    assert sorted(figures.found) == sorted(expected)
    assert all(figures.found[fig] == {"svg", "trace"} for fig in expected), figures.found

    shot = tmp_path / f"report-{source}.png"
    taken = _run_chromium(report, tmp_path, "--virtual-time-budget=20000", "--window-size=1280,6400",
                          f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
