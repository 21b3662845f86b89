"""Bad input, everywhere: every command, given bad input, exits with status 2 and one line on stderr
(`nas <command>: error: ...`), no traceback, and leaves every stored file byte for byte as it was.

One real study and its winner's retrain output (the shared study, see conftest) are copied once; every case runs
in-process (the `cli` fixture) in that tree and then checks the whole tree: the SHA-256 of every
file, and the folders too (a failed command may not leave empty ones behind).
"""

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import optuna
import pytest
import torch

from conftest import DATA_DIR, SHARED_BUDGET, SHARED_STUDY, SHARED_TRIALS, TINY, one_line_error, tree_hashes
from nas.bundled import reference_files
from nas.checkpoint import save_checkpoint
from nas.model import build
from nas.fidelity import Fidelity
from nas.store.record import Outcome, read_trial, record_candidate, record_outcome
from nas.spec import Spec

FINAL = reference_files()[-1]  # the classic 7,416-parameter design
CHECKPOINT = "studies/keep/best_retrain/seed0.pt"
REJECTED_TRIAL = str(SHARED_TRIALS)  # added to the stored study by the fixture, after the search's trials
assert SHARED_STUDY == "keep"  # the cases name it


def _folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def _spec_with(section: str, key: str, value) -> dict:
    record = json.loads(FINAL.read_text())
    record["spec"][section][key] = value
    return record


@pytest.fixture(scope="module")
def stored(shared_copy):
    """A real study (`keep`), a real retrain output, and the bad files the cases point at.

    Returns (root, snapshot): the snapshot is every file's SHA-256 and every folder, taken once.
    """
    # the shared study: budget 10,000, above every model of the tiny space, so every trial trains and the
    # study has a best trial; its winner retrained into studies/keep/best_retrain/
    root = shared_copy
    assert (root / CHECKPOINT).is_file()

    # a candidate the budget gate rejected, recorded as the search records one
    study = optuna.load_study(study_name="keep", storage=f"sqlite:///{root}/studies/keep.db")
    trial = study.ask()
    spec = Spec.from_dict(json.loads(FINAL.read_text())["spec"])
    record_candidate(trial, spec, 7416, 1, Fidelity(1, 128))
    record_outcome(trial, Outcome.REJECTED)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert str(trial.number) == REJECTED_TRIAL and read_trial(study.trials[-1]).outcome == Outcome.REJECTED

    (root / "deep.yaml").write_text("[" * 100_000)
    (root / "deep.json").write_text("[" * 100_000)
    (root / "broken.yaml").write_text("arch: [1, 2\n")
    (root / "loop.yaml").write_text("extends: loop2.yaml\ntrain:\n  batch_size: 64\n")
    (root / "loop2.yaml").write_text("extends: loop.yaml\n")
    (root / "on-broken.yaml").write_text("extends: broken.yaml\n")
    (root / "afile.txt").write_text("precious\n")
    (root / "nomnist").mkdir()  # a data dir without MNIST
    torch.save({"model": torch.zeros(3)}, root / "foreign.pt")
    for name, key, value in (("rgb", "in_channels", 3), ("cifar100", "num_classes", 100), ("px32", "input_size", 32)):
        record = _spec_with("arch", key, value)
        (root / f"{name}.json").write_text(json.dumps(record))
        spec = Spec.from_dict(record["spec"])
        save_checkpoint(root / f"{name}.pt", spec, build(spec), {})  # builds and loads fine: only MNIST does not fit
    (root / "lr1000.json").write_text(json.dumps(_spec_with("train", "lr", 1000.0)))

    # hostile input: files that would hang a reader or exhaust memory if read or built
    spec = Spec.from_dict(json.loads(FINAL.read_text())["spec"])  # the classic design again (not px32's)
    os.mkfifo(root / "fifo.json")  # opening it for reading waits for a writer forever
    text = json.dumps(json.loads(FINAL.read_text()))
    (root / "big.json").write_text(text + " " * (2 * 2**20 - len(text)))  # a valid spec padded to 2 MiB
    (root / "big.yaml").write_text("name: big\n" + "#" * (2 * 2**20 - 11) + "\n")  # a YAML comment, 2 MiB
    (root / "digits.json").write_text(text.replace('"batch_size": 128', '"batch_size": 1' + "0" * 5000))
    (root / "digits.yaml").write_text("name: digits\narch:\n  width: 1" + "0" * 5000 + "\n")
    (root / "latin1.json").write_bytes(b'{"spec": "caf\xe9"}')
    # billion laughs: 9 levels of 9 aliases each, 9**10 strings once expanded, in 432 bytes
    levels = "abcdefghij"
    (root / "bomb.yaml").write_text("name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip(levels, levels[1:])))
    arch = {**json.loads(FINAL.read_text())["spec"]["arch"], "stages": [[1024] * 8] * 4, "padding": "same",
            "transition": "pool"}  # every width within range; 292,637,696 parameters
    (root / "huge.json").write_text(json.dumps({"spec": {**spec.to_dict(), "arch": arch}}))
    (root / "million.json").write_text(json.dumps(_spec_with("arch", "stages", [[1_000_000]])))
    model = build(spec)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")  # one weight of the first conv
    save_checkpoint(root / "nan.pt", spec, model, {})
    model = build(spec)
    model[1].running_var[0] = float("inf")  # a batch-norm statistic: a buffer, not a parameter
    save_checkpoint(root / "inf.pt", spec, model, {})
    for name, arch in (("huge", arch), ("overflow", {**spec.to_dict()["arch"], "in_channels": 10**30})):
        payload = torch.load(root / "nan.pt", weights_only=True)  # a real checkpoint, its spec swapped
        payload["spec"] = {**spec.to_dict(), "arch": arch}
        torch.save(payload, root / f"{name}.pt")
    return root, (tree_hashes(root), _folders(root))


class Deadline(BaseException):
    """A case that ran past its deadline (a BaseException: no `except Exception` in a command swallows it)."""


@contextlib.contextmanager
def deadline(seconds: float | None):
    """Raise Deadline in this (the main) thread after `seconds`: a command that opens a FIFO blocks in open(2),
    which SIGALRM interrupts, so a regression fails the case instead of hanging the suite."""
    if seconds is None:
        yield
        return

    def expire(signum, frame):
        raise Deadline(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def offline(monkeypatch):
    """MNIST's mirrors replaced by local addresses: one refuses connections, one accepts and never answers."""
    from torchvision.datasets import MNIST

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr("nas.data.download.DOWNLOAD_TIMEOUT", 1.0)
    mirrors = {"refused": [f"http://127.0.0.1:{refused}/"],
               "silent": [f"http://127.0.0.1:{silent.getsockname()[1]}/"]}

    def use(kind: str) -> None:
        monkeypatch.setattr(MNIST, "mirrors", mirrors[kind])
    yield use
    silent.close()


SEARCH = ["--space", TINY, "--trials", "1", "--epochs", "1", "--subset", "128", "--device", "cpu"]
KEEP = ["--budget", str(SHARED_BUDGET), "--study", "keep", *SEARCH]  # the stored study's own settings

CASES = [  # (id, command, arguments, what the one line must say)
    # ---- search
    ("search-seed-negative", "search", [*KEEP, "--seed", "-1"], "--seed -1 is out of range"),
    ("search-seed-2**32", "search", [*KEEP, "--seed", str(2**32)], f"--seed {2**32} is out of range"),
    ("search-seed-not-int", "search", [*KEEP, "--seed", "1.5"], "invalid int value"),
    ("search-seed-plus-trials-overflows", "search", [*KEEP, "--seed", "4294967290", "--trials", "50"],
     "passes 4294967295"),  # 50 new trials from that seed, before the stored study's own are counted
    ("search-budget-10**400", "search", ["--budget", "1" + "0" * 400, *SEARCH], "is out of range"),
    ("search-budget-below-smallest-model", "search", ["--budget", "10", *SEARCH],
     "below the smallest model space mnist_tiny can build"),
    ("search-max-ram-negative", "search", ["--budget", "3000", *SEARCH, "--max-ram", "-1"],
     "argument --max-ram: expected a positive size such as 20000, 20k, 1.5M, 64KB or 1MiB, got '-1'"),
    ("search-max-flash-unknown-unit", "search", ["--budget", "3000", *SEARCH, "--max-flash", "12XB"],
     "argument --max-flash: expected a positive size such as 20000, 20k, 1.5M, 64KB or 1MiB, got '12XB'"),
    ("search-max-macs-0", "search", ["--budget", "3000", *SEARCH, "--max-macs", "0"], "got '0'"),
    ("search-max-macs-fraction", "search", ["--budget", "3000", *SEARCH, "--max-macs", "1.0005k"],
     "not a whole number"),
    ("search-max-ram-below-smallest-model", "search", ["--budget", "3000", *SEARCH, "--max-ram", "1KB"],
     "--max-ram 1,000 is below the smallest model space mnist_tiny can build (2,136 bytes of peak RAM at int8)"),
    ("search-max-flash-below-smallest-model", "search", ["--budget", "3000", *SEARCH, "--max-flash", "100"],
     "--max-flash 100 is below the smallest model space mnist_tiny can build (126 bytes of flash at int8)"),
    ("search-max-macs-below-smallest-model", "search", ["--budget", "3000", *SEARCH, "--max-macs", "16k"],
     "--max-macs 16,000 is below the smallest model space mnist_tiny can build (16,244 MACs)"),
    ("search-max-ram-not-the-studys", "search", [*KEEP, "--max-ram", "1MiB"],
     "study 'keep' was run with --max-ram none, not 1,048,576"),
    ("search-space-nested-100000-deep", "search", ["--budget", "3000", *SEARCH, "--space", "deep.yaml"],
     "deep.yaml: not a readable YAML file (nested too deeply)"),
    ("search-space-malformed", "search", ["--budget", "3000", *SEARCH, "--space", "broken.yaml"],
     "broken.yaml: not a readable YAML file"),
    ("search-space-extends-a-loop", "search", ["--budget", "3000", *SEARCH, "--space", "loop.yaml"],
     "loop.yaml: extends: loop2.yaml: extends: loop.yaml: a loop (loop.yaml -> loop2.yaml -> loop.yaml)"),
    ("search-space-extends-a-broken-space", "search", ["--budget", "3000", *SEARCH, "--space", "on-broken.yaml"],
     "on-broken.yaml: extends: broken.yaml: not a readable YAML file"),
    ("search-space-missing", "search", ["--budget", "3000", *SEARCH, "--space", "nowhere.yaml"],
     "no such search-space file"),
    ("search-download-no-network", "search", ["--budget", "3000", *SEARCH, "--data-dir", "nomnist", "--download"],
     "Connection refused); by hand, put train-images-idx3-ubyte, "
     "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (unzipped) in nomnist/MNIST/raw/"),
    ("search-download-silent-network", "search",
     ["--budget", "3000", *SEARCH, "--data-dir", "nomnist", "--download"],
     "cannot download MNIST (timed out); by hand, put train-images-idx3-ubyte"),
    ("search-data-dir-without-mnist", "search", ["--budget", "3000", *SEARCH, "--data-dir", "nomnist"],
     "is missing; pass --download"),
    ("search-data-dir-is-mnist-raw", "search",
     ["--budget", "3000", *SEARCH, "--data-dir", str(DATA_DIR / "MNIST" / "raw")],
     f"MNIST/raw/MNIST/raw/train-images-idx3-ubyte is missing; did you mean --data-dir {DATA_DIR}?"),
    ("search-study-escapes", "search", ["--budget", "3000", *SEARCH, "--study", "../escape"], "bad study name '../escape'"),
    ("search-studies-dir-is-a-file", "search", ["--budget", "3000", *SEARCH, "--studies-dir", "afile.txt"],
     "afile.txt is not a writable directory"),
    ("search-epochs-0", "search", ["--budget", "3000", *SEARCH, "--epochs", "0"], "--epochs: expected a positive integer"),
    ("search-trials-negative", "search", ["--budget", "3000", *SEARCH, "--trials", "-1"],
     "--trials: expected an integer >= 0"),
    ("search-timeout-nan", "search", ["--budget", "3000", *SEARCH, "--timeout", "nan"],
     "--timeout: expected a positive number"),
    ("search-jobs-0", "search", ["--budget", "3000", *SEARCH, "--jobs", "0"], "--jobs: expected a positive integer"),
    ("search-storage-bad-url", "search", ["--budget", "3000", *SEARCH, "--storage", "notaurl"], "bad storage URL notaurl"),
    ("search-storage-no-dir", "search", ["--budget", "3000", *SEARCH, "--storage", "sqlite:///no/such/dir/x.db"],
     "directory no/such/dir does not exist"),
    ("search-rung-not-a-rung", "search", ["--budget", "3000", *SEARCH, "--rungs", "2x"],
     "rung '2x': expected EPOCHSxIMAGES"),
    ("search-rung-above-full", "search", ["--budget", "3000", *SEARCH, "--rungs", "2x64"],
     "rung 2x64 is above the full fidelity 1x128"),
    ("search-rungs-not-cheaper", "search", ["--budget", "3000", *SEARCH, "--epochs", "2", "--rungs", "1x100", "1x50"],
     "rungs must cost more at each step"),
    ("search-rungs-differ-from-the-study", "search", [*KEEP, "--rungs", "1x64"],
     "was run with --rungs none, not 1x64"),
    ("search-rungs-in-pages", "search", ["--budget", "3000", *SEARCH, "--rungs-in", "pages"],
     "argument --rungs-in: invalid choice: 'pages'"),
    ("search-sampler-gp", "search", ["--budget", "3000", *SEARCH, "--sampler", "gp"],
     "argument --sampler: invalid choice: 'gp'"),
    ("search-startup-random", "search", ["--budget", "3000", *SEARCH, "--sampler", "random", "--startup-trials", "5"],
     "--startup-trials is TPE's: --sampler random has no model to start"),
    ("search-eta-1", "search", ["--budget", "3000", *SEARCH, "--eta", "1"], "--eta 1 must be > 1"),
    ("search-finalist-seeds-1000", "search", ["--budget", "3000", *SEARCH, "--finalist-seeds", "1000"],
     "--finalist-seeds 1000 is more than 100"),
    ("search-finalists-negative", "search", ["--budget", "3000", *SEARCH, "--finalists", "-1"],
     "--finalists: expected an integer >= 0"),
    ("search-warm-start-dev-zero", "search", ["--budget", "3000", *SEARCH, "--warm-start", "/dev/zero"],
     "/dev/zero: not a regular file (a character device), so not a spec file"),
    ("search-warm-start-fifo", "search", ["--budget", "3000", *SEARCH, "--warm-start", "fifo.json"],
     "fifo.json: not a regular file (a FIFO), so not a spec file"),
    ("search-warm-start-2-MiB", "search", ["--budget", "3000", *SEARCH, "--warm-start", "big.json"],
     "big.json: 2,097,152 bytes, more than a spec file may hold (1,048,576 bytes)"),
    ("search-space-dev-zero", "search", ["--budget", "3000", *SEARCH, "--space", "/dev/zero"],
     "/dev/zero: not a regular file (a character device), so not a search-space file"),
    ("search-space-fifo", "search", ["--budget", "3000", *SEARCH, "--space", "fifo.json"],
     "fifo.json: not a regular file (a FIFO), so not a search-space file"),
    ("search-space-directory", "search", ["--budget", "3000", *SEARCH, "--space", "studies"],
     "studies: not a regular file (a directory), so not a search-space file"),
    ("search-space-2-MiB", "search", ["--budget", "3000", *SEARCH, "--space", "big.yaml"],
     "big.yaml: 2,097,152 bytes, more than a search-space file may hold (1,048,576 bytes)"),
    ("search-space-alias-bomb", "search", ["--budget", "3000", *SEARCH, "--space", "bomb.yaml"],
     "bomb.yaml: line 2: YAML anchors (&a) are not allowed in a space file"),
    ("search-space-5000-digit-integer", "search", ["--budget", "3000", *SEARCH, "--space", "digits.yaml"],
     "digits.yaml: not a readable YAML file (Exceeds the limit (4300 digits)"),
    # ---- export
    ("export-out-is-the-study-db", "export", ["--study", "keep", "--out", "studies/keep.db"], "is an SQLite database"),
    ("export-out-is-a-checkpoint", "export", ["--study", "keep", "--out", CHECKPOINT], "is not a JSON file"),
    ("export-out-is-a-text-file", "export", ["--study", "keep", "--out", "afile.txt"], "is not a JSON file"),
    ("export-out-is-a-folder", "export", ["--study", "keep", "--out", "studies"], "is a directory"),
    ("export-trial-rejected", "export", ["--study", "keep", "--trial", REJECTED_TRIAL], "did not complete (rejected)"),
    ("export-storage-missing-sqlite", "export", ["--study", "keep", "--storage", "sqlite:///missing.db"],
     "missing.db does not exist"),
    ("export-study-missing", "export", ["--study", "nothere"], "no study 'nothere'"),
    ("export-study-escapes", "export", ["--study", "../keep"], "bad study name"),
    # ---- retrain
    ("retrain-spec-nested-100000-deep", "retrain", ["deep.json"], "deep.json: not a readable JSON spec file"),
    ("retrain-spec-3-channels", "retrain", ["rgb.json"], "does not fit MNIST (1-channel 28x28 images, 10 classes): "
                                                         "arch.in_channels is 3, not 1"),
    ("retrain-spec-100-classes", "retrain", ["cifar100.json"], "arch.num_classes is 100, not 10"),
    ("retrain-spec-32-pixels", "retrain", ["px32.json"], "arch.input_size is 32, not 28"),
    ("retrain-out-is-a-file", "retrain", ["studies/keep/best.json", "--out", "afile.txt"], "exists and is not a directory"),
    ("retrain-out-holds-results", "retrain", ["studies/keep/best.json"], "already holds results"),  # best_retrain/
    ("retrain-seeds-0", "retrain", ["studies/keep/best.json", "--seeds", "0"], "--seeds: expected a positive integer"),
    ("retrain-spec-missing", "retrain", ["missing.json"], "no such spec file"),
    ("retrain-spec-dev-zero", "retrain", ["/dev/zero"],
     "/dev/zero: not a regular file (a character device), so not a spec file"),
    ("retrain-spec-fifo", "retrain", ["fifo.json"], "fifo.json: not a regular file (a FIFO), so not a spec file"),
    ("retrain-spec-directory", "retrain", ["studies"], "studies: not a regular file (a directory), so not a spec file"),
    ("retrain-spec-2-MiB", "retrain", ["big.json"],
     "big.json: 2,097,152 bytes, more than a spec file may hold (1,048,576 bytes)"),
    ("retrain-spec-not-utf8", "retrain", ["latin1.json"], "latin1.json: not UTF-8 text (byte 13 is 0xe9), so not a spec file"),
    ("retrain-spec-5000-digit-integer", "retrain", ["digits.json"],
     "digits.json: not a readable JSON spec file (Exceeds the limit (4300 digits)"),
    ("retrain-spec-million-channels", "retrain", ["million.json"],
     "million.json: arch.stages: each width must be an integer from 1 to 1024"),
    ("retrain-spec-292M-params", "retrain", ["huge.json"],
     "huge.json: 292,637,696 parameters, more than this tool builds (50,000,000)"),
    # ---- evaluate
    ("evaluate-out-is-the-checkpoint", "evaluate", [CHECKPOINT, "--out", CHECKPOINT], "is not a HTML file"),
    ("evaluate-out-is-a-text-file", "evaluate", [CHECKPOINT, "--out", "afile.txt"], "is not a HTML file"),
    ("evaluate-out-is-the-study-db", "evaluate", [CHECKPOINT, "--out", "studies/keep.db"], "is an SQLite database"),
    ("evaluate-spec-3-channels", "evaluate", ["rgb.pt"], "arch.in_channels is 3, not 1"),
    ("evaluate-spec-100-classes", "evaluate", ["cifar100.pt", "--out", "new.html"], "arch.num_classes is 100, not 10"),
    ("evaluate-foreign-pt", "evaluate", ["foreign.pt"], "not a nas-budget-checkpoint"),
    ("evaluate-json-as-checkpoint", "evaluate", ["studies/keep/best.json"], "cannot read it"),
    ("evaluate-missing", "evaluate", ["missing.pt"], "no such checkpoint file"),
    ("evaluate-dev-zero", "evaluate", ["/dev/zero"],
     "/dev/zero: not a regular file (a character device), so not a checkpoint file"),
    ("evaluate-fifo", "evaluate", ["fifo.json"], "fifo.json: not a regular file (a FIFO), so not a checkpoint file"),
    ("evaluate-directory", "evaluate", ["studies"], "studies: not a regular file (a directory), so not a checkpoint file"),
    ("evaluate-nan-weight", "evaluate", ["nan.pt"], "nan.pt: the weights are not finite (NaN or inf in 0.weight)"),
    ("evaluate-inf-batch-norm-statistic", "evaluate", ["inf.pt"],
     "inf.pt: the weights are not finite (NaN or inf in 1.running_var)"),
    ("evaluate-spec-292M-params", "evaluate", ["huge.pt"],
     "huge.pt: 292,637,696 parameters, more than this tool builds (50,000,000)"),
    ("evaluate-spec-overflows-int64", "evaluate", ["overflow.pt"],
     "overflow.pt: arch: a layer's size overflows a 64-bit integer"),
    # ---- report
    ("report-out-is-a-file", "report", ["--study", "keep", "--out", "afile.txt"], "cannot write the report into afile.txt"),
    ("report-study-missing", "report", ["--study", "nothere"], "no study 'nothere'"),
    ("report-storage-missing-sqlite", "report", ["--study", "keep", "--storage", "sqlite:///missing.db"],
     "missing.db does not exist"),
    ("report-studies-dir-is-a-file", "report", ["--study", "keep", "--studies-dir", "afile.txt"],
     "afile.txt/keep.db does not exist"),
    # ---- bench
    ("bench-speed-unknown", "bench", ["--speed", "bogus=1", "--epochs", "1", "--subset", "64"], "unknown setting 'bogus'"),
    ("bench-speed-amp-fp8", "bench", ["--speed", "amp=fp8", "--epochs", "1", "--subset", "64"], "amp must be one of"),
    ("bench-spec-missing", "bench", ["--spec", "missing.json", "--epochs", "1", "--subset", "64"], "no such spec file"),
    ("bench-spec-3-channels", "bench", ["--spec", "rgb.json", "--epochs", "1", "--subset", "64"],
     "arch.in_channels is 3, not 1"),
    ("bench-spec-nested-100000-deep", "bench", ["--spec", "deep.json", "--epochs", "1", "--subset", "64"],
     "nested too deeply"),
    ("bench-threads-0", "bench", ["--threads", "0"], "--threads: expected a positive integer"),
    ("bench-spec-dev-zero", "bench", ["--spec", "/dev/zero", "--epochs", "1", "--subset", "64"],
     "/dev/zero: not a regular file (a character device), so not a spec file"),
    ("bench-spec-fifo", "bench", ["--spec", "fifo.json", "--epochs", "1", "--subset", "64"],
     "fifo.json: not a regular file (a FIFO), so not a spec file"),
]
NETWORK = {"search-download-no-network": "refused", "search-download-silent-network": "silent"}  # see `offline`
# Hostile input (a FIFO, /dev/zero, a 2 MiB file, an alias bomb, a design too large to build): refused in well under
# a second; before, these hung, or ran until MemoryError. A regression fails its case at the deadline instead.
HOSTILE_DEADLINE = 30.0
HOSTILE = {case[0] for case in CASES if any(word in case[0] for word in (
    "dev-zero", "fifo", "directory", "2-MiB", "bomb", "digit", "utf8", "million", "292M", "nan-", "inf-", "overflows"))}


@pytest.mark.parametrize("command, args, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(request, stored, cli, monkeypatch, data_dir, command, args,
                                                   message):
    root, (hashes, folders) = stored
    monkeypatch.setenv("NAS_DATA_DIR", str(data_dir))
    network = NETWORK.get(request.node.callspec.id)
    if network:
        request.getfixturevalue("offline")(network)
    start = time.perf_counter()
    with deadline(HOSTILE_DEADLINE if request.node.callspec.id in HOSTILE else None):
        result = cli(command, *args, cwd=root)
    line = one_line_error(result)
    assert line.startswith(f"nas {command}: error: ") and message in line, line
    if network:  # each connection or read waits DOWNLOAD_TIMEOUT (1 s here) at most: an error, never a hang
        assert time.perf_counter() - start < 10
    assert tree_hashes(root) == hashes  # every stored file unchanged, and no new one (missing.db is not created)
    assert _folders(root) == folders  # and no folder left behind (an empty MNIST/raw, an empty --out)


def test_cases_cover_every_command():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)
    assert {case[1] for case in CASES} == {"search", "export", "retrain", "evaluate", "report", "bench"}


def test_retrain_of_an_exploding_schedule_stops_as_diverged(stored, cli, monkeypatch, data_dir):
    """lr 1000: the loss explodes (to ~10^3 and beyond in the first epoch) without always becoming NaN;
    before the trainer's explosion rule, this trained to chance accuracy and exited 0."""
    root, (hashes, folders) = stored
    monkeypatch.setenv("NAS_DATA_DIR", str(data_dir))
    result = cli("retrain", "lr1000.json", "--subset", "256", "--epochs", "1", "--seeds", "1", "-q",
                 "--device", "cpu", cwd=root)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("nas retrain: error: seed 0: training diverged in epoch 1")
    assert tree_hashes(root) == hashes  # no checkpoint, no metrics
    assert _folders(root) == folders  # and no empty lr1000_retrain/ left behind


def test_seed_overflow_on_a_new_study_creates_nothing(tmp_path, cli):
    line = one_line_error(cli("search", "--budget", "3000", "--study", "fresh", *SEARCH, "--seed", "4294967290",
                              "--trials", "50", cwd=tmp_path))
    assert "passes 4294967295" in line
    assert tree_hashes(tmp_path) == {} and _folders(tmp_path) == []  # no studies/, no fresh.db
