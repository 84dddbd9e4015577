"""The shared tenant budget under a real scheduler (LocalExecutor): three bulk tasks and 100 mapped
cancels of one DAG run on one tenant, every task its own process, the budget in a redis-server.

Kibo's limit 60/s with Retry-After 15 (the emulator's tenant limit); tenant_requests_per_second 40.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.emulator.tenant_limit import LIMITED_ENDPOINTS
from devtools.airflow_local import AirflowEnv, AirflowStack
from devtools.distributed import redis_server
from tests.dags_budget.kibo_tenant_budget import (
    BULK_FIRST,
    BULK_ORDERS,
    BULK_TASKS,
    MAPPED_FIRST,
    MAPPED_ORDERS,
)
from tests.integration.test_tenant_budget import (
    BUDGET,
    RETRY_AFTER,
    busy_seconds,
    densest_second,
    ensure_redis_server,
)
from tests.support import kibo_connection, kibo_emulator, one_heavy_stack_at_a_time

pytestmark = pytest.mark.timeout(900)

DAGS = Path(__file__).parent.parent / "dags_budget"
DAG_ID = "kibo_tenant_budget"
BULK = range(BULK_FIRST, BULK_FIRST + BULK_TASKS * BULK_ORDERS)
MAPPED = range(MAPPED_FIRST, MAPPED_FIRST + MAPPED_ORDERS)
#: Kibo's limit here: half as much again as the budget, where the other budget tests keep a fifth. This
#: test runs beside the rest of the suite on 2 cores (8 task processes, a scheduler, an API server and
#: the other xdist worker), where requests reach the emulator in clumps: one CI run met two 429s at 40
#: against 50/s, so twice at least 51 requests arrived within a second while the budget spaced them
#: 1/40 s apart. The budget is what is under test, not the machine's scheduling (rate-limits.md tells
#: users to keep such headroom); tasks that did not share it (3 bulk tasks at 40/s each) still meet 60.
#: The next failing run, at 60, was two tasks that lost a slow Redis and went on at the whole 40/s each
#: (63 in a second): a task that loses Redis now takes its share (test_tenant_budget.py, Redis stalled).
LIMIT = 60


@pytest.fixture
def tenant() -> Iterator[KiboEmulator]:
    emu = kibo_emulator([*BULK, *MAPPED], tenant_requests_per_second=LIMIT, tenant_retry_after=RETRY_AFTER)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def test_bulk_tasks_and_mapped_cancels_share_one_budget_under_a_scheduler(
    tmp_path: Path,
    tenant: KiboEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KIBO_DEFAULT", raising=False)
    ensure_redis_server()
    env = AirflowEnv(tmp_path / "airflow_home", DAGS)
    env.home.mkdir()
    env.migrate()
    with (
        one_heavy_stack_at_a_time(tmp_path_factory),
        redis_server(tmp_path) as redis_url,
        AirflowStack(env, extra_env={"AIRFLOW__CORE__PARALLELISM": "8"}) as stack,
    ):
        stack.add_connection(
            "kibo_redis",
            {
                "conn_type": "redis",
                "host": "127.0.0.1",
                "port": int(redis_url.rsplit(":", 1)[1].split("/")[0]),
            },
        )
        stack.add_connection(
            "kibo_default",
            kibo_connection(tenant, tenant_requests_per_second=BUDGET, rate_limit_conn_id="kibo_redis"),
        )
        stack.wait_for_dag(DAG_ID)
        stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        run = stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        state = stack.wait_for_run(DAG_ID, run["dag_run_id"], timeout=600)
        assert state == "success", (env.home / "scheduler.log").read_text()[-5000:]

    limit = tenant.tenant_limit.snapshot()
    cancels = tenant.requests_to("cancel")
    assert all(tenant.cancels_applied(order_id) == 1 for order_id in [*BULK, *MAPPED])
    # While the bulk tasks sent, demand was above the budget: the time spent sending is within 1.25 x
    # (requests sent / budget). Gaps over a second are no demand (a bulk task still queued behind
    # mapped ones), left out; before and after, the executor's task start-up paces the mapped cancels.
    bulk_times = sorted(r.received_at for r in cancels if r.body and r.body.get("orderId") in BULK)
    window = [r for r in cancels if bulk_times[0] <= r.received_at <= bulk_times[-1]]
    phase, ideal = bulk_times[-1] - bulk_times[0], len(window) / BUDGET
    busy = busy_seconds([r.received_at for r in window])
    limited = [r.received_at for r in tenant.requests if r.endpoint in LIMITED_ENDPOINTS]
    print(
        f"scheduler: {len(cancels)} cancels, {limit}; bulk phase {phase:.2f} s ({busy:.2f} s sending) for "
        f"{len(window)} cancels, ideal {ideal:.2f} s ({busy / ideal:.2f} x); densest second "
        f"{densest_second(limited)} (budget {BUDGET}/s)"
    )
    fell_back = [
        f"{log.relative_to(env.home / 'logs')}: {line[:300]}"
        for log in (env.home / "logs").rglob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "cannot be reached" in line
    ]
    # The densest second and any task that lost Redis say which it was: clumps, or a per-task fallback.
    assert limit["rejected"] == 0, (limit, f"densest second: {densest_second(limited)}", fell_back)
    assert busy <= 1.25 * ideal, (busy, phase, ideal)
    assert json.dumps(limit)  # plain data
