import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT, run_cli
from nas.cost import count_macs, count_params
from nas.model import build
from nas.cli import run_main
from nas.report import build_report, outcome, pareto_front, sections, tradeoff_figure, write_report
from nas.report import main as report_main
from nas.space import load_space

TINY = str(ROOT / "search_spaces" / "mnist_tiny.yaml")
BUDGET = 1500
# what each under-budget candidate of the crafted study becomes, in order (the running one last)
PLAN = ["complete", "pruned", "complete", "diverged", "complete", "pruned", "failed", "complete", "running"]


def craft_study(url: str, name: str = "crafted") -> optuna.Study:
    """A study as nas.search leaves it, with every outcome: real specs and fvcore counts from the
    tiny space, made-up accuracies (training is not what these tests are about)."""
    space = load_space(TINY)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for key, value in (("budget", BUDGET), ("space", space.name), ("space_file", TINY), ("epochs", 3)):
        study.set_user_attr(key, value)
    plan = list(PLAN)
    while plan:
        assert len(study.trials) < 60, "the tiny space should give enough candidates under the budget"
        trial = study.ask()
        spec = space.sample(trial)
        module = build(spec)
        params = count_params(module)
        for key, value in (("spec", spec.to_dict()), ("code", spec.code), ("params", params),
                           ("macs", count_macs(module))):
            trial.set_user_attr(key, value)
        trial.set_constraint("params", params - BUDGET + 1)
        if params >= BUDGET:
            trial.set_user_attr("outcome", "rejected")
            study.tell(trial, state=TrialState.PRUNED)
            continue
        kind = plan.pop(0)
        final = 97.0 + (params % 200) / 100  # 97-99 %
        epochs = {"complete": 3, "pruned": 2, "diverged": 1, "failed": 0, "running": 1}[kind]
        for epoch in range(1, epochs + 1):
            trial.report(final - 2.5 * (3 - epoch), epoch)
        trial.set_user_attr("epoch_seconds", [0.5] * epochs)
        trial.set_user_attr("outcome", "running" if kind == "failed" else kind)  # a crash leaves 'running'
        if kind == "complete":
            study.tell(trial, final)
        elif kind in ("pruned", "diverged"):
            study.tell(trial, state=TrialState.PRUNED)
        elif kind == "failed":
            study.tell(trial, state=TrialState.FAIL)
    return study


@pytest.fixture(scope="module")
def crafted_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("crafted") / "crafted.db"
    craft_study(f"sqlite:///{db}")
    return db


@pytest.fixture
def crafted(crafted_db) -> optuna.Study:
    return optuna.load_study(study_name="crafted", storage=f"sqlite:///{crafted_db}")


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A real, small search: the report nas.search writes at its end."""
    root = tmp_path_factory.mktemp("searched")
    result = run_cli("nas.search", "--budget", str(BUDGET), "--space", TINY, "--subset", "128", "--epochs", "2",
                     "--trials", "6", "--seed", "0", "-q", "--device", "cpu", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the report adds nothing to a quiet run's stderr
    assert "report: studies/mnist-tiny-b1500/report.html" in result.stdout
    return root


def _kinds(study):
    return {t.number: outcome(t) for t in study.trials}


def test_crafted_study_has_every_outcome(crafted):
    counts = {k: list(_kinds(crafted).values()).count(k) for k in PLAN + ["rejected"]}
    assert counts["complete"] == 4 and counts["pruned"] == 2 and counts["diverged"] == 1
    assert counts["failed"] == 1 and counts["running"] == 1 and counts["rejected"] >= 2


def test_pareto_front():
    points = [(100, 95.0, 0), (200, 97.0, 1), (150, 94.0, 2), (300, 96.0, 3), (400, 99.0, 4), (400, 98.0, 5)]
    assert [p[2] for p in pareto_front(points)] == [0, 1, 4]
    assert pareto_front([]) == []


def test_tradeoff_figure_draws_every_candidate_in_its_place(crafted):
    trials = crafted.trials
    kinds = _kinds(crafted)
    fig = tradeoff_figure(trials, "params", "parameters", BUDGET)
    by_name = {t.name: t for t in fig.data}

    def numbers(trace):
        return sorted(c[-1] if isinstance(c, (list, tuple)) else c for c in trace.customdata)

    def of(kind):
        return sorted(n for n, k in kinds.items() if k == kind)

    assert numbers(by_name["complete (final-epoch accuracy)"]) == of("complete")
    assert numbers(by_name["pruned (accuracy when stopped — not final)"]) == of("pruned")
    assert numbers(by_name["running (latest epoch — not final)"]) == of("running")
    # no accuracy: rejected, diverged and failed sit in the lane below, at their measured size
    lane = by_name["rejected: ≥ budget, never trained"]
    assert numbers(lane) == of("rejected") and lane.yaxis == "y2"
    assert all(x >= BUDGET for x in lane.x)
    assert numbers(by_name["diverged"]) == of("diverged") and numbers(by_name["failed"]) == of("failed")
    # the front holds complete trials only, and none of them beats a front point
    front = by_name["Pareto front (complete trials)"]
    complete = [t for t in trials if kinds[t.number] == "complete"]
    assert {c[1] for c in front.customdata} <= set(of("complete"))
    for x, (acc, _) in zip(front.x, front.customdata):
        assert not any(t.user_attrs["params"] <= x and t.value > acc for t in complete)
    # the budget: one dashed line through both rows
    assert [s.x0 for s in fig.layout.shapes] == [BUDGET, BUDGET]
    # accuracy axis: log of the error, better is up, ticks are accuracies
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]
    assert all(float(t) > 0 for t in fig.layout.yaxis.ticktext) and len(fig.layout.yaxis.ticktext) >= 3


def test_optuna_figures_do_not_mistake_rejections_for_pruned_trials(crafted):
    trials = crafted.trials
    kinds = _kinds(crafted)
    figures = {s.title: s for s in sections(crafted, trials)}
    assert all(s.figure is not None for s in figures.values()), {k: s.note for k, s in figures.items()}
    timeline = {t.name: t for t in figures["Timeline"].figure.data}
    assert sorted(timeline["rejected (over budget, not trained)"].y) == sorted(
        n for n, k in kinds.items() if k == "rejected")
    assert sorted(timeline["pruned"].y) == sorted(n for n, k in kinds.items() if k == "pruned")
    assert set(timeline) >= {"complete", "diverged", "failed", "running"}
    best = next(t for t in figures["Optimization history"].figure.data if t.name == "best so far")
    assert not {n for n, k in kinds.items() if k == "rejected"} & set(best.x)
    curves = figures["Learning curves"].figure.data
    assert sorted(t.meta for t in curves) == sorted(t.number for t in trials if t.intermediate_values)
    assert {t.name for t in curves} == {"complete", "pruned", "diverged", "running"}


def test_report_page_is_one_self_contained_file(crafted, tmp_path):
    path = write_report(crafted, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html" and not list(path.parent.glob(".report-*"))
    page = path.read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert not any("src" in attrs for attrs, _ in scripts) and "<link" not in page  # nothing to fetch
    assert len([body for _, body in scripts if len(body) > 1_000_000]) == 1  # plotly.js, embedded once
    assert page.count('class="plotly-graph-div"') == 8 and "not drawn" not in page
    counts = _kinds(crafted)
    n = {k: list(counts.values()).count(k) for k in ("complete", "pruned", "rejected")}
    assert (f"{n['complete']} complete, {n['pruned']} pruned, {n['rejected']} rejected, 1 diverged, 1 failed, "
            "1 running") in page
    best = max((t for t in crafted.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"#{best.number}: {best.value:.2f} % validation accuracy" in page
    for t in crafted.trials:  # the top table: every complete trial's code, HTML-escaped
        if t.state == TrialState.COMPLETE:
            assert f"<code>{t.user_attrs['code']}</code>" in page


@pytest.mark.parametrize("kinds, says", [
    ([], "This study has no trials yet."),
    (["rejected", "rejected"], "No trial has completed yet (2 rejected by the budget gate)"),
    (["rejected", "pruned"], "No trial has completed yet (1 rejected by the budget gate)"),
    (["complete"], "needs at least 2 completed trials"),
])
def test_young_studies_give_a_page_that_says_so(kinds, says):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("budget", BUDGET)
    for i, kind in enumerate(kinds):
        trial = study.ask({"width": optuna.distributions.IntDistribution(2, 12)})
        trial.set_user_attr("params", 1000 + 500 * i)
        trial.set_user_attr("macs", 10_000)
        trial.set_user_attr("code", f"c{i}")
        trial.set_user_attr("outcome", kind)
        if kind == "complete":
            trial.report(90.0, 1)
            study.tell(trial, 98.5)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    page = build_report(study)
    assert says in page
    assert "not drawn" not in page  # every missing figure is explained, none failed


def test_cli_writes_the_report_and_refuses_bad_input(crafted_db, tmp_path, monkeypatch, capsys):
    db = tmp_path / "copy.db"
    shutil.copy(crafted_db, db)
    ok = run_cli("nas.report", "--study", "crafted", "--storage", f"sqlite:///{db}", "--out", "here", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "here/report.html" and (tmp_path / "here" / "report.html").is_file()

    monkeypatch.chdir(tmp_path)  # the rest in-process: the same run_main, without a torch import each
    (tmp_path / "afile").write_text("x")
    for args, status, message in (
            (["--study", "crafted", "--storage", f"sqlite:///{db}"], 0, "studies/crafted/report.html"),
            (["--study", "nope"], 2, "no study 'nope'"),
            (["--study", "nope", "--storage", f"sqlite:///{db}"], 2, "studies there: crafted"),
            (["--study", "crafted", "--storage", f"sqlite:///{db}", "--out", "afile"], 2, "cannot write the report"),
            ([], 2, "--study")):
        with pytest.raises(SystemExit) as exit:
            run_main("nas.report", report_main, args)
        out, err = capsys.readouterr()
        assert exit.value.code == status, err
        if status:
            assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
        else:
            assert out.strip() == message and Path(message).is_file()


def test_search_writes_the_report_unless_told_not_to(searched):
    report = searched / "studies" / "mnist-tiny-b1500" / "report.html"
    assert report.is_file() and "Search report: mnist-tiny-b1500" in report.read_text()
    before = report.read_bytes()
    again = run_cli("nas.search", "--budget", str(BUDGET), "--space", TINY, "--subset", "64", "--epochs", "1",
                    "--trials", "1", "-q", "--device", "cpu", "--no-report", cwd=searched)
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


@pytest.mark.parametrize("source", ["crafted", "searched"])
def test_report_renders_in_headless_chromium(source, crafted, searched, tmp_path):
    if source == "crafted":
        report = write_report(crafted, tmp_path)
    else:
        report = searched / "studies" / "mnist-tiny-b1500" / "report.html"
    page = report.read_text()
    expected = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)
    assert len(expected) == 8
    probe = tmp_path / "probe.html"  # the same page with the error recorder first in <head>
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
