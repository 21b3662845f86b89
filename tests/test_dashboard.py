"""optuna-dashboard (the `dashboard` extra) serves a study of ours: started on a loopback port,
asked over its HTTP API, stopped."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.fidelity import Fidelity
from nas.store.record import RungScore, record_rungs, rung_attr

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                                 reason='optuna-dashboard is not installed: pip install -e ".[dashboard]"'),
              pytest.mark.slow]  # a server process

START_TIMEOUT_S = 60


def _small_study(db: Path) -> optuna.Study:
    """Four trials as nas.search records them: two trained, one rejected by the budget gate, one screened
    out at a cheap rung."""
    study = optuna.create_study(study_name="mnist-tiny-b1500", storage=f"sqlite:///{db}", direction="maximize")
    study.set_user_attr("budget", 1500)
    width = {"width": optuna.distributions.IntDistribution(2, 12, step=2)}
    for value, params, kind in ((97.5, 900, "complete"), (98.25, 1200, "complete"), (None, 2400, "rejected")):
        trial = study.ask(width)
        trial.set_user_attr("params", params)
        trial.set_user_attr("outcome", kind)
        if value is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.report(value - 1.0, 1)
            study.tell(trial, value)
    trial = study.ask(width)
    trial.report(45.0, 0)  # the cheap rung's score, at its step, as the pruner reads it
    record_rungs(trial, [RungScore(Fidelity(1, 1000), 45.0, 0.5)])
    trial.set_user_attr("outcome", "screened")
    study.tell(trial, state=TrialState.PRUNED)
    return study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(url, timeout=10) as response:
        return json.load(response)


def _dashboard_command() -> str:
    here = str(Path(sys.executable).parent)  # the venv's scripts, even when it is not activated
    found = shutil.which("optuna-dashboard", path=here + os.pathsep + os.environ.get("PATH", ""))
    assert found, "the optuna_dashboard package is installed but its optuna-dashboard command is not"
    return found


def test_dashboard_serves_the_study(tmp_path):
    db = tmp_path / "mnist-tiny-b1500.db"
    study = _small_study(db)
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    server = subprocess.Popen([_dashboard_command(), f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port),
                               "--server", "wsgiref"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"optuna-dashboard exited: {(tmp_path / 'dashboard.log').read_text()}"
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"optuna-dashboard did not answer within {START_TIMEOUT_S} s"
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["mnist-tiny-b1500"]
        summary = studies[0]
        assert summary["directions"] == ["maximize"]
        assert {"key": "budget", "value": "1500"} in summary["user_attrs"]

        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        assert detail["name"] == "mnist-tiny-b1500"
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete", "Pruned", "Pruned"]
        assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number] == [1]
        rejected = detail["trials"][2]
        assert {"key": "outcome", "value": "rejected"} in rejected["user_attrs"]
        # the history plot's targets: the objective and the numeric user attributes, among them the first
        # rung's score. Optuna gives a pruned trial its last reported score as its value: a screened trial
        # sits at its rung's score among final accuracies unless 'Include PRUNED trials' is unticked (guide)
        assert {"key": rung_attr(1), "sortable": True} in detail["union_user_attrs"]
        screened = detail["trials"][3]
        assert screened["values"] == [45.0] and {"key": rung_attr(1), "value": "45.0"} in screened["user_attrs"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
