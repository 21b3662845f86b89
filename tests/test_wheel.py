"""Built as a wheel and installed without -e, the package finds its bundled spaces from anywhere."""

import os
import subprocess
import sys

import pytest

from conftest import DATA_DIR, ROOT


@pytest.mark.slow  # pip builds and installs the wheel, then a search runs from it
def test_wheel_installs_and_searches_from_an_unrelated_directory(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("nas_budget-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (target / "nas" / "search_spaces" / "mnist.yaml").is_file()
    assert len(list((target / "nas" / "search_spaces" / "reference").glob("*.json"))) == 4

    # the installed copy, not this checkout: PYTHONPATH names only the target, the cwd is elsewhere
    env = {**os.environ, "PYTHONPATH": str(target), "NAS_DATA_DIR": str(DATA_DIR)}
    env.pop("NAS_STUDIES_DIR", None)
    where = subprocess.run([sys.executable, "-c", "import nas; print(nas.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    search = subprocess.run([str(target / "bin" / "nas"), "search", "--budget", "8000", "--trials", "1",
                             "--epochs", "1", "--subset", "64", "-q", "--no-report",
                             "--finalists", "0"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr
    assert (elsewhere / "studies" / "mnist-b8000.db").is_file()  # the default space, found inside the package
