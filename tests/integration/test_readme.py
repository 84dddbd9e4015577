"""Every python and bash snippet of README.md and of the documentation (docs/) runs: as pasted, or with the
substitutions named here.

- A snippet is the fenced block right below a `<!-- snippet: NAME -->` line; it is found by that name,
  never by its text. Every python or bash block of those pages must have one, and every name is claimed
  below by the test that runs it. A snippet shown on several pages (the install, the first DAG) must read
  the same on each.
- Snippets that address the emulator's default port 8090 run against `kibo-emulator` started, as the pages
  say, but with `--port 0` (this machine may have 8090 taken): its URL replaces `http://127.0.0.1:8090`.
- Snippets for the real Kibo run as far as they can without it: the connection is added or parsed, and
  the settings the hook derives from it are checked (the Kibo host, the tenant, the credentials).
- The quick start runs in tests/integration/test_release.py (it builds a virtual environment), the
  trigger commands under a real scheduler below; `make test` is the suite itself and is not run from
  inside it.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from devtools.airflow_local import XCOM_STORED_TWICE_ENCODED, AirflowEnv, AirflowStack
from tests import user_project

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
DEFAULT_URL = "http://127.0.0.1:8090"

USER_PROJECT_CHECK = (
    "tests.integration.test_readme::test_the_docs_show_the_user_project_the_release_test_runs"
)
QUICK_START = "tests.integration.test_release::test_the_quick_start"
FIRST_DAG = "tests.integration.test_readme::test_the_emulator_connection_and_the_first_dag"
# Each snippet name is claimed by the test that runs it; a snippet nobody runs fails
# test_every_snippet_is_run.
CLAIMS: dict[str, str] = {
    "setup": "tests.integration.test_readme::test_make_demo_runs",
    "quickstart-install": QUICK_START,
    "quickstart-home": QUICK_START,
    "quickstart-run": QUICK_START,
    "quickstart-ui": QUICK_START,
    "emulator": "tests.integration.test_readme::test_the_environment_connections_to_the_emulator",
    "emulator-connection": FIRST_DAG,
    "connection-test": FIRST_DAG,
    "first-dag": FIRST_DAG,
    "first-dag-test": FIRST_DAG,
    "trigger": "tests.integration.test_readme::test_the_trigger_instructions",
    "bulk-dag": "tests.integration.test_readme::test_the_bulk_snippet_runs",
    "cli-connection-kibo": "tests.integration.test_readme::test_the_cli_connection_to_kibo",
    "env-connection-kibo": "tests.integration.test_readme::test_the_environment_connections_to_kibo",
    "cli-connection-redis": "tests.integration.test_readme::test_the_cli_connections_of_the_tenant_budget",
    "env-connection-emulator": (
        "tests.integration.test_readme::test_the_environment_connections_to_the_emulator"
    ),
    "assets": "tests.integration.test_readme::test_the_asset_snippet_runs",
    "emulator-in-process": "tests.integration.test_readme::test_the_in_process_emulator_snippet_runs",
    # The user project runs in tests/integration/test_release.py; this test checks the docs show it as it
    # runs.
    "user-project-dag": USER_PROJECT_CHECK,
    "user-project-conftest": USER_PROJECT_CHECK,
    "user-project-test": USER_PROJECT_CHECK,
}
USER_PROJECT_SNIPPETS = {
    "dags/cancel_customer_order.py": "user-project-dag",
    "tests/conftest.py": "user-project-conftest",
    "tests/test_cancel_customer_order.py": "user-project-test",
}

SNIPPET = re.compile(
    r"^<!-- snippet: ([a-z0-9-]+) -->\n```(python|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE
)
RUNNABLE_FENCE = re.compile(r"^\s*```(python|bash)\s*$", re.MULTILINE)


def pages() -> list[Path]:
    """README.md and the documentation's pages: where runnable snippets live."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def marked_snippets() -> list[tuple[Path, str, str, str]]:
    """(page, name, language, text) of every marked snippet."""
    return [
        (page, name, lang, text) for page in pages() for name, lang, text in SNIPPET.findall(page.read_text())
    ]


def snippet(name: str) -> str:
    """The text of the snippet `name`, the same on every page that shows it."""
    texts = {text for _, found, _, text in marked_snippets() if found == name}
    assert len(texts) == 1, f"snippet {name!r}: {len(texts)} different texts (0: no page has it)"
    return texts.pop()


def test_the_docs_show_the_user_project_the_release_test_runs() -> None:
    """tests/integration/test_release.py runs these files' pytest against the installed package; the docs
    show them."""
    for name, text in user_project.FILES.items():
        shown = snippet(USER_PROJECT_SNIPPETS[name])
        assert shown == f"# {name}\n{text}", (
            f"docs/testing.md does not show {name} as tests/user_project.py has it"
        )


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the snippet no longer has {old!r} in:\n{text}"
        text = text.replace(old, new)
    return text


def bash(script: str, env: dict[str, str], cwd: Path = ROOT) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{script}\nexited {result.returncode}:\n{output[-5000:]}"
    return output


def exports(block: str) -> list[str]:
    """The values the block's `export AIRFLOW_CONN_KIBO_DEFAULT=...` lines set, as bash sets them."""
    statements = re.split(r"\n(?=export )", block.strip())
    assert len(statements) == 2, statements
    return [
        bash(f'{statement}\nprintf %s "$AIRFLOW_CONN_KIBO_DEFAULT"', dict(os.environ))
        for statement in statements
    ]


@pytest.fixture(scope="module")
def readme_emulator() -> Iterator[str]:
    """The emulator page's `kibo-emulator` command, on a free port; yields the URL it printed."""
    command = snippet("emulator").split("#")[0].split()
    assert command == ["kibo-emulator"]
    proc = subprocess.Popen(
        [str(BIN / "kibo-emulator"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Kibo emulator on http://127.0.0.1:"), first
        yield first.split()[3]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def on_emulator(text: str, url: str) -> str:
    """A snippet written for the default port, pointed at the emulator the test started."""
    encoded = "127.0.0.1%3A8090"  # the URI form's host
    forms = {DEFAULT_URL: url, encoded: encoded.replace("8090", url.rsplit(":", 1)[1])}
    present = {old: new for old, new in forms.items() if old in text}
    assert present, f"no emulator address in:\n{text}"
    return substitute(text, present)


def emulator_state(url: str) -> dict[str, Any]:
    state: dict[str, Any] = requests.get(f"{url}/_emulator/state", timeout=10).json()
    return state


@pytest.fixture(scope="module")
def readme_airflow(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A fresh Airflow home whose DAGs folder holds the DAG snippets, saved as the pages say."""
    dags = tmp_path_factory.mktemp("readme_dags")
    (dags / "cancel_one_order.py").write_text(snippet("first-dag"))
    (dags / "cancel_orders_in_bulk.py").write_text(snippet("bulk-dag"))
    (dags / "refund_canceled_orders.py").write_text(snippet("assets"))
    env = AirflowEnv(tmp_path_factory.mktemp("readme_home"), dags)
    env.env["PATH"] = f"{BIN}{os.pathsep}{env.env.get('PATH', '')}"  # `airflow` as an activated venv has it
    env.migrate()
    return env


def fernet_key(env: AirflowEnv) -> str:
    """The key Airflow generated for this home, to read a password as Airflow stored it."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(env.home / "airflow.cfg")
    return config["core"]["fernet_key"]


def latest_xcom(env: AirflowEnv, dag_id: str, task_id: str) -> Any:
    with contextlib.closing(sqlite3.connect(env.home / "airflow.db")) as db:
        (value,) = db.execute(
            "SELECT x.value FROM xcom x JOIN dag_run r ON x.dag_id = r.dag_id AND x.run_id = r.run_id "
            "WHERE x.dag_id = ? AND x.task_id = ? AND x.key = 'return_value' ORDER BY r.id DESC LIMIT 1",
            (dag_id, task_id),
        ).fetchone()
    decoded = json.loads(value)
    return json.loads(decoded) if XCOM_STORED_TWICE_ENCODED else decoded


def test_every_snippet_is_run() -> None:
    for page in pages():
        text = page.read_text()
        fences = len(RUNNABLE_FENCE.findall(text))
        marked = len(SNIPPET.findall(text))
        assert fences == marked, f"{page.name}: {fences - marked} python/bash block(s) without a snippet line"
    found = marked_snippets()
    assert len(found) >= 20
    for page, name, lang, _ in found:
        assert name in CLAIMS, f"no test runs the {lang} snippet {name!r} of {page.name}"
    for name, test in CLAIMS.items():
        snippet(name)  # present, and the same wherever it is shown
        module, _, function = test.partition("::")
        assert callable(getattr(importlib.import_module(module), function, None)), f"{test} is gone"


def test_the_cli_connection_to_kibo(readme_airflow: AirflowEnv) -> None:
    # Substituted: another connection id, so this run does not take kibo_default from the emulator tests.
    block = substitute(snippet("cli-connection-kibo"), {"kibo_default": "kibo_real"})
    env = {**readme_airflow.env, "KIBO_APP_KEY": "app-key-1", "KIBO_SHARED_SECRET": "secret-1"}
    bash(block, env)
    with contextlib.closing(sqlite3.connect(readme_airflow.home / "airflow.db")) as db:
        row = db.execute(
            "SELECT conn_type, host, login, password, extra FROM connection WHERE conn_id = 'kibo_real'"
        ).fetchone()
    conn_type, host, login, *encrypted = row
    password, extra = (
        Fernet(fernet_key(readme_airflow)).decrypt(value.encode()).decode() for value in encrypted
    )
    assert (conn_type, login, password) == ("kibo", "app-key-1", "secret-1")
    settings = KiboConnectionSettings.from_connection(
        "kibo_real", host=host, login=login, password=password, extra=json.loads(extra)
    )
    assert settings.base_url == "https://30294-translation.sandbox.mozu.com"
    assert (settings.tenant_id, settings.site_id) == ("30294", "50525")


def test_the_cli_connections_of_the_tenant_budget(readme_airflow: AirflowEnv) -> None:
    # Substituted: connection ids of their own, so this run leaves kibo_default to the emulator tests.
    block = substitute(
        snippet("cli-connection-redis"),
        {
            "kibo_default": "kibo_budgeted",
            "add kibo_redis ": "add kibo_redis_docs ",
            '"kibo_redis"': '"kibo_redis_docs"',
        },
    )
    bash(block, readme_airflow.env)
    with contextlib.closing(sqlite3.connect(readme_airflow.home / "airflow.db")) as db:
        rows = dict(
            db.execute(
                "SELECT conn_id, extra FROM connection WHERE conn_id IN ('kibo_budgeted', 'kibo_redis_docs')"
            ).fetchall()
        )
        redis_row = db.execute(
            "SELECT conn_type, host, port, schema FROM connection WHERE conn_id = 'kibo_redis_docs'"
        ).fetchone()
    assert tuple(redis_row) == ("redis", "redis.internal", 6379, "2")
    extra = Fernet(fernet_key(readme_airflow)).decrypt(rows["kibo_budgeted"].encode()).decode()
    settings = KiboConnectionSettings.from_connection(
        "kibo_budgeted", host=None, login="APP_KEY", password="SECRET", extra=json.loads(extra)
    )
    assert (settings.tenant_requests_per_second, settings.rate_limit_conn_id) == (40.0, "kibo_redis_docs")


def test_the_environment_connections_to_kibo(monkeypatch: pytest.MonkeyPatch) -> None:
    json_form, uri_form = exports(snippet("env-connection-kibo"))
    for value in (json_form, uri_form):
        monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", value)
        settings = KiboHook().settings
        assert settings.base_url == "https://30294-translation.sandbox.mozu.com", value
        assert settings.auth_url == "https://home.mozu.com/api/platform/applications/authtickets/oauth"
        assert (settings.client_id, settings.client_secret) == ("APP_KEY", "SECRET")
        assert (settings.tenant_id, settings.environment) == ("30294", "sandbox")


def test_the_environment_connections_to_the_emulator(
    readme_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = snippet("env-connection-emulator")
    json_form, uri_form = exports(on_emulator(block, readme_emulator))
    for value, order_id in ((json_form, 1100), (uri_form, 1101)):
        monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", value)
        hook = KiboHook()
        assert hook.settings.base_url == readme_emulator, value
        assert hook.test_connection()[0] is True
        assert hook.cancel_order(order_id, "created_by_mistake")["orderStatus"] == "CANCELED"
    assert {"1100": 1, "1101": 1}.items() <= emulator_state(readme_emulator)["cancels_applied"].items()


def test_the_emulator_connection_and_the_first_dag(readme_airflow: AirflowEnv, readme_emulator: str) -> None:
    add = snippet("emulator-connection")
    bash(on_emulator(add, readme_emulator), readme_airflow.env)
    tested = bash(snippet("connection-test"), readme_airflow.env)
    assert "Connection success!" in tested, tested
    # The connection comes from the metadata database, as the CLI stored it: nothing in the environment.
    assert not [k for k in readme_airflow.env if k.startswith("AIRFLOW_CONN_")]
    run = bash(snippet("first-dag-test"), readme_airflow.env)
    order = latest_xcom(readme_airflow, "cancel_one_order", "cancel_order")
    assert order["orderID"] == 1001 and order["orderStatus"] == "CANCELED", run[-3000:]
    assert emulator_state(readme_emulator)["cancels_applied"]["1001"] == 1


def test_the_first_dag_refuses_a_run_without_an_order_id() -> None:
    namespace: dict[str, Any] = {}
    exec(snippet("first-dag"), namespace)
    dag = namespace["cancel_one_order"]()
    with pytest.raises(Exception, match="Invalid input for param order_id: No value passed"):
        dag.params.validate()
    dag.params["order_id"] = 1001
    assert dag.params.validate() == {"order_id": 1001, "disposition_reason": "customer_changed_mind"}


def test_the_bulk_snippet_runs(readme_airflow: AirflowEnv, readme_emulator: str) -> None:
    connection = json.loads(exports(on_emulator(snippet("env-connection-emulator"), readme_emulator))[0])
    result = readme_airflow.run_dag("cancel_orders_in_bulk", connections={"kibo_default": connection})
    assert result.state("cancel_orders") == "success", result.output[-3000:]
    summary = result.xcom[("cancel_orders", -1)]
    assert summary["canceled"] == [1002, 1003, 1004]  # input order
    assert summary["failed"] == [] and summary["invalid"] == []
    cancels = emulator_state(readme_emulator)["cancels_applied"]
    assert [cancels.get(str(order_id)) for order_id in (1002, 1003, 1004)] == [1, 1, 1]


def test_the_asset_snippet_runs(readme_airflow: AirflowEnv, readme_emulator: str) -> None:
    connection = json.loads(exports(on_emulator(snippet("env-connection-emulator"), readme_emulator))[0])
    result = readme_airflow.run_dag("cancel_unpaid_orders", connections={"kibo_default": connection})
    assert result.state("cancel_orders") == "success", result.output[-3000:]
    with contextlib.closing(sqlite3.connect(readme_airflow.home / "airflow.db")) as db:
        (extra,) = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = 'kibo://30294/orders/canceled' ORDER BY e.id DESC LIMIT 1"
        ).fetchone()
    event = json.loads(extra)
    assert (event["tenant_id"], event["canceled"]) == ("30294", [1005, 1006])


def test_the_in_process_emulator_snippet_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(snippet("emulator-in-process"), namespace)
    emulator = namespace["emulator"]
    assert emulator.clients == {"key": "secret"}
    assert len(emulator.order(1099)) > 10
    assert emulator._server is None  # the with-block stopped it


@pytest.mark.once  # `make demo` runs in .venv, the main leg's, whichever venv runs the tests
def test_make_demo_runs() -> None:
    (line,) = [line for line in snippet("setup").splitlines() if line.startswith("make demo")]
    command = line.split("#")[0].split()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "XCom return_value of task cancel_order (the canceled order):" in result.stdout
    assert "orderStatus    CANCELED" in result.stdout


def test_the_trigger_instructions(readme_airflow: AirflowEnv, readme_emulator: str) -> None:
    """`airflow dags unpause` and `trigger` as the operator page gives them, with scheduler, DAG processor
    and API server running: the run is picked up and cancels the order."""
    block = substitute(snippet("trigger"), {'{"order_id": 1001}': '{"order_id": 1201}'})
    connection = json.loads(exports(on_emulator(snippet("env-connection-emulator"), readme_emulator))[0])
    with AirflowStack(
        readme_airflow, extra_env={"AIRFLOW_CONN_KIBO_DEFAULT": json.dumps(connection)}
    ) as stack:
        stack.wait_for_dag("cancel_one_order")
        bash(block, stack.env)
        runs = stack.api("GET", "/api/v2/dags/cancel_one_order/dagRuns")["dag_runs"]
        (run,) = [run for run in runs if run["conf"] == {"order_id": 1201}]
        state = stack.wait_for_run("cancel_one_order", run["dag_run_id"])
    assert state == "success", (readme_airflow.home / "scheduler.log").read_text()[-5000:]
    assert emulator_state(readme_emulator)["cancels_applied"]["1201"] == 1
