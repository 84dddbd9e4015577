"""example_kibo_review_before_cancel under a real scheduler, approved and rejected through the REST API.

The UI's Approve/Reject buttons call `PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails`; so does
this test. Two runs share one stack start: one approved, one rejected. Between them the order source
changes, so a cancel that queried again instead of using the reviewed plan would show.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowStack
from tests.support import kibo_connection, migrated_home

EXAMPLES = Path(__file__).parents[2] / "example_dags"
DAG_ID = "example_kibo_review_before_cancel"
REVIEWED = [1001, 1002, 1003, 1004, 1005]  # example_dags/data/orders_to_cancel.csv
LATE_ORDER = 1050  # turns up in the source after the first run was planned


def _pause_reported(stack: AirflowStack, run_id: str) -> bool:
    """
    Whether the scheduler has heard from the executor that the paused review task's process ended.
    An answer that arrives before that (within a second of the pause; a person is never that fast)
    meets an Airflow 3.3 race: the task is re-queued, then the late "success" event of its paused
    process marks it failed ("state changed externally").
    """
    key = f"task_id='review', run_id='{run_id}'"
    log = (stack.airflow_env.home / "scheduler.log").read_text(errors="replace")
    return any(
        "Received executor event with state success" in line and key in line for line in log.splitlines()
    )


def wait_for_review(stack: AirflowStack, run_id: str, timeout: float = 180) -> dict[str, Any]:
    """The review task's human-in-the-loop request, once the task waits for an answer."""
    base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.fail_if_a_process_ended()
        states = {ti["task_id"]: ti["state"] for ti in stack.api("GET", base)["task_instances"]}
        if states.get("review") in ("awaiting_input", "deferred") and _pause_reported(stack, run_id):
            return dict(stack.api("GET", f"{base}/review/-1/hitlDetails"))
        if any(state in ("failed", "upstream_failed", "skipped") for state in states.values()):
            raise AssertionError(f"run {run_id} did not reach the review: {states}")
        time.sleep(1)
    raise TimeoutError(f"run {run_id} not waiting for review after {timeout} s: {states}")


@pytest.mark.newest_only  # human-in-the-loop needs Airflow 3.1+; 3.3 waits without a triggerer
def test_approved_cancels_the_reviewed_plan_and_rejected_cancels_nothing(
    tmp_path: Path, emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    dags = tmp_path / "dags"
    (dags / "data").mkdir(parents=True)
    shutil.copy(EXAMPLES / f"{DAG_ID}.py", dags)
    source = dags / "data" / "orders_to_cancel.csv"
    shutil.copy(EXAMPLES / "data" / "orders_to_cancel.csv", source)
    env = migrated_home(tmp_path / "airflow_home", dags)
    with AirflowStack(env) as stack:
        stack.add_connection("kibo_default", kibo_connection(emulator))
        stack.wait_for_dag(DAG_ID)
        stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

        def trigger(conf: dict[str, Any]) -> str:
            run = stack.api(
                "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}
            )
            return str(run["dag_run_id"])

        approved = trigger({"disposition_reason": "customer_changed_mind"})
        approved_review = wait_for_review(stack, approved)
        with source.open("a") as rows:  # a fresh query would now find one more order
            rows.write(f"{LATE_ORDER},created_by_mistake,\n")
        rejected = trigger({})
        rejected_review = wait_for_review(stack, rejected)
        assert emulator.requests_to("cancel") == []  # nothing is sent before an answer

        for run_id, choice in ((approved, "Approve"), (rejected, "Reject")):
            stack.api(
                "PATCH",
                f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                json={"chosen_options": [choice], "params_input": {}},
            )
        states = {}
        for run_id in (approved, rejected):
            stack.wait_for_run(DAG_ID, run_id)
            base = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
            states[run_id] = {ti["task_id"]: ti["state"] for ti in stack.api("GET", base)["task_instances"]}
        xcom = stack.api(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{approved}/taskInstances/cancel/xcomEntries/return_value",
        )

    # What the reviewer saw: the count and the ids.
    assert approved_review["options"] == ["Approve", "Reject"]
    assert approved_review["subject"] == "Cancel 5 Kibo orders?"
    assert "**5 orders** will be canceled with reason `customer_changed_mind`" in approved_review["body"]
    assert "1001, 1002, 1003, 1004, 1005\n" in approved_review["body"]
    assert rejected_review["subject"] == "Cancel 6 Kibo orders?"
    assert f"1005, {LATE_ORDER}\n" in rejected_review["body"]

    assert states[approved]["cancel"] == "success", (states, (env.home / "scheduler.log").read_text()[-5000:])
    assert states[rejected]["review"] == "success" and states[rejected]["cancel"] == "skipped", states
    summary = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert sorted(summary["canceled"]) == REVIEWED
    # Exactly the reviewed orders, once each, with the run's reason; the rejected run sent nothing.
    sent = sorted((r.body["orderId"], r.body["dispositionReason"]) for r in emulator.requests_to("cancel"))
    assert sent == [(order_id, "customer_changed_mind") for order_id in REVIEWED]
    assert all(emulator.cancels_applied(order_id) == 1 for order_id in REVIEWED)
    late = emulator.order(LATE_ORDER)
    assert late is not None and late["orderStatus"] != "CANCELED"
