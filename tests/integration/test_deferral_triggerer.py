"""A deferred task under a real scheduler and triggerer (parallelism 1): it is seen `deferred` over REST
while another task runs in the worker slot it freed. The deferral's operator behaviour, in process:
tests/unit/operators/test_deferral.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from devtools.airflow_local import AirflowStack
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection, migrated_home

DAGS = Path(__file__).parents[1] / "dags"


def test_a_deferred_task_frees_its_worker_slot_under_a_real_triggerer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "kibo_deferral.py").write_text((DAGS / "kibo_deferral.py").read_text())
    env = migrated_home(tmp_path / "home", dags)
    dag_id = "kibo_deferral_frees_the_slot"
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
        emu.add_orders([1900])
        emu.inject("status", status=429, retry_after="20", order_id=1900)
        connection = kibo_connection(emu)
        extra = {"AIRFLOW__CORE__PARALLELISM": "1", "AIRFLOW_CONN_KIBO_DEFAULT": json.dumps(connection)}
        components = ("api-server", "scheduler", "dag-processor", "triggerer")
        with AirflowStack(env, extra_env=extra, components=components) as stack:
            stack.wait_for_dag(dag_id)
            stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            run_id = stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})[
                "dag_run_id"
            ]
            base = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
            seen: dict[str, set[str]] = {"cancel": set(), "other": set()}
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                stack.fail_if_a_process_ended()
                states = {ti["task_id"]: ti["state"] for ti in stack.api("GET", base)["task_instances"]}
                for task_id, state in states.items():
                    seen[task_id].add(str(state))
                if all(state in ("success", "failed") for state in states.values()) and len(states) == 2:
                    break
                time.sleep(0.5)
            tis = {ti["task_id"]: ti for ti in stack.api("GET", base)["task_instances"]}
            other_ran_at = stack.api("GET", f"{base}/other/xcomEntries/return_value")["value"]
    log = (env.home / "scheduler.log").read_text()[-3000:]
    assert tis["cancel"]["state"] == "success", (seen, log)
    assert tis["other"]["state"] == "success", (seen, log)
    assert "deferred" in seen["cancel"], seen
    sent = [r.received_at for r in emu.requests_to("cancel")]
    assert len(sent) == 2 and sent[1] - sent[0] >= 19.5  # the 429, then the resumed worker's cancel
    # With one slot, `other` could only run while `cancel` was deferred: between its two requests.
    assert sent[0] < float(other_ran_at) < sent[1]
    assert emu.cancels_applied(1900) == 1
