"""The production path: scheduler + LocalExecutor + API server, triggered and read back over REST.

Tasks run in task-runner subprocesses and fetch the `kibo` connection through the execution API (it is
stored in the metadata database, not in the environment): where providers usually break.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowStack
from tests.support import TENANT, kibo_connection, migrated_home, unscheduled_copies

EXAMPLES = Path(__file__).parents[2] / "example_dags"
DAG_ID = "example_kibo_cancel_order"


def test_single_order_dag_under_a_real_scheduler(
    tmp_path: Path, emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    env = migrated_home(tmp_path / "airflow_home", EXAMPLES)
    with AirflowStack(env) as stack:
        stack.add_connection("kibo_default", kibo_connection(emulator))
        stack.wait_for_dag(DAG_ID)
        stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        run = stack.api(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            json={
                "logical_date": None,
                "conf": {"order_id": 1042, "disposition_reason": "created_by_mistake"},
            },
        )
        state = stack.wait_for_run(DAG_ID, run["dag_run_id"])
        base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances"
        tasks = {ti["task_id"]: ti["state"] for ti in stack.api("GET", base)["task_instances"]}
        assert state == "success", (tasks, (env.home / "scheduler.log").read_text()[-5000:])
        xcom = stack.api("GET", f"{base}/cancel_order/xcomEntries/return_value")

    order = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert order == emulator.order(1042)
    assert order["orderStatus"] == "CANCELED"
    (cancel,) = emulator.requests_to("cancel")
    assert cancel.body == {"orderId": 1042, "dispositionReason": "created_by_mistake"}
    assert cancel.headers["x-vol-tenant"] == TENANT
    assert emulator.cancels_applied(1042) == 1


def test_the_reconciliation_event_starts_the_consumer_dag(
    tmp_path: Path, emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk reconciliation's asset event creates the consumer's run, which sees the canceled ids."""
    producer, consumer = "example_kibo_bulk_reconciliation", "example_kibo_canceled_orders_consumer"
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    examples = [EXAMPLES / "example_kibo_reconciliation.py", EXAMPLES / f"{consumer}.py"]
    dags = unscheduled_copies(examples, tmp_path / "dags")  # the producer runs when the test says
    shutil.copytree(EXAMPLES / "data", dags / "data")
    env = migrated_home(tmp_path / "airflow_home", dags)
    with AirflowStack(env) as stack:
        stack.add_connection("kibo_default", kibo_connection(emulator))
        stack.wait_for_dag(producer)
        stack.wait_for_dag(consumer)
        assert stack.api("GET", f"/api/v2/dags/{consumer}/dagRuns")["dag_runs"] == []
        stack.api("PATCH", f"/api/v2/dags/{consumer}", json={"is_paused": False})
        stack.api("PATCH", f"/api/v2/dags/{producer}", json={"is_paused": False})
        run = stack.api("POST", f"/api/v2/dags/{producer}/dagRuns", json={"logical_date": None})
        run_id = run["dag_run_id"]
        assert stack.wait_for_run(producer, run_id) == "success"
        (triggered,) = stack.wait_for_runs(consumer)
        state = stack.wait_for_run(consumer, triggered["dag_run_id"])
        base = f"/api/v2/dags/{consumer}/dagRuns/{triggered['dag_run_id']}"
        assert state == "success", (env.home / "scheduler.log").read_text()[-5000:]
        events = stack.api("GET", f"{base}/upstreamAssetEvents")["asset_events"]
        xcom = stack.api("GET", f"{base}/taskInstances/log_canceled_orders/xcomEntries/return_value")

    assert triggered["run_type"] == "asset_triggered"
    (event,) = events
    assert (event["uri"], event["source_dag_id"], event["source_run_id"]) == (
        "kibo://30294/orders/canceled",
        producer,
        run_id,
    )
    seen = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert seen == {"canceled": [1001, 1002, 1003, 1004, 1005], "already_canceled": []}
    assert all(emulator.cancels_applied(order_id) == 1 for order_id in range(1001, 1006))


def _process_holding(client_port: int) -> psutil.Process:
    """The task process whose connection to the emulator has this client port (a descendant of ours)."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if any(c.laddr and c.laddr.port == client_port for c in proc.net_connections(kind="tcp")):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no process holds client port {client_port}")


def test_a_kill_stops_both_operators_under_a_real_task_runner(
    tmp_path: Path, emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM is what the task runner's supervisor sends on a kill or "mark failed". Airflow 3.1+'s task
    # runner then calls on_kill; 3.0's has no handler, so the operators install their own.
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).parents[1] / "dags_kill" / "kibo_kill.py", dags)
    env = migrated_home(tmp_path / "airflow_home", dags)
    emulator.latency = 0.2  # 100 orders two at a time: about 10 s of cancels
    emulator.inject("status", status=503, order_id=3000, times=None)
    with AirflowStack(env) as stack:
        stack.add_connection("kibo_default", kibo_connection(emulator, backoff_base=8, max_attempts=5))
        stack.wait_for_dag("kibo_kill")
        stack.api("PATCH", "/api/v2/dags/kibo_kill", json={"is_paused": False})
        run = stack.api("POST", "/api/v2/dags/kibo_kill/dagRuns", json={"logical_date": None})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stack.fail_if_a_process_ended()
            cancels = emulator.requests_to("cancel")
            bulk = [r for r in cancels if r.body.get("orderId") != 3000]
            single = [r for r in cancels if r.body.get("orderId") == 3000]
            if len(bulk) >= 10 and single:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the tasks did not start sending: {len(emulator.requests)} requests")
        targets = {_process_holding(bulk[-1].client_port), _process_holding(single[-1].client_port)}
        killed_at = time.time()
        for proc in targets:
            os.kill(proc.pid, signal.SIGTERM)
        state = stack.wait_for_run("kibo_kill", run["dag_run_id"])
        base = f"/api/v2/dags/kibo_kill/dagRuns/{run['dag_run_id']}/taskInstances"
        tasks = {ti["task_id"]: ti["state"] for ti in stack.api("GET", base)["task_instances"]}
        entry = stack.api("GET", f"{base}/bulk/xcomEntries/summary")

    assert state == "failed" and tasks == {"bulk": "failed", "single": "failed"}, tasks
    # Requests already on the wire at the kill arrive within moments; nothing was sent after it.
    late = [r for r in emulator.requests_to("cancel") if r.received_at > killed_at + 1.0]
    assert late == [], [(r.body, round(r.received_at - killed_at, 2)) for r in late]
    assert len([r for r in emulator.requests_to("cancel") if r.body.get("orderId") == 3000]) == len(single)
    summary = entry["value"] if isinstance(entry["value"], dict) else json.loads(entry["value"])
    assert summary["halted"] == "stopped"
    assert len(summary["canceled"]) + len(summary["failed"]) + len(summary["not_attempted"]) == 100
    applied = [i for i in range(1000, 1100) if emulator.cancels_applied(i)]
    assert set(summary["canceled"]) | {f["order_id"] for f in summary["failed"]} >= set(applied)
    assert summary["not_attempted"], "the kill came long before the end"
