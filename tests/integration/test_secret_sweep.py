"""The secret sweep: one DAG run through every failure mode that handles a secret, then every task log,
XCom value and rendered template field searched for the shared secrets, the tokens and the URL password."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowEnv, AirflowStack
from tests.support import APP_KEY, OPEN_ORDERS, SHARED_SECRET, TENANT, kibo_connection

DAG_ID = "kibo_secret_sweep"
WRONG_SECRET = "wrong-shared-secret-3141"
REVOKED_TOKEN = "revoked-pre-issued-token-2718"
URL_PASSWORD = "url-pa/ss:w0rd-8812"


@dataclass
class Sweep:
    home: Path
    emulators: list[KiboEmulator]
    states: dict[str, str]
    tries: dict[str, int]

    def secrets(self) -> set[str]:
        tokens = {token for emu in self.emulators for token in emu.issued_tokens()}
        return {SHARED_SECRET, WRONG_SECRET, REVOKED_TOKEN, URL_PASSWORD, *tokens}

    def sources(self) -> Iterator[tuple[str, str]]:
        """(where, text) for every log file (tasks and Airflow's own), XCom value and rendered-fields row."""
        logs = [path for path in (self.home / "logs").rglob("*") if path.is_file()]
        for path in [*logs, *self.home.glob("*.log")]:
            yield f"log {path.relative_to(self.home)}", path.read_text(errors="replace")
        with closing(sqlite3.connect(self.home / "airflow.db")) as db:
            for task_id, key, value in db.execute(
                "SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (DAG_ID,)
            ):
                text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                yield f"xcom {task_id}/{key}", text
            for task_id, fields in db.execute(
                "SELECT task_id, rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ?",
                (DAG_ID,),
            ):
                text = fields.decode(errors="replace") if isinstance(fields, bytes) else str(fields)
                yield f"rendered fields {task_id}", text

    def find(self, values: set[str]) -> list[tuple[str, str]]:
        """(value, where) for each value found anywhere, as it is or escaped in JSON."""
        forms = {value: {value, json.dumps(value)[1:-1]} for value in values}
        return [
            (value, where)
            for where, text in self.sources()
            for value in values
            if any(form in text for form in forms[value])
        ]

    def task_log(self, task_id: str, attempt: int) -> str:
        (path,) = (self.home / "logs").glob(
            f"dag_id={DAG_ID}/run_id=*/task_id={task_id}/attempt={attempt}.log"
        )
        return path.read_text()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweep]:
    # The production path: scheduler, LocalExecutor workers and API server, so that tasks write real
    # log files (`airflow dags test` only prints them, and its --use-executor fails on Airflow 3.0).
    airflow_env = AirflowEnv(tmp_path_factory.mktemp("sweep_home"), Path(__file__).parents[1] / "dags")
    airflow_env.migrate()
    with ExitStack() as stack:
        main, broken_oauth, odd_expiry = (
            stack.enter_context(KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}))
            for _ in range(3)
        )
        for emu in (main, broken_oauth, odd_expiry):
            emu.add_orders(OPEN_ORDERS)
        main.inject("status", status=401, times=2, order_id=1063)
        main.inject("status", status=503, times=None, order_id=1065)
        # Cut after the whole access token: the answer is not JSON, yet holds a live token.
        broken_oauth.inject("truncated", endpoint="oauth", size=60, times=None)
        odd_expiry.inject("token_fields", endpoint="oauth", fields={"expires_in": "soon"}, times=None)
        connections = {
            "kibo_default": kibo_connection(main),
            "kibo_wrong_secret": kibo_connection(main, password=WRONG_SECRET),
            "kibo_revoked_token": kibo_connection(main, login="", password="", access_token=REVOKED_TOKEN),
            "kibo_fast": kibo_connection(main, max_attempts=2),
            "kibo_broken_oauth": kibo_connection(broken_oauth, max_attempts=1),
            "kibo_odd_expiry": kibo_connection(odd_expiry),
            "kibo_userinfo": {
                **kibo_connection(main),
                "host": f"https://{APP_KEY}:{URL_PASSWORD}@kibo-proxy.example",
            },
            "kibo_plain_http": {**kibo_connection(main), "host": "http://10.1.2.3:8080"},
        }
        env = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()}
        # One API server worker: starting four on a busy 2-core machine can outlast the health wait.
        env["AIRFLOW__API__WORKERS"] = "1"
        airflow = stack.enter_context(AirflowStack(airflow_env, extra_env=env))
        airflow.wait_for_dag(DAG_ID)
        airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        run = airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        airflow.wait_for_run(DAG_ID, run["dag_run_id"], timeout=400)
        with closing(sqlite3.connect(airflow_env.home / "airflow.db")) as db:
            rows = db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run["dag_run_id"]),
            ).fetchall()
        states = {task_id: state for task_id, state, _ in rows}
        tries = {task_id: try_number for task_id, _, try_number in rows}
    # Airflow is stopped here, so every log is complete before it is searched.
    yield Sweep(airflow_env.home, [main, broken_oauth, odd_expiry], states, tries)


@pytest.mark.parametrize(
    ("task_id", "state", "tries", "message"),
    [
        ("success", "success", 1, "Order 1061: orderStatus CANCELED"),
        (
            "wrong_secret",
            "failed",
            1,
            "Kibo refused the Application Key / Shared Secret (login / password) of connection ",
        ),
        ("unauthorized_401", "failed", 1, "refreshing the token once"),
        (
            "revoked_access_token",
            "failed",
            1,
            "Kibo POST /api/v2/order/action/cancel failed. Kibo refused the pre-issued access token",
        ),
        ("server_error_5xx", "failed", 2, "HTTP 503 on attempt 1 of 2"),
        ("unparsable_oauth_answer", "failed", 2, "not JSON: application/json, 60 bytes"),
        ("unusable_expires_in", "success", 1, "no usable expires_in (a string of 4 characters)"),
        ("userinfo_url", "failed", 1, "must not contain credentials (user:password@)"),
        ("plain_http_refused", "failed", 1, "'http://10.1.2.3:8080' uses plain http to a host"),
        ("dry_run", "success", 1, "Dry run, nothing sent."),
        ("control_character", "failed", 1, "contains U+001B ESCAPE at position 2"),
        ("oversized_order_id", "failed", 1, "order_id must be a 64-bit integer"),
        ("deeply_nested_orders", "failed", 1, "orders is nested more than 3 levels deep"),
    ],
)
def test_each_failure_mode_ends_as_expected(
    sweep: Sweep, task_id: str, state: str, tries: int, message: str
) -> None:
    assert (sweep.states[task_id], sweep.tries[task_id]) == (state, tries)
    assert message in sweep.task_log(task_id, tries)  # the log file of the task's last try


def test_no_secret_in_any_log_xcom_or_rendered_field(sweep: Sweep) -> None:
    secrets = sweep.secrets()
    # Tokens of every kind were issued: refreshed, truncated in the answer, with an odd expiry.
    assert len(secrets) >= 4 + 2 * 6
    assert sweep.find(secrets) == []


def test_the_sweep_reaches_every_source_and_can_fail(sweep: Sweep) -> None:
    wheres = [where for where, _ in sweep.sources()]
    assert any(where.startswith("log ") for where in wheres), "no task log files to search"
    # One value known to be in each kind of source: the search really reads them.
    found: dict[str, set[str]] = {}
    for value, where in sweep.find(
        {"Kibo refused the Application Key", '"dry_run": true', "sweep-note-7731"}
    ):
        found.setdefault(value, set()).add(where)
    assert any(
        "task_id=wrong_secret/attempt=1.log" in where for where in found["Kibo refused the Application Key"]
    )
    assert "xcom dry_run/return_value" in found['"dry_run": true']
    assert "rendered fields success" in found["sweep-note-7731"]
    # And a planted secret is found.
    planted = sweep.home / "logs" / "planted.log"
    planted.write_text(f"oops {SHARED_SECRET}")
    try:
        assert sweep.find({SHARED_SECRET}) == [(SHARED_SECRET, "log logs/planted.log")]
    finally:
        planted.unlink()
