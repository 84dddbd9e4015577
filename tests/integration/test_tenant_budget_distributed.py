"""The shared tenant budget across the two Celery workers of `make test-distributed`: three bulk tasks
and 100 mapped cancels on one tenant (Kibo's limit 50/s, Retry-After 15; tenant_requests_per_second 45),
the budget in the Redis the Celery broker already runs (database 1). Reuses test_distributed's helpers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from importlib.util import find_spec
from urllib.parse import urlsplit

import pytest

from airflow_provider_kibo_cancel.emulator.tenant_limit import LIMITED_ENDPOINTS
from devtools.distributed import DistributedStack, distributed_stack
from tests.dags_budget.kibo_tenant_budget import (
    BULK_FIRST,
    BULK_ORDERS,
    BULK_TASKS,
    MAPPED_FIRST,
    MAPPED_ORDERS,
)
from tests.integration.test_distributed import trigger, watch
from tests.integration.test_tenant_budget import BUDGET, LIMIT, RETRY_AFTER, busy_seconds, densest_second
from tests.integration.test_tenant_budget_airflow import DAG_ID, DAGS
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

BULK = range(BULK_FIRST, BULK_FIRST + BULK_TASKS * BULK_ORDERS)
MAPPED = range(MAPPED_FIRST, MAPPED_FIRST + MAPPED_ORDERS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedStack]:
    if find_spec("celery") is None or find_spec("asyncpg") is None:
        pytest.fail("Celery and the PostgreSQL drivers are missing: run `make test-distributed`")
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(DAGS / "kibo_tenant_budget.py", dags / "kibo_tenant_budget.py")
    limits = ("--tenant-limit", str(LIMIT), "--tenant-retry-after", str(RETRY_AFTER))
    orders = ("--open", f"{BULK.start}-{MAPPED.stop - 1}")
    with distributed_stack(
        tmp_path_factory.mktemp("airflow_home"),
        dags,
        emulator_args=(
            "--tenant",
            TENANT,
            "--client-id",
            APP_KEY,
            "--client-secret",
            SHARED_SECRET,
            *orders,
            *limits,
        ),
    ) as running:
        broker = urlsplit(running.broker_url)
        running.airflow.add_connection(
            "kibo_redis", {"conn_type": "redis", "host": broker.hostname, "port": broker.port, "schema": "1"}
        )
        running.airflow.add_connection(
            "kibo_default",
            kibo_connection(
                running.emulator_url, tenant_requests_per_second=BUDGET, rate_limit_conn_id="kibo_redis"
            ),
        )
        yield running


def test_one_budget_across_two_celery_workers(stack: DistributedStack) -> None:
    record = watch(stack, DAG_ID, trigger(stack, DAG_ID))
    assert record.state == "success", record.states_seen
    limit = stack.emulator("GET", "tenant_limit")
    state = stack.emulator("GET", "state")
    cancels = [r for r in state["requests"] if r["endpoint"] == "cancel"]
    assert all(state["cancels_applied"].get(str(i)) == 1 for i in [*BULK, *MAPPED])
    hosts = {ti["hostname"] for ti in record.task_instances}
    bulk_times = sorted(r["received_at"] for r in cancels if r["body"] and r["body"].get("orderId") in BULK)
    window = [r for r in cancels if bulk_times[0] <= r["received_at"] <= bulk_times[-1]]
    phase, ideal = bulk_times[-1] - bulk_times[0], len(window) / BUDGET
    busy = busy_seconds([r["received_at"] for r in window])
    print(
        f"celery: workers {sorted(hosts)}, {len(cancels)} cancels, {limit}; bulk phase {phase:.2f} s "
        f"({busy:.2f} s sending), ideal {ideal:.2f} s"
    )
    assert len(hosts) == 2, hosts
    limited = [r["received_at"] for r in state["requests"] if r["endpoint"] in LIMITED_ENDPOINTS]
    assert limit["rejected"] == 0, (limit, f"densest second: {densest_second(limited)}")
    assert busy <= 1.25 * ideal, (busy, phase, ideal)
