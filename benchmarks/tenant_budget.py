"""Bench row 6, "shared tenant budget": several tasks on one tenant under Kibo's tenant-wide limit.

Four tasks (each a KiboHook of its own with 4 threads, as four bulk tasks would be) cancel 50 orders
each with ``tenant_requests_per_second`` a little under the emulator's tenant limit, first each on its
own (today's per-task budget: each task alone keeps under it, together they do not), then sharing one
budget in a redis-server on 127.0.0.1. Reported for each: 429s, and the request phase over its ideal
(cancels / budget).
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from devtools.distributed import redis_server
from devtools.emulator_process import emulator_process

APP_KEY, SHARED_SECRET, TENANT = "bench-app-key", "bench-shared-secret", "30294"


def _run(url: str, first: int, tasks: int, per_task: int, **extra: Any) -> dict[str, float]:

    requests.post(f"{url}/_emulator/reset", timeout=5)
    requests.post(
        f"{url}/_emulator/orders", json={"ids": list(range(first, first + tasks * per_task))}, timeout=5
    )
    limit = requests.get(f"{url}/_emulator/tenant_limit", timeout=5).json()
    requests.post(f"{url}/_emulator/tenant_limit", json=limit, timeout=5)  # counters afresh
    connection = {
        "conn_type": "kibo",
        "login": APP_KEY,
        "password": SHARED_SECRET,
        "host": url,
        "extra": {"tenant_id": TENANT, "environment": "sandbox", **extra},
    }
    os.environ["AIRFLOW_CONN_KIBO_DEFAULT"] = json.dumps(connection)
    hooks = [KiboHook(pool_size=4) for _ in range(tasks)]
    for hook in hooks:
        hook.authenticate()

    def task(index: int) -> None:
        orders = range(first + index * per_task, first + (index + 1) * per_task)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda order_id: hooks[index].cancel_order(order_id, "created_by_mistake"), orders))

    with ThreadPoolExecutor(tasks) as pool:
        list(pool.map(task, range(tasks)))
    state = requests.get(f"{url}/_emulator/state", timeout=10).json()
    times = sorted(r["received_at"] for r in state["requests"] if r["endpoint"] == "cancel")
    counted = requests.get(f"{url}/_emulator/tenant_limit", timeout=5).json()
    return {
        "rejected": counted["rejected"],
        "episodes": counted["episodes"],
        "phase": times[-1] - times[0],
        "canceled": sum(status == "CANCELED" for status in state["orders"].values()),
    }


def bench_tenant_budget(
    tasks: int = 4, per_task: int = 50, limit: int = 50, budget: int = 45, retry_after: int = 5
) -> dict[str, float]:
    args = ("--client-id", APP_KEY, "--client-secret", SHARED_SECRET, "--tenant", TENANT)
    limits = ("--tenant-limit", str(limit), "--tenant-retry-after", str(retry_after), "--latency", "0.005")
    with emulator_process(*args, "--open", "1-1", "--canceled", "999999999", *limits) as url:
        ideal = tasks * per_task / budget
        alone = _run(url, 1, tasks, per_task, tenant_requests_per_second=budget, max_retry_wait=60)
        with (
            tempfile.TemporaryDirectory(prefix="kibo-bench-redis-") as folder,
            redis_server(Path(folder)) as redis_url,
        ):
            os.environ["AIRFLOW_CONN_KIBO_BENCH_REDIS"] = redis_url
            shared = _run(
                url,
                1 + tasks * per_task,
                tasks,
                per_task,
                tenant_requests_per_second=budget,
                rate_limit_conn_id="kibo_bench_redis",
                max_retry_wait=60,
            )
    return {
        "ideal": ideal,
        "alone_429": alone["rejected"],
        "alone_episodes": alone["episodes"],
        "alone_ratio": alone["phase"] / ideal,
        "shared_429": shared["rejected"],
        "shared_ratio": shared["phase"] / ideal,
        "lost": 2 * tasks * per_task - alone["canceled"] - shared["canceled"],
    }
