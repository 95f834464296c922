"""A built wheel carries the YAML defaults and runs without the checkout (a non-editable install).

The full check (a fresh environment with the pinned stack, ml-100k) is ``.ci/check_wheel.sh``;
this one installs the wheel beside this environment's dependencies.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.integration

# What a wheel is built from: the checkout without environments, build output or results.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "results",
                                    "saved", "log", "log_tensorboard")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built (without build isolation: offline) from a copy of the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, work / "src", ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(work / "src")], check=True, capture_output=True)
    return next((work / "dist").glob("recbole_hymoe-*.whl"))


def test_the_wheel_ships_every_yaml_file_of_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name.removeprefix("recbole_hymoe/") for name in archive.namelist()
                   if name.startswith("recbole_hymoe/yaml/")}
    source = {path.relative_to(REPO).as_posix() for path in (REPO / "yaml").rglob("*") if path.is_file()}
    assert shipped == source


def test_the_installed_wheel_trains_from_a_folder_outside_the_checkout(wheel, tmp_path, mini_data_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's package before this environment's editable one
    probe = subprocess.run(
        [sys.executable, "-c", "import recbole_hymoe.paths as p; print(p.YAML_DIR); "
         "print(p.find_file('yaml/protocol/loo-full.yaml'))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    yaml_dir, protocol = probe.stdout.split()
    assert Path(yaml_dir) == site / "recbole_hymoe" / "yaml"
    assert Path(protocol) == site / "recbole_hymoe" / "yaml" / "protocol" / "loo-full.yaml"
    run = subprocess.run(
        [str(site / "bin" / "run_recbole"), "--model=HyMoERec", "--dataset=mini", f"--data_path={mini_data_path}",
         "--config_files=yaml/demo/hymoerec-ml100k.yaml", "--epochs=1", "--MAX_ITEM_LIST_LENGTH=20",
         "--hidden_size=16", "--inner_size=32", "--show_progress=False", "--state=ERROR"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| test |" in run.stdout
