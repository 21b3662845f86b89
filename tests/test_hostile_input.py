"""Hostile input costs bounded time and memory: input files are read only if they are regular files under a
size limit (never a FIFO, never /dev/zero), space files may not use YAML anchors and aliases (billion laughs),
designs too large to build are refused by their count before anything is allocated, and a checkpoint with
NaN or inf weights is refused. The commands' one-line errors for the same files are in test_bad_input.py.
"""

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from nas.bundled import found_files, reference_files, spaces
from nas.checkpoint import CHECKPOINT_LIMIT, load_checkpoint, save_checkpoint
from nas.cost import MAX_BUILD_PARAMS, check_buildable, count_params, spec_params
from nas.errors import CheckpointError, SpaceError, SpecError, UsageError
from nas.files import TEXT_LIMIT, open_input, read_text_file
from nas.model import build
from nas.space import load_space
from nas.spec import Spec, load_spec

FINAL = reference_files()[-1]  # the classic 7,416-parameter design
JOIN_TIMEOUT = 10.0  # seconds: a refusal takes milliseconds; a reader blocked on a FIFO would never return


def _final() -> Spec:
    return Spec.from_dict(json.loads(FINAL.read_text())["spec"])


def _wide(transition: str = "pool") -> Spec:
    """1024-wide blocks, 8 per stage, 4 stages: every value within RANGES, hundreds of millions of parameters."""
    spec = _final().to_dict()
    spec["arch"].pop("kinds", None)  # every block a 3x3 conv
    spec["arch"].update(stages=[[1024] * 8] * 4, padding="same", transition=transition, transition_width=1024)
    return Spec.from_dict(spec)


def _in_thread(call, fifo: Path):
    """`call()` in a thread, joined with a timeout: the exception it raised (or None). Should it block on the
    FIFO, a writer opens and closes the FIFO so that the reader sees end-of-file and the thread ends, and the
    test fails instead of hanging."""
    outcome: list = []

    def target():
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked reader
        thread.join(JOIN_TIMEOUT)
        pytest.fail(f"blocked on the FIFO {fifo} for {JOIN_TIMEOUT} s")
    return outcome[0]


# ---- the reader: regular files under a limit

def test_read_text_file_refuses_what_is_not_a_regular_file_under_the_limit(tmp_path):
    with pytest.raises(SpecError, match=r"^nope.json: no such spec file$"):
        read_text_file(Path("nope.json"), "spec file", TEXT_LIMIT, SpecError)
    with pytest.raises(SpaceError, match=r"no such search-space file \(bundled: a, b\)$"):
        read_text_file(tmp_path / "nope.yaml", "search-space file", TEXT_LIMIT, SpaceError, hint=" (bundled: a, b)")
    with pytest.raises(UsageError, match=r": not a regular file \(a directory\), so not a spec file$"):
        read_text_file(tmp_path, "spec file", TEXT_LIMIT)
    with pytest.raises(SpecError, match=r"^/dev/zero: not a regular file \(a character device\), so not a spec file$"):
        read_text_file("/dev/zero", "spec file", TEXT_LIMIT, SpecError)
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # a link is judged by what it points to
    with pytest.raises(SpecError, match=r"zero.json: not a regular file \(a character device\)"):
        read_text_file(tmp_path / "zero.json", "spec file", TEXT_LIMIT, SpecError)
    (tmp_path / "gone.json").symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(SpecError, match=r"gone.json: no such spec file$"):
        read_text_file(tmp_path / "gone.json", "spec file", TEXT_LIMIT, SpecError)

    exact = tmp_path / "exact.txt"
    exact.write_bytes(b"x" * 100)
    assert read_text_file(exact, "spec file", 100) == "x" * 100  # the limit itself is allowed
    with pytest.raises(UsageError, match=r"exact.txt: 100 bytes, more than a spec file may hold \(99 bytes\)$"):
        read_text_file(exact, "spec file", 99)
    (tmp_path / "latin1.json").write_bytes(b"caf\xe9")
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 3 is 0xe9\), so not a spec file$"):
        read_text_file(tmp_path / "latin1.json", "spec file", TEXT_LIMIT)


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    start = time.perf_counter()
    exc = _in_thread(lambda: read_text_file(fifo, "spec file", TEXT_LIMIT, SpecError), fifo)
    assert isinstance(exc, SpecError) and str(exc) == f"{fifo}: not a regular file (a FIFO), so not a spec file"
    assert time.perf_counter() - start < 5


def test_a_fifo_swapped_in_after_the_check_is_refused_once_open(tmp_path, monkeypatch):
    """The race: the path is a regular file when stat looks, a FIFO when it is opened. O_NONBLOCK opens a FIFO
    at once (no writer needed), and the check of what was opened (fstat) refuses it."""
    fifo, regular = tmp_path / "pipe.json", tmp_path / "regular.json"
    os.mkfifo(fifo)
    regular.write_text("{}")
    real_stat = os.stat
    monkeypatch.setattr("nas.files.os.stat", lambda path, *a, **k: real_stat(regular if path == fifo else path, *a, **k))
    exc = _in_thread(lambda: open_input(fifo, "spec file", TEXT_LIMIT, SpecError), fifo)
    assert isinstance(exc, SpecError) and "not a regular file (a FIFO)" in str(exc)


@pytest.mark.parametrize("load, error, what", [
    (load_spec, SpecError, "spec file"),
    (load_space, SpaceError, "search-space file"),
    (lambda p: load_checkpoint(Path(p)), CheckpointError, "checkpoint file"),
], ids=["spec", "space", "checkpoint"])
def test_every_loader_refuses_a_fifo_and_dev_zero(tmp_path, load, error, what):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    exc = _in_thread(lambda: load(fifo), fifo)
    assert isinstance(exc, error) and str(exc) == f"{fifo}: not a regular file (a FIFO), so not a {what}", exc
    with pytest.raises(error, match=rf"^/dev/zero: not a regular file \(a character device\), so not a {what}$"):
        load("/dev/zero")
    with pytest.raises(error, match=rf"not a regular file \(a directory\), so not a {what}$"):
        load(tmp_path)


def test_spec_and_space_files_over_1_mib_are_refused_unread(tmp_path):
    text = FINAL.read_bytes()
    spec = tmp_path / "big.json"
    spec.write_bytes(text + b" " * (2 * 2**20 - len(text)))
    with pytest.raises(SpecError, match=r"big.json: 2,097,152 bytes, more than a spec file may hold \(1,048,576 bytes\)$"):
        load_spec(spec)
    space = tmp_path / "big.yaml"
    space.write_text(spaces()["mnist_tiny"].read_text() + "#" * (2 * 2**20))
    with pytest.raises(SpaceError, match=r"big.yaml: [\d,]+ bytes, more than a search-space file may hold"):
        load_space(space)
    assert TEXT_LIMIT == 2**20


def test_a_checkpoint_over_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "sparse.pt"
    with open(path, "wb") as f:
        f.truncate(CHECKPOINT_LIMIT + 1)  # sparse: no disk used, and nothing is read
    with pytest.raises(CheckpointError, match=rf"sparse.pt: {CHECKPOINT_LIMIT + 1:,} bytes, more than a checkpoint "
                                              rf"file may hold \({CHECKPOINT_LIMIT:,} bytes\)$"):
        load_checkpoint(path)
    assert CHECKPOINT_LIMIT == 512 * 2**20


def test_integers_of_more_than_4300_digits_are_one_line(tmp_path):
    (tmp_path / "digits.json").write_text(FINAL.read_text().replace('"batch_size": 128', '"batch_size": 1' + "0" * 5000))
    with pytest.raises(SpecError, match=r"not a readable JSON spec file \(Exceeds the limit \(4300 digits\)"):
        load_spec(tmp_path / "digits.json")
    (tmp_path / "digits.yaml").write_text("name: digits\narch:\n  width: 1" + "0" * 5000 + "\n")
    with pytest.raises(SpaceError, match=r"not a readable YAML file \(Exceeds the limit \(4300 digits\)"):
        load_space(tmp_path / "digits.yaml")


# ---- YAML anchors and aliases

BOMB = "name: bomb\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefghij", "bcdefghij"))  # 9**10 strings


def test_an_alias_bomb_is_refused_at_its_first_anchor(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 500
    start = time.perf_counter()
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert time.perf_counter() - start < 2  # before: a minute, then MemoryError
    assert str(info.value) == (f"{path}: line 2: YAML anchors (&a) are not allowed in a space file: "
                               "write each value out")


def test_anchors_and_aliases_anywhere_are_refused_with_their_line(tmp_path):
    tiny = spaces()["mnist_tiny"].read_text()
    assert "batch_size:" in tiny
    anchored = tiny.replace("batch_size:", "batch_size: &bs", 1)
    line = anchored.splitlines().index(next(l for l in anchored.splitlines() if "&bs" in l)) + 1
    (tmp_path / "anchor.yaml").write_text(anchored)
    with pytest.raises(SpaceError, match=rf"anchor.yaml: line {line}: YAML anchors \(&bs\) are not allowed"):
        load_space(tmp_path / "anchor.yaml")
    (tmp_path / "alias.yaml").write_text("name: x\narch: *nowhere\n")  # an alias with no anchor: still refused
    with pytest.raises(SpaceError, match=r"alias.yaml: line 2: YAML aliases \(\*nowhere\) are not allowed"):
        load_space(tmp_path / "alias.yaml")


@pytest.mark.parametrize("name", sorted(spaces()))
def test_the_bundled_spaces_use_no_anchors_and_still_load(name):
    path = spaces()[name]
    events = list(yaml.parse(path.read_text()))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)]
    assert load_space(path).name == name


# ---- designs too large to build

@pytest.mark.parametrize("path", [*reference_files(), *found_files()], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_meta_count_is_fvcores_count(path):
    spec = load_spec(path)
    assert spec_params(spec) == count_params(build(spec))
    assert check_buildable(spec, str(path)) == spec_params(spec)


def test_the_meta_count_of_every_block_and_head_kind_is_fvcores_count():
    base = _final().to_dict()
    for changes in ({"activation": "prelu", "head": "gap_mlp", "head_width": 12},
                    {"kinds": [["sep3", "conv1"], ["conv1", "sep3", "conv3"]], "batch_norm": False},
                    {"head": "flatten_linear", "transition": "pool_1x1"}, {"head": "gap_linear"}):
        spec = Spec.from_dict({**base, "arch": {**base["arch"], **changes}})
        assert spec_params(spec) == count_params(build(spec)), changes


def test_a_design_too_large_to_build_is_counted_without_allocating_and_refused():
    spec = _wide()
    start = time.perf_counter()
    params = spec_params(spec)  # 1.2 GB of float32 weights, were they allocated
    assert time.perf_counter() - start < 5
    assert params == 292_637_696 > MAX_BUILD_PARAMS == 50_000_000
    with pytest.raises(SpecError, match=r"^wide.json: 292,637,696 parameters, more than this tool builds \(50,000,000\)$"):
        check_buildable(spec, "wide.json")
    with pytest.raises(CheckpointError, match=r"^w.pt: 295,783,424 parameters, more than this tool builds"):
        check_buildable(_wide("1x1_pool"), "w.pt", CheckpointError)


def test_a_layer_whose_size_overflows_int64_is_refused():
    base = _final().to_dict()
    spec = Spec.from_dict({**base, "arch": {**base["arch"], "in_channels": 10**30}})
    with pytest.raises(SpecError, match=r"^x.json: arch: a layer's size overflows a 64-bit integer: more parameters "
                                        r"than this tool builds \(50,000,000\)$"):
        check_buildable(spec, "x.json")


# ---- checkpoints whose weights are not finite

@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, value):
    spec = _final()
    model = build(spec)
    save_checkpoint(tmp_path / "ok.pt", spec, model, {})
    assert load_checkpoint(tmp_path / "ok.pt")[1] == spec  # finite: loads
    with torch.no_grad():
        model[0].weight[3, 0, 1, 1] = value
    save_checkpoint(tmp_path / "bad.pt", spec, model, {})
    with pytest.raises(CheckpointError, match=r"bad.pt: the weights are not finite \(NaN or inf in 0.weight\)$"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_checkpoint_whose_spec_is_too_large_is_refused_before_building(tmp_path, monkeypatch):
    spec = _final()
    save_checkpoint(tmp_path / "small.pt", spec, build(spec), {})
    payload = torch.load(tmp_path / "small.pt", weights_only=True)
    payload["spec"] = _wide().to_dict()
    torch.save(payload, tmp_path / "wide.pt")
    monkeypatch.setattr("nas.checkpoint.build", lambda spec: pytest.fail("built a design above the cap"))
    with pytest.raises(CheckpointError, match=r"wide.pt: 292,637,696 parameters, more than this tool builds"):
        load_checkpoint(tmp_path / "wide.pt")


def test_stat_kinds_are_named():
    from nas.files import _not_regular

    assert _not_regular(stat.S_IFDIR) == "a directory" and _not_regular(stat.S_IFIFO) == "a FIFO"
    assert _not_regular(stat.S_IFCHR) == "a character device" and _not_regular(stat.S_IFBLK) == "a block device"
    assert _not_regular(stat.S_IFSOCK) == "a socket"
