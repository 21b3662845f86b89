"""What the report adds beyond the figures: the finalists' table, their trainings on the timeline, the
next command at the top, and the trials as CSV (nas report --csv) with the Python reader users are told of."""

import csv
import datetime
import html
import io
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest

import nas
from conftest import SHARED_STUDY
from nas.report.command import Trials, build_report, finalists_html, sections
from nas.report.figures import timeline_figure
from nas.report.trials_csv import FIELDS, csv_text
from nas.cost import spec_costs
from nas.spec import Spec
from nas.store.record import (Outcome, StudySettings, read_finalist_runs, read_reevaluations, read_settings,
                              read_trials, record_reevaluation, write_settings)
from nas.store.winner import best_record, finalists, select_winner, winner_lead


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
    lead = winner_lead(study)  # below the table: whether the winner's lead is more than the seeds' noise
    assert lead.runner_up == sorted(top, key=lambda r: -again[r.number].mean)[1].number
    assert html.escape(lead.sentence()) in page[page.index('<table class="finalists">'):]
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


# ------------------------------------------------------------------ the study's data and the winner's costs


def _summary(page: str) -> dict[str, str]:
    """The summary table's rows, heading -> text (tags dropped)."""
    table = page[page.index('<table class="summary">'):]
    table = table[:table.index("</table>")]
    return {html.unescape(re.sub("<[^>]+>", "", th)): html.unescape(re.sub("<[^>]+>", "", td))
            for th, td in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table)}


def test_the_summary_shows_the_data_and_the_winners_four_costs(searched):
    study = _study(searched)
    best = json.loads((searched / "studies" / SHARED_STUDY / "best.json").read_text())
    assert best["data"] == {"name": "mnist"}  # the data it was found on, and how its images were prepared
    assert best["preprocessing"] == {"mean": 0.1307, "std": 0.3081, "input_size": 28, "channels": 1,
                                     "transform": "pixels/255, then (x - mean) / std", "class_labels": list(range(10))}
    rows = _summary((searched / "studies" / SHARED_STUDY / "report.html").read_text())
    assert rows["data"] == "mnist"
    assert rows["images"] == ("1 x 28 x 28, 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9); normalised by mean 0.1307 / "
                              "std 0.3081")
    costs = (f"{best['params']:,} parameters, {best['macs']:,} MACs, {best['ram_int8']:,} B peak RAM and "
             f"{best['flash_int8']:,} B flash at int8")
    assert rows["winner"].startswith(f"#{best['trial']}: ") and f"; {costs} — {best['code']}" in rows["winner"]
    # the finalists' table: every finalist's four costs, the winner's those of best.json
    table = finalists_html(Trials.read(study), read_settings(study), select_winner(study))
    winner_row = table[table.index('<tr class="winner">'):]
    assert winner_row.startswith(f'<tr class="winner"><td>{best["trial"]}</td><td>{best["params"]:,}</td>'
                                 f'<td>{best["macs"]:,}</td><td>{best["ram_int8"]:,}</td><td>{best["flash_int8"]:,}</td>')


def test_a_study_made_before_its_data_was_recorded_says_mnist(crafted):
    rows = _summary(build_report(crafted))
    assert rows["data"] == "mnist (assumed: a study made before the data was recorded ran on MNIST)"
    assert rows["images"].startswith("1 x 28 x 28, 10 classes") and "mean 0.1307 / std 0.3081" in rows["images"]
    record = max((r for r in read_trials(crafted) if r.outcome == Outcome.COMPLETE), key=lambda r: r.value)
    cost = spec_costs(Spec.from_dict(record.spec))  # not recorded by the crafted study: computed from the spec
    assert rows["best trial"].startswith(f"#{record.number}: {record.value:.2f} % validation accuracy, "
                                         f"{record.params:,} parameters, {record.macs:,} MACs, {cost.ram_int8:,} B "
                                         f"peak RAM and {cost.flash_int8:,} B flash at int8 — ")
    best = best_record(record, crafted)
    assert best["data"] == {"name": "mnist"} and best["preprocessing"]["mean"] == 0.1307


def test_a_study_on_a_folder_shows_its_identity_and_preprocessing(tmp_path):
    study = optuna.create_study(study_name="flowers", storage=f"sqlite:///{tmp_path}/flowers.db")
    identity = {"name": "flowers", "kind": "folder", "images_per_class": {"daisy": 38, "rose": 41},
                "hash": "0123456789abcdef"}
    preprocessing = {"mean": [0.48, 0.41, 0.3], "std": [0.29, 0.26, 0.28], "input_size": 32, "channels": 3,
                     "transform": "pixels/255, then (x - mean) / std", "resize": "resized to 32x32 (bilinear)",
                     "class_labels": ["daisy", "rose"]}
    write_settings(study, StudySettings(budget=50_000, space="colour32", space_file="bundled:colour32", epochs=15,
                                        data=identity, preprocessing=preprocessing))
    rows = _summary(build_report(study))
    assert rows["data"] == ("flowers (folder, 2 classes, 79 images, 0123456789abcdef); 38 to 41 images per class")
    assert rows["images"] == ("3 x 32 x 32, 2 classes (daisy, rose); normalised by mean 0.48, 0.41, 0.3 / std "
                              "0.29, 0.26, 0.28; resized to 32x32 (bilinear)")
