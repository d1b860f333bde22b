"""The wheel a user installs is complete: built from the source tree, installed into a fresh venv, and run outside the
source tree, it has its version, its licence, its type marker and its bundled studies (`adamlab validate demo`).

The fresh venv reuses this interpreter's installed packages (torch and the rest) through a .pth line, so nothing is
downloaded; adamlab itself comes only from the wheel (checked via ``adamlab.__file__``). About 30-40 s on 2 cores.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import adamlab

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy, so the build's egg-info and build/ folders never touch the working tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source), "-w", str(dist)], check=True, env=_clean_env())
    (built,) = dist.glob("adamlab-*.whl")
    return built


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_wheel_holds_licence_type_marker_specs_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f"adamlab-{adamlab.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert "adamlab/py.typed" in names
    bundled = {p.name for p in (ROOT / "src/adamlab/studies/specs").iterdir()}
    assert {f"adamlab/studies/specs/{name}" for name in bundled} <= names and "demo.yaml" in bundled
    assert "adamlab/tasks/data/ag_news/train.jsonl" in names
    # built on first use by the fused Adam-mini and CAME steps on CPU
    assert {"adamlab/optim/csrc/adam_mini_step.cpp", "adamlab/optim/csrc/came_step.cpp"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {adamlab.__version__}" in metadata
    assert "Provides-Extra: models" in metadata and "Provides-Extra: hub" in metadata
    assert "Requires-Dist: datasets" in metadata and "Requires-Dist: datasets>=4; extra == \"hub\"" in metadata


def test_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, env=_clean_env())
    # The fresh venv sees this interpreter's packages after its own, so its adamlab is the wheel's.
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "reuse_installed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=_clean_env(), capture_output=True, text=True, timeout=300)

    where = run(str(venv / "bin" / "python"), "-c", "import adamlab; print(adamlab.__file__)")
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    version = run(str(venv / "bin" / "adamlab"), "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"adamlab {adamlab.__version__}"
    validated = run(str(venv / "bin" / "adamlab"), "validate", "demo")
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert "demo: ok, 16 trials" in validated.stdout
