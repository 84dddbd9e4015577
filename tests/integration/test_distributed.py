"""The provider where users run it: CeleryExecutor with two workers, PostgreSQL, Redis and a triggerer.

`make test-distributed` (its own venv; `make test` leaves this module out through the `distributed`
marker). One stack for the whole module (devtools/distributed.py), started on 127.0.0.1 and torn down
afterwards, also when a test fails. The runs to make and what each must show are in SCENARIOS below.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from devtools.distributed import (
    WORKER_HOSTNAMES,
    DistributedStack,
    distributed_stack,
    ensure_system_packages,
    listeners_of_children,
    postgres_server,
    redis_server,
)
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection, unscheduled_copies

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

EXAMPLES = Path(__file__).parents[2] / "example_dags"
# DAG files copied into the stack's dags folder.
DAG_FILES = [
    EXAMPLES / "example_kibo_reconciliation.py",
    EXAMPLES / "example_kibo_canceled_orders_consumer.py",
    Path(__file__).parents[1] / "dags" / "kibo_deferral.py",
    Path(__file__).parents[1] / "dags_durable" / "kibo_durable_crash.py",
]
# The examples read their orders from data/orders_to_cancel.csv beside the DAG file: the copy gets these.
ORDERS = list(range(1001, 1061))
REASONS = ("customer_changed_mind", "created_by_mistake", "other")
POOL_SLOTS = 4
BULK_MAX_CONCURRENCY = 8  # example_kibo_bulk_reconciliation's max_concurrency
CANCEL_LATENCY = 1.0  # seconds the emulator takes per request: long enough for cancels to overlap


@dataclass
class RunRecord:
    """One DAG run as the REST API showed it while it ran and after it ended."""

    dag_id: str
    run_id: str
    state: str
    run: dict[str, Any]
    task_instances: list[dict[str, Any]]
    states_seen: dict[tuple[str, int], set[str]] = field(default_factory=dict)

    def tis(self, task_id: str) -> list[dict[str, Any]]:
        return [ti for ti in self.task_instances if ti["task_id"] == task_id]

    def seconds(self, task_id: str | None = None) -> float:
        """Wall time of the run, or of one task (a mapped one: first start to last end)."""
        items = [self.run] if task_id is None else self.tis(task_id)
        start = min(datetime.fromisoformat(i["start_date"]) for i in items)
        end = max(datetime.fromisoformat(i["end_date"]) for i in items)
        return (end - start).total_seconds()


def trigger(stack: DistributedStack, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    stack.airflow.wait_for_dag(dag_id)
    stack.airflow.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    run = stack.airflow.api(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
    )
    return str(run["dag_run_id"])


def watch(stack: DistributedStack, dag_id: str, run_id: str, timeout: float = 600) -> RunRecord:
    """Poll the run to its end, noting every state each task instance was seen in (e.g. `deferred`)."""
    seen: dict[tuple[str, int], set[str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        stack.airflow.fail_if_a_process_ended()
        run = stack.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        tis = stack.airflow.task_instances(dag_id, run_id)
        for ti in tis:
            seen.setdefault((ti["task_id"], ti["map_index"]), set()).add(str(ti["state"]))
        if run["state"] in ("success", "failed"):
            return RunRecord(dag_id, run_id, run["state"], run, tis, seen)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} {run_id} not finished after {timeout} s: {Counter(seen)}")
        time.sleep(2)


def next_run(stack: DistributedStack, dag_id: str, known: set[str], timeout: float = 300) -> str:
    """The id of a run of `dag_id` not in `known`, once one exists (a run the scheduler started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.airflow.fail_if_a_process_ended()
        runs = stack.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]
        new = [run["dag_run_id"] for run in runs if run["dag_run_id"] not in known]
        if new:
            return str(new[0])
        time.sleep(2)
    raise TimeoutError(f"no new run of {dag_id} after {timeout} s")


def xcom(stack: DistributedStack, record: RunRecord, task_id: str, map_index: int = -1) -> Any:
    path = (
        f"/api/v2/dags/{record.dag_id}/dagRuns/{record.run_id}/taskInstances/{task_id}"
        "/xcomEntries/return_value"
    )
    value = stack.airflow.api("GET", path, params={"map_index": map_index})["value"]
    return json.loads(value) if isinstance(value, str) else value


def reopen_orders(stack: DistributedStack) -> None:
    """A fresh emulator state: ORDERS open, nothing recorded, a new in-flight high-water mark."""
    stack.emulator("POST", "reset")
    stack.emulator("POST", "orders", {"ids": ORDERS})
    stack.emulator("POST", "latency", {"seconds": CANCEL_LATENCY})


def assert_each_order_canceled_once(stack: DistributedStack) -> dict[str, Any]:
    state = stack.emulator("GET", "state")
    assert state["cancels_applied"] == {str(o): 1 for o in ORDERS}
    assert {k: v for k, v in state["orders"].items() if int(k) in ORDERS} == {
        str(o): "CANCELED" for o in ORDERS
    }
    sent = Counter(r["body"]["orderId"] for r in state["requests"] if r["endpoint"] == "cancel")
    assert sent == Counter(ORDERS), "a cancel was sent more than once, or one was never sent"
    return state  # type: ignore[no-any-return]


def check_mapped(stack: DistributedStack, record: RunRecord) -> None:
    cancels = record.tis("cancel_order")
    assert sorted(ti["map_index"] for ti in cancels) == list(range(len(ORDERS)))
    assert {ti["state"] for ti in cancels} == {"success"}
    assert {ti["pool"] for ti in cancels} == {"kibo_api"}
    hosts = Counter(ti["hostname"] for ti in cancels)
    assert set(hosts) == set(WORKER_HOSTNAMES), f"task instances ran on {hosts}"

    state = assert_each_order_canceled_once(stack)
    in_flight = state["cancels_in_flight"]["max"]
    # The pool is shared by both workers: 6 worker slots, never more than 4 cancels at once.
    assert 2 <= in_flight <= POOL_SLOTS, f"{in_flight} cancels in flight at once"

    orders = {xcom(stack, record, "cancel_order", i)["orderID"] for i in range(len(ORDERS))}
    assert orders == set(ORDERS)
    assert xcom(stack, record, "report") == {"canceled": ORDERS, "count": len(ORDERS)}
    figures = f"cancels {record.seconds('cancel_order'):.1f} s, run {record.seconds():.1f} s"
    print(f"\nmapped: {len(ORDERS)} orders over pool kibo_api={POOL_SLOTS}: {figures}; hosts {dict(hosts)}")
    print(f"mapped: max {in_flight} cancels in flight")


def check_bulk(stack: DistributedStack, record: RunRecord) -> None:
    (bulk,) = record.tis("cancel_orders")
    assert bulk["hostname"] in WORKER_HOSTNAMES
    state = assert_each_order_canceled_once(stack)
    in_flight = state["cancels_in_flight"]["max"]
    assert 1 <= in_flight <= BULK_MAX_CONCURRENCY, f"{in_flight} cancels in flight at once"

    summary = xcom(stack, record, "cancel_orders")
    assert (summary["total"], sorted(summary["canceled"])) == (len(ORDERS), ORDERS)
    assert summary["failed"] == summary["invalid"] == summary["already_canceled"] == []
    assert xcom(stack, record, "report") == {
        "canceled": len(ORDERS),
        "already_canceled": 0,
        "failed": 0,
        "invalid": 0,
        "duplicates": 0,
    }
    print(
        f"\nbulk: {len(ORDERS)} orders in one task on {bulk['hostname']}: cancels"
        f" {record.seconds('cancel_orders'):.1f} s, run {record.seconds():.1f} s; max {in_flight} in flight"
    )


CONSUMER = "example_kibo_canceled_orders_consumer"  # scheduled on the bulk reconciliation's asset


def prepare_bulk(stack: DistributedStack) -> None:
    reopen_orders(stack)
    stack.airflow.wait_for_dag(CONSUMER)  # unpaused before the event, so the event starts a run
    stack.airflow.api("PATCH", f"/api/v2/dags/{CONSUMER}", json={"is_paused": False})


def check_bulk_and_consumer(stack: DistributedStack, record: RunRecord) -> None:
    check_bulk(stack, record)
    run_id = next_run(stack, CONSUMER, set())
    consumer = watch(stack, CONSUMER, run_id)
    assert consumer.state == "success"
    assert consumer.run["run_type"] == "asset_triggered"
    (task,) = consumer.tis("log_canceled_orders")
    assert task["hostname"] in WORKER_HOSTNAMES
    assert xcom(stack, consumer, "log_canceled_orders") == {"canceled": ORDERS, "already_canceled": []}
    print(f"\nasset: the bulk run's event started {CONSUMER} on {task['hostname']}")


DEFERRED_ORDER = 1900  # kibo_deferral_frees_the_slot cancels it deferrably (defer_threshold 5 s)


def prepare_deferral(stack: DistributedStack) -> None:
    reopen_orders(stack)
    stack.emulator("POST", "orders", {"ids": [DEFERRED_ORDER]})
    stack.emulator(
        "POST", "faults", {"kind": "status", "status": 429, "retry_after": "20", "order_id": DEFERRED_ORDER}
    )


def check_deferral(stack: DistributedStack, record: RunRecord) -> None:
    (cancel,) = record.tis("cancel")
    assert "deferred" in record.states_seen[("cancel", -1)], record.states_seen
    assert cancel["state"] == "success"
    assert cancel["hostname"] in WORKER_HOSTNAMES  # resumed on a Celery worker, not in the triggerer
    state = stack.emulator("GET", "state")
    assert state["cancels_applied"] == {str(DEFERRED_ORDER): 1}
    sent = [r for r in state["requests"] if r["endpoint"] == "cancel"]
    assert len(sent) == 2  # the one that met the 429, and the resumed worker's
    assert xcom(stack, record, "cancel")["orderStatus"] == "CANCELED"
    print(f"\ndeferral: deferred and resumed on {cancel['hostname']} in {record.seconds('cancel'):.1f} s")


KILLED: dict[str, Any] = {}  # the crash scenario's kill: when, which process, how many applied by then


def _kill_the_bulk_task_process(stack: DistributedStack, after_applied: int = 20) -> None:
    """SIGKILL the Celery worker's task process holding the emulator connection of the last cancel."""

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = stack.emulator("GET", "state")
        if sum(state["cancels_applied"].values()) >= after_applied:
            last = [r for r in state["requests"] if r["endpoint"] == "cancel"][-1]
            for proc in psutil.Process().children(recursive=True):
                try:
                    ports = {c.laddr.port for c in proc.net_connections(kind="tcp") if c.laddr}
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if last["client_port"] in ports:
                    os.kill(proc.pid, signal.SIGKILL)
                    KILLED.update(
                        at=time.time(), pid=proc.pid, applied=sum(state["cancels_applied"].values())
                    )
                    return
        time.sleep(0.05)


def prepare_crash(stack: DistributedStack) -> None:
    reopen_orders(stack)
    threading.Thread(target=_kill_the_bulk_task_process, args=(stack,), daemon=True).start()


def check_crash(stack: DistributedStack, record: RunRecord) -> None:
    """Killed mid-run, retried by Airflow: each order canceled once, only the in-flight ones sent again,
    the final summary the DAG run's (the first try's cancels `canceled`)."""
    assert KILLED, "the task process was never killed"
    (bulk,) = record.tis("cancel_orders")
    assert bulk["try_number"] == 2 and bulk["hostname"] in WORKER_HOSTNAMES
    state = stack.emulator("GET", "state")
    assert state["cancels_applied"] == {str(o): 1 for o in ORDERS}
    cancels = [r for r in state["requests"] if r["endpoint"] == "cancel"]
    before = {r["body"]["orderId"] for r in cancels if r["received_at"] <= KILLED["at"]}
    after = [r["body"]["orderId"] for r in cancels if r["received_at"] > KILLED["at"]]
    resent = set(after) & before
    # With a 1 s answer and 4 workers: at most 4 in flight, and those settled within the last second.
    assert len(resent) <= 2 * 4, sorted(resent)
    summary = xcom(stack, record, "cancel_orders")
    assert summary["canceled"] == ORDERS and summary["already_canceled"] == []
    print(
        f"\ncrash: task process {KILLED['pid']} SIGKILLed after {KILLED['applied']} cancels; the retry "
        f"on {bulk['hostname']} sent {len(after)}, {len(resent)} of them again; all {len(ORDERS)} canceled"
    )


@dataclass(frozen=True)
class Scenario:
    """A run to make on the stack: prepare the emulator, trigger, watch to the end, check."""

    dag_id: str
    check: Callable[[DistributedStack, RunRecord], None]
    prepare: Callable[[DistributedStack], None] = reopen_orders
    conf: dict[str, Any] = field(default_factory=dict)
    expected_state: str = "success"


# Every run this module makes, in order, on one stack. To add one: put its DAG file in DAG_FILES and a
# Scenario here whose check asserts on the RunRecord (states_seen holds every state a task instance
# was seen in while the run went on, e.g. "deferred"; hostname tells the worker) and the emulator state.
SCENARIOS = [
    Scenario("example_kibo_reconciliation", check_mapped),
    Scenario("example_kibo_bulk_reconciliation", check_bulk_and_consumer, prepare=prepare_bulk),
    Scenario("kibo_deferral_frees_the_slot", check_deferral, prepare=prepare_deferral),
    Scenario("kibo_durable_crash", check_crash, prepare=prepare_crash),
]
RECORDS: dict[str, RunRecord] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedStack]:
    if find_spec("celery") is None or find_spec("asyncpg") is None:
        pytest.fail("Celery and the PostgreSQL drivers are missing: run `make test-distributed`")
    # Every run here is triggered by the test; the scheduler still starts the consumer's asset runs.
    dags = unscheduled_copies(DAG_FILES, tmp_path_factory.mktemp("dags"))
    (dags / "data").mkdir()
    with (dags / "data" / "orders_to_cancel.csv").open("w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(["order_id", "reason", "note"])
        for order_id in ORDERS:
            reason = REASONS[order_id % len(REASONS)]
            rows.writerow([order_id, reason, "Duplicate order" if reason == "other" else ""])

    with distributed_stack(
        tmp_path_factory.mktemp("airflow_home"),
        dags,
        emulator_args=("--tenant", TENANT, "--client-id", APP_KEY, "--client-secret", SHARED_SECRET),
    ) as running:
        print(f"\nstack up in {running.start_seconds:.0f} s (apt-get: {running.apt_seconds:.0f} s)")
        running.airflow.add_connection("kibo_default", kibo_connection(running.emulator_url))
        running.airflow.api(
            "POST", "/api/v2/pools", json={"name": "kibo_api", "slots": POOL_SLOTS, "include_deferred": False}
        )
        yield running


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_parts_are_stopped_when_a_step_fails(tmp_path: Path) -> None:
    ensure_system_packages()
    with pytest.raises(RuntimeError, match="a later step failed"), ExitStack() as parts:
        ports = [
            urlsplit(parts.enter_context(postgres_server(tmp_path))).port,
            urlsplit(parts.enter_context(redis_server(tmp_path))).port,
        ]
        assert all(port and _listening(port) for port in ports)
        assert psutil.Process().children(recursive=True), "postgres and redis-server run as children"
        raise RuntimeError("a later step failed")
    assert not any(port and _listening(port) for port in ports)
    assert psutil.Process().children(recursive=True) == []


def test_every_component_is_up(stack: DistributedStack) -> None:
    health = stack.airflow.api("GET", "/api/v2/monitor/health")
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    assert all(proc.poll() is None for proc in stack.airflow.processes)
    config = stack.env.airflow("config", "get-value", "core", "executor").stdout.strip()
    assert config == "CeleryExecutor"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.dag_id for s in SCENARIOS])
def test_scenario(stack: DistributedStack, scenario: Scenario) -> None:
    scenario.prepare(stack)
    record = watch(stack, scenario.dag_id, trigger(stack, scenario.dag_id, scenario.conf))
    RECORDS[scenario.dag_id] = record
    states = {f"{k[0]}[{k[1]}]": v for k, v in record.states_seen.items() if v - {"success"}}
    assert record.state == scenario.expected_state, (states, stack.airflow.logs("scheduler"))
    scenario.check(stack, record)


def test_the_metadata_database_is_postgresql(stack: DistributedStack) -> None:
    import psycopg2  # in .venv-distributed only  # noqa: PLC0415

    conn = stack.env.airflow("config", "get-value", "database", "sql_alchemy_conn").stdout.strip()
    assert conn.startswith("postgresql+psycopg2://") and conn == stack.database_url
    url = urlsplit(stack.database_url)
    with (
        psycopg2.connect(
            host=url.hostname, port=url.port, user=url.username, password=url.password, dbname="airflow"
        ) as db,
        db.cursor() as cursor,
    ):
        cursor.execute("SELECT version()")
        assert cursor.fetchone()[0].startswith("PostgreSQL")
        # The runs the scenarios watched over REST are rows of this database.
        cursor.execute("SELECT dag_id, run_id, state FROM dag_run")
        rows = set(cursor.fetchall())
    assert RECORDS, "no scenario ran"
    assert {(r.dag_id, r.run_id, r.state) for r in RECORDS.values()} <= rows


def test_nothing_listens_beyond_loopback(stack: DistributedStack) -> None:
    listeners = listeners_of_children()
    assert {(item.name, item.address) for item in listeners if item.address != "127.0.0.1"} == set()
    # Not vacuous: the API server, PostgreSQL, Redis and the emulator were found listening.
    ports = {item.port for item in listeners}
    for url in (stack.airflow.url, stack.database_url, stack.broker_url, stack.emulator_url):
        assert urlsplit(url).port in ports, (url, listeners)
