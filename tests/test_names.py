"""A newcomer's first hour: bundled models by name wherever a spec file is taken, `nas list`, `nas --version`,
retrain's default folder never inside the package, export's next command and retrain's at-chance warning."""

import json
import re
import shutil

import optuna
import pytest

from conftest import ROOT, SHARED_STUDY, one_line_error, tree_hashes
from nas.bundled import ROOT as BUNDLED, find_spec, found_files, reference_files, spaces, spec_files
from nas.errors import SpecError
from nas.catalog import model_row
from nas.cost import spec_costs
from nas.retrain import chance_warning, default_out
from nas.search.warm_start import warm_starts
from nas.space import load_space
from nas.spec import Spec, load_spec
from nas.version import __version__

QUICK = ["--subset", "256", "--epochs", "1", "--seeds", "1", "--device", "cpu", "-q"]


def test_bundled_specs_load_by_name_with_or_without_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert list(spec_files()) == [f"reference/{p.stem}" for p in reference_files()] + \
        [f"found/{p.stem}" for p in found_files()]
    for name, path in spec_files().items():
        assert find_spec(name) == find_spec(f"{name}.json") == path
        assert load_spec(name) == load_spec(f"{name}.json") == load_spec(path)
    # a file of that path wins over the bundled spec of that name
    (tmp_path / "found").mkdir()
    (tmp_path / "found" / "b8000.json").write_text((BUNDLED / "reference" / "4_final.json").read_text())
    assert find_spec("found/b8000.json").resolve() == (tmp_path / "found" / "b8000.json").resolve()
    assert load_spec("found/b8000.json") == load_spec("reference/4_final")
    assert load_spec("found/b8000") == load_spec(BUNDLED / "found" / "b8000.json")  # no such file: the bundled one


def test_a_missing_name_lists_the_bundled_ones(tmp_path, cli):
    with pytest.raises(SpecError, match="no such spec file, nor a bundled spec .bundled: reference/1_basic, "):
        load_spec("found/b9000")
    line = one_line_error(cli("retrain", "found/b9000", *QUICK, cwd=tmp_path))
    assert line.startswith("nas retrain: error: found/b9000: no such spec file, nor a bundled spec (bundled: ")
    assert all(name in line for name in spec_files())
    assert not (tmp_path / "studies").exists()


def test_warm_start_by_bundled_name(tmp_path, cli):
    space = load_space(spaces()["mnist"])
    names = [name for name, _, _ in warm_starts(space, 5000, ["found/b4000", "found/b2000.json"], references=False)]
    assert names == ["found/b4000", "found/b2000.json"]
    result = cli("search", "--warm-start", "found/b4000", "--budget", "5000", "--space", "mnist", "--trials", "0",
                 "--studies-dir", "st", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mnist-b5000", storage=f"sqlite:///{tmp_path}/st/mnist-b5000.db")
    assert "found/b4000" in [t.user_attrs.get("warm_start") for t in study.trials]


@pytest.mark.slow  # two retrains of bundled models with their exports: about 16 s on 2 cores
def test_retrain_by_name_writes_under_the_studies_dir_never_into_the_package(tmp_path, cli):
    before = tree_hashes(BUNDLED)
    result = cli("retrain", "found/b8000", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "studies" / "retrain" / "b8000"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec_file"] == str(BUNDLED / "found" / "b8000.json") and metrics["params"] == 7926
    assert "wrote studies/retrain/b8000/" in result.stdout
    # the at-chance warning is printed exactly when the mean is below twice chance
    at_chance = metrics["mean"] < 20
    assert ("is at chance (10 % for 10 classes)" in result.stderr) == at_chance, (metrics["mean"], result.stderr)
    # --studies-dir and $NAS_STUDIES_DIR name another studies dir; .json and a path through the top-level link work too
    result = cli("retrain", "reference/4_final.json", *QUICK, "--studies-dir", "elsewhere", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere" / "retrain" / "4_final" / "metrics.json").is_file()
    assert tree_hashes(BUNDLED) == before
    assert not list(BUNDLED.rglob("*_retrain"))


def test_default_out_beside_a_users_file_and_under_studies_for_the_package(tmp_path):
    studies = tmp_path / "studies"
    assert default_out(tmp_path / "mine" / "best.json", studies) == tmp_path / "mine" / "best_retrain"
    assert default_out(BUNDLED / "found" / "b4000.json", studies) == studies / "retrain" / "b4000"
    if (ROOT / "search_spaces").is_symlink():  # the checkout's link to the package's files
        assert default_out(ROOT / "search_spaces" / "reference" / "3_gap.json", studies) == studies / "retrain" / "3_gap"


def test_chance_warning():
    assert chance_warning(19.99, 10, 1, 256) == (
        "nas retrain: warning: test accuracy 19.99 % is at chance (10 % for 10 classes): too few epochs or images "
        "to learn anything; try at least --epochs 3 --subset 10000 (about 97 % for found/b8000, in seconds)")
    assert chance_warning(20.0, 10, 1, 256) is None
    assert chance_warning(98.0, 10, 15, None) is None
    assert "learned nothing" in chance_warning(11.35, 10, 15, None)
    assert "(50 % for 2 classes)" in chance_warning(60.0, 2, 1, None)


def test_list_shows_spaces_models_and_studies(tmp_path, cli, shared_copy):
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(shared_copy / "studies" / f"{SHARED_STUDY}.db", studies)
    made = cli("search", "--budget", "5000", "--space", "mnist_tiny", "--trials", "0", "--studies-dir", str(studies),
               "-q", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = cli("list", "--studies-dir", str(studies), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name, path in spaces().items():
        assert re.search(rf"^  {name} +{path.name} +\S", out, re.MULTILINE), out
    for name in spec_files():
        assert re.search(rf"^  {re.escape(name)} +[\d,]+ ", out, re.MULTILINE), out
    # each found model's four costs (nas.cost, from its spec), its data, its float and, where measured, int8 accuracy
    for name in ("b8000", "b4000", "b2000"):
        found = json.loads((BUNDLED / "found" / f"{name}.json").read_text())
        cost = spec_costs(Spec.from_dict(found["spec"]))
        # a separate int8 retrain's, else the model's own retrain's (ship_found's); without either: an empty cell
        measured = found["int8"]["int8"] if "int8" in found else found["retrain"].get("int8")
        int8 = f"{measured['mean']:.2f} ± {measured['std']:.2f} %" if measured else None
        assert re.search(rf"^  found/{name} +{cost.params:,} +{cost.macs:,} +{cost.ram_int8:,} +{cost.flash_int8:,} "
                         rf"+mnist +{found['retrain']['mean']:.2f} ± {found['retrain']['std']:.2f} % \(5 seeds\) +"
                         + (re.escape(int8) + " +" if int8 else "") + rf"{re.escape(found['code'])}$",
                         out, re.MULTILINE), out
    best = optuna.load_study(study_name=SHARED_STUDY, storage=f"sqlite:///{studies}/{SHARED_STUDY}.db")
    assert re.search(rf"^  {SHARED_STUDY} +{len(best.trials)} +10,000 +mnist_tiny +\d+\.\d\d %.* +{SHARED_STUDY}\.db "
                     r"+mnist$", out, re.MULTILINE), out
    assert re.search(r"^  mnist_tiny-b5000 +\d+ +5,000 +mnist_tiny +none complete +mnist_tiny-b5000\.db +mnist$", out,
                     re.MULTILINE), out
    # nothing but the listing: no study is changed, a missing folder is said so
    assert "no such folder" in cli("list", "--studies-dir", str(tmp_path / "nope"), cwd=tmp_path).stdout


def test_list_names_a_models_recorded_data_or_its_shape(tmp_path):
    found = json.loads((BUNDLED / "found" / "b4000.json").read_text())
    del found["int8"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({**found, "data": {"name": "shapes", "kind": "folder", "hash": "0123456789abcdef",
                                                  "images_per_class": {"a": 3, "b": 4}}}))
    row = model_row("mine", mine)
    assert row["data"] == "shapes (folder, 2 classes, 7 images, 0123456789abcdef)" and row["int8"] == ""
    found["spec"]["arch"].update(in_channels=3, input_size=32, num_classes=4)
    mine.write_text(json.dumps(found))
    row = model_row("mine", mine)
    assert row["data"] == "3x32x32, 4 classes"
    assert row["flash"] == f"{spec_costs(Spec.from_dict(found['spec'])).flash_int8:,}"


def test_version(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert re.fullmatch(rf"nas-budget {re.escape(__version__)}( \(commit [0-9a-f]+(-dirty)?\))?\n",
                        capsys.readouterr().out)


def test_export_says_the_next_command(tmp_path, cli, shared_copy):
    result = cli("export", "--study", SHARED_STUDY, "--out", str(tmp_path / "my spec.json"), cwd=shared_copy)
    assert result.returncode == 0, result.stderr
    quoted = f"'{tmp_path / 'my spec.json'}'"
    assert f"next: nas retrain {quoted}\n" in result.stdout
    assert f"nas retrain {quoted} --epochs 3 --seeds 1 --subset 10000" in result.stdout
