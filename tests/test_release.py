"""The package as a user gets it: wheel and sdist built and checked, the wheel in a clean environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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
from tests.test_readme import README, bash, latest_xcom, on_emulator, snippet, substitute

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
    # The licence: the file in both distributions, and the SPDX expression in the metadata.
    licence = (ROOT / "LICENSE").read_bytes()
    assert licence.lstrip().startswith(b"Apache License\n") and b"END OF TERMS AND CONDITIONS" in licence
    dist_info = f"airflow_provider_kibo_cancel-{version}.dist-info/"
    assert zipfile.ZipFile(wheel).read(f"{dist_info}licenses/LICENSE") == licence
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{prefix}LICENSE")
        assert member is not None and member.read() == licence
        pkg_info = archive.extractfile(f"{prefix}PKG-INFO")
        assert pkg_info is not None and b"\nLicense-Expression: Apache-2.0\n" in pkg_info.read()
    wheel_metadata = zipfile.ZipFile(wheel).read(f"{dist_info}METADATA")
    assert b"\nLicense-Expression: Apache-2.0\n" in wheel_metadata
    assert b"\nLicense-File: LICENSE\n" in wheel_metadata
    metadata = zipfile.ZipFile(wheel).read(
        f"airflow_provider_kibo_cancel-{version}.dist-info/entry_points.txt"
    )
    assert b"provider_info = airflow_provider_kibo_cancel:get_provider_info" in metadata
    assert b"kibo-emulator = airflow_provider_kibo_cancel.emulator.__main__:main" in metadata
    assert b"[pytest11]\nkibo = airflow_provider_kibo_cancel.pytest_plugin" in metadata


@pytest.fixture(scope="module")
def newcomer_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment made by the README's install commands, from the wheel `dist` built.

    Substituted: `make dist` (the module fixture ran `uv build`, which is what it runs), `python3.11` (the
    interpreter running the tests, the same version) and `pip install` (`uv pip install`: the same pinned
    result, without downloading; the venv is the one the README activated).
    """
    home = tmp_path_factory.mktemp("home")
    clone = tmp_path_factory.mktemp("clone")  # holds what the README's commands read from a clone
    (clone / "dist").symlink_to(dist)
    (clone / "requirements").symlink_to(ROOT / "requirements")
    block = substitute(
        snippet("--constraint requirements/dev.lock"),
        {
            "python3.11 ": f"{sys.executable} ",
            "make dist": ": make dist",
            "pip install ": f"{UV} pip install --compile-bytecode ",
        },
    )
    uv_cache = subprocess.run([UV, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "HOME": str(home), "UV_CACHE_DIR": uv_cache, "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    bash(block, env, cwd=clone)
    venv = home / "kibo-airflow"
    assert (venv / "bin" / "airflow").exists() and (venv / "bin" / "kibo-emulator").exists()
    return venv


def venv_airflow(venv: Path, tmp_path: Path, dags: Path) -> AirflowEnv:
    """An Airflow home run by the venv's own airflow, as from a shell where the venv is activated."""
    airflow = AirflowEnv(tmp_path / "home", dags, airflow=str(venv / "bin" / "airflow"))
    airflow.home.mkdir()
    airflow.env["PYTHONPATH"] = ""  # nothing from the source tree
    airflow.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{airflow.env['PATH']}"
    airflow.env["VIRTUAL_ENV"] = str(venv)
    airflow.migrate()
    return airflow


def test_the_built_wheel_works_in_a_clean_environment(newcomer_venv: Path, tmp_path: Path) -> None:
    python = str(newcomer_venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-c", "import airflow_provider_kibo_cancel as p; print(p.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(newcomer_venv) in installed  # not the source tree
    freeze = subprocess.run(
        [UV, "pip", "freeze", "--python", python], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "apache-airflow==3.3.2" in freeze  # pinned by the lock used as constraints
    assert not [name for name in freeze if name.startswith(("pytest==", "ruff==", "playwright=="))]

    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "example_dags", dags)
    airflow = venv_airflow(newcomer_venv, tmp_path, dags)
    providers = json.loads(airflow.airflow("providers", "list", "-o", "json").stdout.splitlines()[-1])
    assert {"package_name": "airflow-provider-kibo-cancel"}.items() <= next(
        p for p in providers if p["package_name"] == "airflow-provider-kibo-cancel"
    ).items()

    with emulator_process(executable=[str(newcomer_venv / "bin" / "kibo-emulator")]) as url:  # its script
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


def test_a_users_project_tests_its_dag_with_the_installed_fixtures(
    newcomer_venv: Path, tmp_path: Path
) -> None:
    """The README's user project, outside the repository: its DAG test passes with the wheel's fixtures."""
    python = str(newcomer_venv / "bin" / "python")
    # What a user adds for their own tests: pytest (pinned like the rest).
    constraints = str(ROOT / "requirements" / "dev.lock")
    subprocess.run(
        [UV, "pip", "install", "--quiet", "--python", python, "pytest", "--constraint", constraints],
        check=True,
    )
    project = tmp_path / "shop"
    for name, text in user_project.FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH", "PYTEST"))}
    proc = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


def test_the_readme_newcomer_path(newcomer_venv: Path, tmp_path: Path) -> None:
    """Installed as the README says, a new user starts `kibo-emulator`, adds the connection it prints with
    the CLI, tests it and runs the README's first DAG, each with the README's own command."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cancel_one_order.py").write_text(snippet("def cancel_one_order("))
    airflow = venv_airflow(newcomer_venv, tmp_path, dags)
    assert snippet("kibo-emulator            #").split("#")[0].split() == ["kibo-emulator"]
    # Substituted: --port 0, as 8090 may be taken on this machine; the URL it prints replaces 8090 below.
    emulator = subprocess.Popen(
        [str(newcomer_venv / "bin" / "kibo-emulator"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        printed = [emulator.stdout.readline() for _ in range(4)]
        url = printed[0].split()[3]
        assert printed[0].startswith(f"Kibo emulator on {url} "), printed
        add = on_emulator(
            snippet(
                "airflow connections add kibo_default --conn-type kibo --conn-host http://127.0.0.1:8090"
            ),
            url,
        )
        assert add.strip() == printed[3].strip()  # the README's command is the one the emulator prints
        bash(add, airflow.env)
        assert "Connection success!" in bash(snippet("airflow connections test kibo_default"), airflow.env)
        run = bash(snippet("airflow dags test cancel_one_order"), airflow.env)
        state = requests.get(f"{url}/_emulator/state", timeout=5).json()
    finally:
        emulator.send_signal(signal.SIGINT)
        emulator.wait(timeout=10)
    assert emulator.returncode == 0
    order = latest_xcom(airflow, "cancel_one_order", "cancel_order")
    assert (order["orderID"], order["orderStatus"]) == (1001, "CANCELED"), run[-3000:]
    assert state["cancels_applied"] == {"1001": 1}


def test_the_readme_checkout_install_command(newcomer_venv: Path) -> None:
    """The README's install from a checkout, without building first (run last: it replaces the wheel)."""
    (command,) = re.findall(r"`(pip install \. --constraint requirements/dev\.lock)`", README.read_text())
    python = str(newcomer_venv / "bin" / "python")
    subprocess.run(
        [UV, "pip", "uninstall", "--quiet", "--python", python, "airflow-provider-kibo-cancel"], check=True
    )
    env = {**os.environ, "VIRTUAL_ENV": str(newcomer_venv), "PYTHONPATH": ""}
    # Substituted: `uv pip install` for `pip install`, as for the wheel.
    bash(substitute(command, {"pip install ": f"{UV} pip install --compile-bytecode "}), env, cwd=ROOT)
    shown = subprocess.run(
        [
            python,
            "-c",
            "import airflow_provider_kibo_cancel as p, importlib.metadata as m; "
            "print(p.__file__); "
            "print(m.distribution('airflow-provider-kibo-cancel').read_text('direct_url.json'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=newcomer_venv,
    ).stdout
    assert shown.startswith(str(newcomer_venv))  # copied into the venv, not an editable link to the tree
    assert '"editable":true' not in shown.replace(" ", "")
    assert (newcomer_venv / "bin" / "kibo-emulator").exists()
