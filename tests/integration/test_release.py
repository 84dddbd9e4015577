"""The package as a user gets it: wheel and sdist built and checked, the quick start walked as written in a
clean environment, the built wheel in that environment."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import airflow_provider_kibo_cancel
from devtools.airflow_local import AirflowEnv, free_port
from devtools.emulator_process import emulator_process
from tests import user_project
from tests.integration.test_readme import DOCS, bash, latest_xcom, on_emulator, snippet, substitute
from tests.support import debian_chromium

pytestmark = (
    pytest.mark.once
)  # builds and installs from dev.lock (the main leg's), whichever venv runs pytest

ROOT = Path(__file__).parents[2]
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


def clean_env(home: Path) -> dict[str, str]:
    """A new user's shell: their own HOME, nothing of this test session's Airflow or Python set-up."""
    uv_cache = subprocess.run([UV, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(home), "UV_CACHE_DIR": uv_cache, "PYTHONPATH": ""}


@pytest.fixture(scope="module")
def newcomer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment made by the quick start's install commands, from this checkout.

    Substituted: `python3` (the interpreter running the tests, the same version) and `pip install`
    (`uv pip install`: the same pinned result, without downloading; the venv is the one the snippet
    activated).
    """
    home = tmp_path_factory.mktemp("home")
    block = substitute(
        snippet("quickstart-install"),
        {"python3 ": f"{sys.executable} ", "pip install ": f"{UV} pip install --compile-bytecode "},
    )
    bash(block, clean_env(home), cwd=ROOT)
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


def listening_addresses(session_leader: int) -> set[str]:
    """The local addresses on which the processes of a session (a process group) listen for TCP."""
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != session_leader:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue  # gone meanwhile
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                hex_address = fields[1].split(":")[0]
                raw = bytes.fromhex(hex_address)
                # /proc/net/tcp* print each 32-bit word of the address in host (little-endian) order.
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
                addresses.add(
                    ":".join(w.hex() for w in words) if len(raw) == 16 else ".".join(map(str, words[0]))
                )
    return addresses


@contextlib.contextmanager
def started(script: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running snippet (a server the user leaves running), stopped with its whole session after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_quick_start(newcomer_venv: Path, tmp_path: Path) -> None:
    """docs/index.md's quick start, step by step as a new user runs it in the venv it made: an Airflow home
    and its database, `kibo-emulator` in a second terminal, the connection it prints, the bulk DAG saved
    where the page says, `airflow dags test`, and the API server on 127.0.0.1 showing the run's XCom
    `summary` and asset event. Substituted: free ports for the emulator's 8090 and the API server's 8080."""
    home = newcomer_venv.parent
    env = clean_env(home)
    activate = ". ~/kibo-airflow/bin/activate\n"  # the shell the install snippet left activated
    setup = snippet("quickstart-home")
    exports = "".join(line + "\n" for line in setup.splitlines() if line.startswith("export "))
    bash(activate + setup, env)
    airflow_home = home / "kibo-airflow" / "airflow"
    assert (airflow_home / "airflow.db").exists() and (airflow_home / "dags").is_dir()
    (airflow_home / "dags" / "cancel_orders_in_bulk.py").write_text(snippet("bulk-dag"))

    assert snippet("emulator").split("#")[0].split() == ["kibo-emulator"]
    # The second terminal: the same venv activated, the emulator on a free port instead of 8090.
    emulator = subprocess.Popen(
        ["bash", "-c", activate + "exec kibo-emulator --port 0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        printed = [emulator.stdout.readline() for _ in range(4)]
        url = printed[0].split()[3]
        assert printed[0].startswith(f"Kibo emulator on {url} "), printed
        add = on_emulator(snippet("emulator-connection"), url)
        assert add.strip() == printed[3].strip()  # the page's command is the one the emulator prints
        run = bash(activate + exports + add + "\n" + snippet("quickstart-run"), env)
        state = requests.get(f"{url}/_emulator/state", timeout=5).json()
    finally:
        emulator.send_signal(signal.SIGINT)
        emulator.wait(timeout=10)
    assert state["cancels_applied"] == {"1002": 1, "1003": 1, "1004": 1}, run[-3000:]
    assert "Loading example" not in run and "example_bash_operator" not in run  # examples left out
    airflow = AirflowEnv(airflow_home, airflow_home / "dags", airflow=str(newcomer_venv / "bin" / "airflow"))
    summary = latest_xcom(airflow, "cancel_orders_in_bulk", "cancel_orders")
    assert summary["canceled"] == [1002, 1003, 1004], run[-3000:]

    look_at_the_ui(airflow_home, env, activate + exports, tmp_path)


def look_at_the_ui(airflow_home: Path, env: dict[str, str], shell: str, tmp_path: Path) -> None:
    """Step 7: the UI, on 127.0.0.1 only; log in as the page says and find what it points at."""
    port = free_port()
    ui = substitute(snippet("quickstart-ui"), {"--port 8080": f"--port {port}"})
    base = f"http://127.0.0.1:{port}"
    with started(shell + "exec " + ui, env, tmp_path / "api-server.log") as server:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=10).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "API server not healthy"
            time.sleep(0.5)
        assert listening_addresses(server.pid) == {"127.0.0.1"}
        passwords = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
        login = requests.post(
            f"{base}/auth/token", json={"username": "admin", "password": passwords["admin"]}, timeout=30
        )
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

        def api(path: str) -> Any:
            answer = session.get(f"{base}/api/v2{path}", timeout=30)
            assert answer.ok, (path, answer.status_code, answer.text[:500])
            return answer.json()

        (dag_run,) = api("/dags/cancel_orders_in_bulk/dagRuns")["dag_runs"]
        entry = api(
            f"/dags/cancel_orders_in_bulk/dagRuns/{dag_run['dag_run_id']}/taskInstances/cancel_orders"
            "/xcomEntries/summary"
        )
        value = entry["value"] if isinstance(entry["value"], dict) else json.loads(entry["value"])
        assert value["canceled"] == [1002, 1003, 1004]
        events = api("/assets/events?source_dag_id=cancel_orders_in_bulk")["asset_events"]
        assert [(e["uri"], e["extra"]["canceled"]) for e in events] == [
            ("kibo://30294/orders/canceled", [1002, 1003, 1004])
        ]
        if os.environ.get("KIBO_UPDATE_SCREENSHOT"):  # the README's picture of a run
            picture_of_the_run(base, passwords["admin"], dag_run["dag_run_id"])


def picture_of_the_run(base: str, password: str, run_id: str) -> None:
    """docs/quickstart-xcom.png: the bulk task's XCom in the UI, as the quick start's step 7 finds it."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 (installed for the newest Airflow only)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=debian_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{base}/", wait_until="networkidle")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_load_state("networkidle")
            page.goto(
                f"{base}/dags/cancel_orders_in_bulk/runs/{run_id}/tasks/cancel_orders/xcom",
                wait_until="networkidle",
            )
            row = page.get_by_role("row").filter(has_text="summary")
            row.locator(".codicon-folding-collapsed").first.click(force=True)  # open the summary's value
            page.wait_for_timeout(1000)
            page.screenshot(path=str(DOCS / "quickstart-xcom.png"))
        finally:
            browser.close()


def test_the_built_wheel_works_in_a_clean_environment(
    dist: Path, newcomer_venv: Path, tmp_path: Path
) -> None:
    """The wheel `make dist` builds, installed as the quick start's page says, over the checkout install."""
    python = str(newcomer_venv / "bin" / "python")
    (wheel,) = dist.glob("*.whl")
    subprocess.run(
        [
            UV,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "--compile-bytecode",
            "--reinstall-package",
            "airflow-provider-kibo-cancel",
            str(wheel),
            "--constraint",
            str(ROOT / "requirements" / "dev.lock"),
        ],
        check=True,
    )
    direct_url = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; "
            "print(m.distribution('airflow-provider-kibo-cancel').read_text('direct_url.json'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert wheel.name in direct_url
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
    scratch = tmp_path / "tmp"  # the project's temporary files, to see that it leaves none behind
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)
    where = [python, "-c", "import tempfile; print(tempfile.gettempdir())"]
    tmpdir = subprocess.run(where, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert tmpdir == str(scratch)
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
    assert not list(scratch.glob("airflow-home-*")), "the conftest left its AIRFLOW_HOME behind"
