"""The package as a user gets it: wheel and sdist built and checked, the wheel in a clean environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import requests

import airflow_provider_kibo_cancel
from devtools.airflow_local import AirflowEnv
from devtools.emulator_process import emulator_process
from tests import user_project

pytestmark = pytest.mark.newest_only  # builds from, and installs, the newest Airflow's lock

ROOT = Path(__file__).parent.parent
UV = str(Path(sys.executable).with_name("uv"))


def package_files() -> list[str]:
    """The package's files as git tracks them (what the wheel must hold, no more, no less)."""
    tracked = subprocess.run(
        ["git", "ls-files", "airflow_provider_kibo_cancel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked, "git ls-files found no package files"
    return sorted(tracked)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([UV, "build", "--quiet", "--out-dir", str(out), str(ROOT)], check=True)
    return out


def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    version = airflow_provider_kibo_cancel.__version__
    wheel = dist / f"airflow_provider_kibo_cancel-{version}-py3-none-any.whl"
    sdist = dist / f"airflow_provider_kibo_cancel-{version}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in dist.iterdir())
    twine = str(Path(sys.executable).with_name("twine"))
    result = subprocess.run(
        [twine, "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = zipfile.ZipFile(wheel).namelist()
    # Exactly the package's tracked files: nothing from tests/, devtools/ or benchmarks/, and nothing of
    # the package left out (the root layout no longer fences the package off by itself).
    packaged = sorted(
        n for n in names if not n.startswith(f"airflow_provider_kibo_cancel-{version}.dist-info/")
    )
    assert packaged == package_files()
    assert "airflow_provider_kibo_cancel/py.typed" in packaged
    with tarfile.open(sdist) as archive:
        sdist_names = archive.getnames()
    prefix = f"airflow_provider_kibo_cancel-{version}/"
    assert {prefix + n for n in package_files()} <= set(sdist_names)
    assert not [n for n in sdist_names if "/.venv" in n or "__pycache__" in n]
    metadata = zipfile.ZipFile(wheel).read(
        f"airflow_provider_kibo_cancel-{version}.dist-info/entry_points.txt"
    )
    assert b"provider_info = airflow_provider_kibo_cancel:get_provider_info" in metadata
    assert b"kibo-emulator = airflow_provider_kibo_cancel.emulator.__main__:main" in metadata
    assert b"[pytest11]\nkibo = airflow_provider_kibo_cancel.pytest_plugin" in metadata


@pytest.fixture(scope="module")
def clean_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the pinned dependencies and the provider from the built wheel."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # Airflow and the rest from the same pins as the project; the provider from the wheel, not the tree.
    subprocess.run(
        [
            UV,
            "pip",
            "sync",
            "--quiet",
            "--python",
            python,
            "--compile-bytecode",
            str(ROOT / "requirements" / "dev.lock"),
        ],
        check=True,
    )
    (wheel,) = dist.glob("*.whl")
    subprocess.run([UV, "pip", "install", "--quiet", "--python", python, "--no-deps", str(wheel)], check=True)
    installed = subprocess.run(
        [python, "-c", "import airflow_provider_kibo_cancel as p; print(p.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=venv,
    ).stdout
    assert str(venv) in installed  # not the source tree
    return venv


def test_the_built_wheel_works_in_a_clean_environment(clean_venv: Path, tmp_path: Path) -> None:
    venv = clean_venv
    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "example_dags", dags)
    airflow = AirflowEnv(tmp_path / "home", dags, airflow=str(venv / "bin" / "airflow"))
    airflow.home.mkdir()
    airflow.env["PYTHONPATH"] = ""  # nothing from the source tree
    airflow.migrate()
    providers = json.loads(airflow.airflow("providers", "list", "-o", "json").stdout.splitlines()[-1])
    assert {"package_name": "airflow-provider-kibo-cancel"}.items() <= next(
        p for p in providers if p["package_name"] == "airflow-provider-kibo-cancel"
    ).items()

    with emulator_process(executable=[str(venv / "bin" / "kibo-emulator")]) as url:  # its console script
        connection = {
            "conn_type": "kibo",
            "login": "demo-app-key",
            "password": "demo-shared-secret",
            "host": url,
            "extra": {"tenant_id": "30294", "environment": "sandbox"},
        }
        result = airflow.run_dag(
            "example_kibo_cancel_order", conf={"order_id": 1234}, connections={"kibo_default": connection}
        )
        state = requests.get(f"{url}/_emulator/state", timeout=5).json()
    assert result.state("cancel_order") == "success", result.output[-3000:]
    assert result.xcom[("cancel_order", -1)]["orderStatus"] == "CANCELED"
    assert state["cancels_applied"] == {"1234": 1}


def test_a_users_project_tests_its_dag_with_the_installed_fixtures(clean_venv: Path, tmp_path: Path) -> None:
    """The README's user project, outside the repository: its DAG test passes with the wheel's fixtures."""
    project = tmp_path / "shop"
    for name, text in user_project.FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH", "PYTEST"))}
    proc = subprocess.run(
        [str(clean_venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
