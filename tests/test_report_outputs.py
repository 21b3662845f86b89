"""What the report adds beyond the figures: the finalists' table, their trainings on the timeline, the
next command at the top, and the trials as CSV (nas report --csv) with the Python reader users are told of."""

import csv
import datetime
import io
import json
import shutil
from pathlib import Path

import optuna
import pytest

import nas
from conftest import SHARED_STUDY
from nas.report.command import Trials, build_report, finalists_html, sections
from nas.report.figures import timeline_figure
from nas.report.trials_csv import FIELDS, csv_text
from nas.spec import Spec
from nas.store.record import (Outcome, read_finalist_runs, read_reevaluations, read_settings, read_trials,
                              record_reevaluation)
from nas.store.winner import finalists, select_winner


@pytest.fixture(scope="module")
def searched(shared_copy) -> Path:
    """The shared study (a real search with 3 finalists x 3 seeds), as the search left its folder."""
    return shared_copy


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=SHARED_STUDY, storage=f"sqlite:///{folder}/studies/{SHARED_STUDY}.db")


def test_the_finalists_table_shows_every_seed_and_marks_the_winner(searched):
    study = _study(searched)
    settings, again = read_settings(study), read_reevaluations(study)
    top = finalists(read_trials(study), settings["finalists"])
    assert len(top) == 3 and all(len(again[r.number].val_accs) == settings["finalist_seeds"] for r in top)
    page = (searched / "studies" / SHARED_STUDY / "report.html").read_text()  # as the search wrote it
    table = page[page.index('<table class="finalists">'):]
    table = table[:table.index("</table>")]
    rows = table.split("<tr")[2:]
    assert [int(row.split("<td>")[1].split("<")[0]) for row in rows] == [r.number for r in top]
    winner, _ = select_winner(study)
    for r, row in zip(top, rows):
        runs = again[r.number]
        for seed, acc in runs.val_accs.items():
            assert f'<td title="seed {seed}">{acc:.2f}</td>' in row
        assert f"<td>{runs.mean:.2f} ± {runs.std:.2f}</td><td>{min(runs.val_accs.values()):.2f}</td>" in row
        assert (row.startswith(' class="winner"') and "<td>winner</td>" in row) == (r.number == winner.number)
    assert json.loads((searched / "studies" / SHARED_STUDY / "best.json").read_text())["trial"] == winner.number


def test_the_timeline_shows_each_finalist_training_in_its_trials_row(searched):
    study = _study(searched)
    runs = read_finalist_runs(study)
    again = read_reevaluations(study)
    assert sorted((r.trial, r.seed) for r in runs) == sorted((t, s) for t, a in again.items() for s in a.val_accs)
    records = read_trials(study)
    last_trial_end = max(r.finished for r in records)
    assert all(r.started >= last_trial_end - datetime.timedelta(seconds=1) and r.seconds > 0 for r in runs)
    figure = timeline_figure(records, datetime.datetime.now(), runs)
    bars = next(t for t in figure.data if t.name == "finalist (new seed)")
    assert len(bars.y) == len(runs)
    for run, y, text in zip(runs, bars.y, bars.text):  # inside the trial's row, one lane per seed
        assert run.trial - 0.4 < y < run.trial + 0.4 and f"new seed {run.seed}" in text
    assert len(set(zip(bars.y, bars.base))) == len(runs)  # no two drawn on one another
    timeline = {s.title: s for s in sections(Trials.read(study), 10_000, datetime.datetime.now())}["Timeline"]
    assert "finalist (new seed)" in [t.name for t in timeline.figure.data]


def test_a_study_without_finalist_times_still_gets_its_table(crafted_db, tmp_path):
    """Studies made before the trainings' times were stored: the table, no bars; a selection under way: a note."""
    db = tmp_path / "copy.db"
    shutil.copy(crafted_db, db)
    study = optuna.load_study(study_name="crafted", storage=f"sqlite:///{db}")
    study.set_user_attr("finalists", 2)
    study.set_user_attr("finalist_seeds", 2)
    top = finalists(read_trials(study), 2)
    record_reevaluation(study, top[0].number, 11, 97.5)  # the old form: no run
    trials = Trials.read(study)
    assert trials.finalist_runs == []
    assert "finalist (new seed)" not in [t.name for t in timeline_figure(trials.records, datetime.datetime.now()).data]
    table = finalists_html(trials, read_settings(study), select_winner(study))
    assert '<td title="seed 11">97.50</td><td>-</td>' in table and "1 of 4 finalist trainings done" in table
    assert 'class="winner"' not in table
    page = build_report(study)
    assert "<h2>Finalists</h2>" in page and "next: nas export --study crafted" in page  # no best.json there


def test_the_report_and_the_search_say_the_same_next_command(searched, shared_study):
    assert f"next: nas retrain studies/{SHARED_STUDY}/best.json\n" in shared_study.search.stdout
    page = (searched / "studies" / SHARED_STUDY / "report.html").read_text()  # written where the search ran
    assert page.index('<pre class="next">') < page.index('<table class="summary">')  # at the top
    best = shared_study.root / "studies" / SHARED_STUDY / "best.json"
    assert f"next: nas retrain {best.resolve()}\n" in page  # absolute: the page is opened from anywhere


def _cell(text: str):
    """A CSV cell back as a value: JSON where it parses (numbers, lists, true/false), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@pytest.mark.parametrize("source", ["searched", "crafted"])
def test_the_csv_round_trips_the_records(source, searched, crafted):
    study = _study(searched) if source == "searched" else crafted
    records, again = read_trials(study), read_reevaluations(study)
    rows = list(csv.DictReader(io.StringIO(csv_text(records, again))))
    assert len(rows) == len(records) and list(rows[0])[:len(FIELDS)] == list(FIELDS)
    assert {r.outcome for r in records} <= {Outcome(row["outcome"]) for row in rows}
    for r, row in zip(records, rows):
        assert int(row["number"]) == r.number and row["outcome"] == r.outcome.value
        assert (float(row["val_acc"]) if row["val_acc"] else None) == r.value
        assert (int(row["params"]) if row["params"] else None) == r.params
        assert (int(row["macs"]) if row["macs"] else None) == r.macs and row["code"] == (r.code or "")
        assert (int(row["flash_int8"]) if row["flash_int8"] else None) == r.flash_int8
        assert (int(row["ram_int8"]) if row["ram_int8"] else None) == r.ram_int8
        if r.fidelity:
            assert (int(row["epochs"]), int(row["train_images"])) == (r.fidelity.epochs, r.fidelity.train_images)
        if r.curve:
            assert float(row["last_val_acc"]) == r.curve[max(r.curve)] and int(row["last_epoch"]) == max(r.curve)
        assert row["started"] == (r.started.isoformat(sep=" ", timespec="seconds") if r.started else "")
        assert row["finished"] == (r.finished.isoformat(sep=" ", timespec="seconds") if r.finished else "")
        assert row["host"] == (r.worker.host if r.worker else "")
        spec = Spec.from_dict(r.spec).to_dict() if r.spec else {"arch": {}, "train": {}}
        flat = json.loads(json.dumps({f"{part}.{k}": v for part in ("arch", "train") for k, v in spec[part].items()}))
        assert {k: _cell(v) for k, v in row.items() if k.startswith(("arch.", "train.")) and v} == flat
        if r.number in again:
            assert float(row["finalist_mean"]) == pytest.approx(again[r.number].mean, abs=1e-4)
            assert int(row["finalist_seeds"]) == len(again[r.number].val_accs)
        else:
            assert row["finalist_mean"] == ""
        if source == "searched":
            assert row["host"] and float(row["seconds"]) > 0


def test_nas_read_trials_opens_a_study_by_name(searched, monkeypatch):
    expected = read_trials(_study(searched))
    assert nas.read_trials(SHARED_STUDY, studies_dir=searched / "studies") == expected
    assert nas.read_trials(SHARED_STUDY, storage=f"sqlite:///{searched}/studies/{SHARED_STUDY}.db") == expected
    monkeypatch.chdir(searched)
    monkeypatch.delenv("NAS_STUDIES_DIR", raising=False)
    assert nas.read_trials(SHARED_STUDY) == expected  # ./studies, as nas report reads it
    assert isinstance(expected[0], nas.TrialRecord) and expected[0].outcome == nas.Outcome.COMPLETE


def test_cli_writes_the_csv_beside_the_report_or_where_told(searched, cli, tmp_path):
    done = cli("report", "--study", SHARED_STUDY, "--csv", cwd=searched)
    assert done.returncode == 0, done.stderr
    table = Path("studies") / SHARED_STUDY / "trials.csv"
    assert done.stdout.splitlines() == [str(Path("studies") / SHARED_STUDY / "report.html"), str(table)]
    assert (searched / table).read_text() == csv_text(read_trials(_study(searched)),
                                                      read_reevaluations(_study(searched)))
    again = cli("report", "--study", SHARED_STUDY, "--csv", str(tmp_path / "mine.csv"), cwd=searched)
    assert again.returncode == 0 and (tmp_path / "mine.csv").read_text().startswith("number,outcome,")
    assert cli("report", "--study", SHARED_STUDY, "--csv", str(tmp_path / "mine.csv"), cwd=searched).returncode == 0
    for target, says in ((f"studies/{SHARED_STUDY}.db", "is an SQLite database"),
                         (f"studies/{SHARED_STUDY}/best.json", "is not a CSV file this command wrote"),
                         ("studies", "is a directory")):
        before = (searched / target).stat().st_mtime_ns
        bad = cli("report", "--study", SHARED_STUDY, "--csv", target, cwd=searched)
        assert bad.returncode == 2 and says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert (searched / target).stat().st_mtime_ns == before
