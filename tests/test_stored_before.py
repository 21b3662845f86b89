"""What was stored before the package was laid out anew (nas/store, nas/search, ...) still loads.

tests/stored_before/ holds files written by commit 248a2cf, the last one with the flat layout: a
SQLite study (4 trials of the tiny space, one process), a journal-file study (3 trials, two worker
processes) and a retrain checkpoint of the first study's winner.
"""

import shutil
from pathlib import Path

import torch

from nas.checkpoint import load_checkpoint
from nas.search.summary import summary
from nas.store.record import Outcome, read_settings, read_trials
from nas.store.storage import load_study
from nas.store.winner import select_winner

STORED = Path(__file__).resolve().parent / "stored_before"
TINY_RUN = ["--budget", "3000", "--space", "mnist_tiny", "--epochs", "1", "--subset", "256", "--rungs", "none",
            "--finalists", "0", "--no-report", "--no-warm-start", "-q"]


def test_both_stored_studies_read_as_before(tmp_path):
    shutil.copy(STORED / "before-split.db", tmp_path)
    shutil.copy(STORED / "before-split-journal.journal", tmp_path)
    for name, trials in (("before-split", 4), ("before-split-journal", 3)):
        study = load_study(name, None, tmp_path)
        records = read_trials(study)
        assert len(records) == trials and all(r.outcome == Outcome.COMPLETE for r in records)
        assert all(r.spec and r.params and r.macs and r.fidelity for r in records)
        winner, reevaluation = select_winner(study)
        assert winner.value == max(r.value for r in records) and reevaluation is None
        assert f"study {name}: {trials} trials" in summary(study)
        assert read_settings(study)["budget"] == 3000


def test_a_stored_study_is_continued_with_the_same_command(tmp_path, cli):
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(STORED / "before-split.db", studies)
    result = cli("search", *TINY_RUN, "--study", "before-split", "--trials", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = load_study("before-split", None, studies)
    assert len(study.trials) == 5 and read_trials(study)[-1].spec is not None


def test_a_stored_checkpoint_loads_and_evaluates(tmp_path, cli):
    checkpoint = tmp_path / "seed0.pt"
    shutil.copy(STORED / "seed0.pt", checkpoint)
    stored, spec, model = load_checkpoint(checkpoint)
    assert stored["code"] and spec.arch.in_channels == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    result = cli("evaluate", str(checkpoint), "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout.lower()
