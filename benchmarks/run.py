"""`make bench`: the provider's speed figures, measured in one run on this machine, beside their targets.

1. Bulk throughput: BulkCancelOrdersOperator's request phase (``BulkRun``) for 1,000 orders with 16
   workers against the emulator adding 25 ms per request, divided by the ideal N x latency / workers;
   the sequential loop a user would write by hand is timed beside it.
2. Parse-time import cost of ``airflow_provider_kibo_cancel.operators.cancel_order`` beyond
   ``import airflow.sdk``, beside the http provider's ``HttpOperator`` (median of fresh interpreters).
3. Per-request overhead of ``KiboHook.cancel_order`` against a bare ``requests.Session`` post (plus
   ``.json()``) to the same emulator with no added latency, interleaved in blocks.
4. Failing fast: a 10,000-order bulk run (8 workers, the default retry settings) against a Kibo that
   answers 503 to every API call, beside one order's full retry schedule against the same Kibo (its
   cancel attempts and its read-back); and the same run with a wrong shared secret.
5. Worker time held while Kibo asks to wait 60 s (a 429 with Retry-After: 60): ``CancelOrderOperator``
   with ``deferrable=True`` (the time spent in ``execute`` until it defers plus in ``execute_complete``
   after the trigger fired; the wait itself is spent in the trigger) beside the hook sleeping through it.
6. Shared tenant budget (benchmarks/tenant_budget.py): four tasks on one tenant whose limit is 50/s, each
   with ``tenant_requests_per_second`` 45, first each on its own (today), then sharing it through Redis.

The emulator runs in its own process on 127.0.0.1 so that it does not share the client's GIL.
Figures are ratios measured in one run: the machines are noisy, absolute times vary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import requests

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.exceptions import KiboError
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.operators.bulk_runner import BulkRun
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from airflow_provider_kibo_cancel.operators.outcome import CANCELED, NOT_ATTEMPTED
from benchmarks.tenant_budget import bench_tenant_budget
from devtools.emulator_process import emulator_process

APP_KEY, SHARED_SECRET, TENANT = "bench-app-key", "bench-shared-secret", "30294"
ROOT = Path(__file__).resolve().parent.parent


def emulator(latency: float, orders: str) -> AbstractContextManager[str]:
    return emulator_process(
        "--client-id",
        APP_KEY,
        "--client-secret",
        SHARED_SECRET,
        "--tenant",
        TENANT,
        "--open",
        orders,
        "--canceled",
        "999999999",
        "--latency",
        str(latency),
    )


def use_connection(url: str) -> None:
    os.environ["AIRFLOW_CONN_KIBO_BENCH"] = json.dumps(
        {
            "conn_type": "kibo",
            "login": APP_KEY,
            "password": SHARED_SECRET,
            "host": url,
            "extra": {"tenant_id": TENANT, "environment": "sandbox"},
        }
    )


def bench_bulk(orders: int, workers: int, latency: float, repeats: int) -> dict[str, float]:

    ideal = orders * latency / workers
    batches = iter(range(1, (2 * repeats + 1) * orders + 1, orders))  # fresh open orders for every run
    with emulator(latency, f"1-{(2 * repeats + 1) * orders}") as url:
        use_connection(url)
        hook = KiboHook("kibo_bench", pool_size=workers)
        hook.get_order(1)  # token and first connection outside the measured phase
        session, headers = bare_session(url)
        bulk, bare = [], []
        for _ in range(repeats):  # alternate, so that drift in machine load hits both alike
            first = next(batches)
            plan = plan_bulk_cancel(list(range(first, first + orders)), "created_by_mistake")
            outcome = BulkRun(hook, plan.requests, max_concurrency=workers).run()
            assert outcome.count(CANCELED) == orders, list(outcome.failures.values())[:3]
            bulk.append(outcome.elapsed / ideal)

            first = next(batches)
            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:  # the same load with bare requests, no hook
                list(
                    pool.map(
                        lambda order_id: bare_cancel(session, url, headers, order_id),
                        range(first, first + orders),
                    )
                )
            bare.append((time.perf_counter() - started) / ideal)

        first = next(batches)
        loop_hook = KiboHook("kibo_bench")
        loop_hook.get_order(1)
        started = time.perf_counter()
        for order_id in range(first, first + orders):  # what a user writes by hand
            loop_hook.cancel_order(order_id, "created_by_mistake")
        sequential = time.perf_counter() - started
    return {
        "ratio": statistics.median(bulk),
        "low": min(bulk),
        "high": max(bulk),
        "ideal": ideal,
        "bare": statistics.median(bare),
        "sequential": sequential,
        "sequential_ratio": sequential / ideal,
    }


def bare_session(url: str) -> tuple[requests.Session, dict[str, str]]:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
    token = session.post(
        f"{url}/api/platform/applications/authtickets/oauth",
        json={"client_id": APP_KEY, "client_secret": SHARED_SECRET, "grant_type": "client_credentials"},
        timeout=10,
    ).json()["access_token"]
    return session, {"Authorization": f"Bearer {token}", "x-vol-tenant": TENANT, "Accept": "application/json"}


def bare_cancel(session: requests.Session, url: str, headers: dict[str, str], order_id: int) -> None:
    response = session.post(
        f"{url}/api/v2/order/action/cancel",
        json={"orderId": order_id, "dispositionReason": "created_by_mistake"},
        headers=headers,
        timeout=30,
    )
    response.raise_for_status()
    response.json()


def _import_seconds(statement: str) -> float:
    code = (
        "import time, airflow.sdk\n"
        "started = time.perf_counter()\n"
        f"{statement}\n"
        "print(time.perf_counter() - started)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def bench_import(runs: int) -> dict[str, float]:
    ours, http = [], []
    for _ in range(runs):  # alternate, so that drift in machine load hits both alike
        ours.append(_import_seconds("import airflow_provider_kibo_cancel.operators.cancel_order"))
        http.append(_import_seconds("from airflow.providers.http.operators.http import HttpOperator"))
    return {"ours_ms": 1000 * statistics.median(ours), "http_ms": 1000 * statistics.median(http)}


def bench_overhead(rounds: int, block: int) -> dict[str, float]:
    with emulator(0.0, f"1-{2 * (rounds + 1) * block}") as url:
        use_connection(url)
        hook = KiboHook("kibo_bench")
        session, headers = bare_session(url)
        order_ids = iter(range(1, 2 * (rounds + 1) * block + 1))

        def hook_block() -> float:
            started = time.perf_counter()
            for _ in range(block):
                hook.cancel_order(next(order_ids), "created_by_mistake")
            return time.perf_counter() - started

        def bare_block() -> float:
            started = time.perf_counter()
            for _ in range(block):
                bare_cancel(session, url, headers, next(order_ids))
            return time.perf_counter() - started

        hook_block(), bare_block()  # warm up both: token, connection, caches
        hook_times, bare_times = [], []
        for _ in range(rounds):
            hook_times.append(hook_block())
            bare_times.append(bare_block())
    hook_us = 1e6 * statistics.median(hook_times) / block
    bare_us = 1e6 * statistics.median(bare_times) / block
    return {"hook_us": hook_us, "bare_us": bare_us, "ratio": hook_us / bare_us}


def _emulator_state(url: str) -> dict[str, int]:
    requests_seen = requests.get(f"{url}/_emulator/state", timeout=10).json()["requests"]
    counts = {"oauth": 0, "cancel": 0, "get_order": 0}
    for request in requests_seen:
        counts[request["endpoint"]] = counts.get(request["endpoint"], 0) + 1
    return counts


def bench_fail_fast(orders: int) -> dict[str, float]:

    plan = plan_bulk_cancel(list(range(1, orders + 1)), "created_by_mistake")
    down = {"kind": "status", "endpoint": None, "status": 503, "times": None}
    figures: dict[str, float] = {}
    with emulator(0.0, f"1-{orders}") as url:
        use_connection(url)
        single = KiboHook("kibo_bench")
        single.authenticate()
        requests.post(f"{url}/_emulator/faults", json=down, timeout=10).raise_for_status()
        started = time.perf_counter()
        with contextlib.suppress(KiboError):  # the failure is the point; its duration is the figure
            single.cancel_order(1, "created_by_mistake")
        figures["one_order_s"] = time.perf_counter() - started

        requests.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()
        requests.post(f"{url}/_emulator/orders", json={"ids": list(range(1, orders + 1))}, timeout=30)
        hook = KiboHook("kibo_bench", pool_size=8)
        hook.authenticate()  # as the operator does, before dispatching
        requests.post(f"{url}/_emulator/faults", json=down, timeout=10).raise_for_status()
        started = time.perf_counter()
        outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
        figures["down_s"] = time.perf_counter() - started
        counts = _emulator_state(url)
        figures["down_requests"] = counts["cancel"] + counts["get_order"] + counts["oauth"] - 1
        figures["down_not_attempted"] = outcome.count(NOT_ATTEMPTED)

        requests.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()
        os.environ["AIRFLOW_CONN_KIBO_WRONG"] = json.dumps(
            {
                "conn_type": "kibo",
                "login": APP_KEY,
                "password": "rotated-away",
                "host": url,
                "extra": {"tenant_id": TENANT, "environment": "sandbox"},
            }
        )
        started = time.perf_counter()
        outcome = BulkRun(KiboHook("kibo_wrong", pool_size=8), plan.requests, max_concurrency=8).run()
        figures["wrong_s"] = time.perf_counter() - started
        counts = _emulator_state(url)
        figures["wrong_oauth"], figures["wrong_cancels"] = counts["oauth"], counts["cancel"]
        figures["wrong_not_attempted"] = outcome.count(NOT_ATTEMPTED)
    return figures


def bench_deferral(wait: int) -> dict[str, float]:

    try:
        # Imported here: TaskDeferred's module depends on the Airflow version.
        from airflow.sdk.exceptions import TaskDeferred  # noqa: PLC0415
    except ImportError:  # Airflow 3.0/3.1
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]  # noqa: PLC0415

    too_many = {"kind": "status", "status": 429, "retry_after": str(wait), "times": 1}
    with emulator(0.0, "1-10") as url:
        use_connection(url)
        hook = KiboHook("kibo_bench", max_retry_wait=wait + 10)
        hook.authenticate()
        requests.post(f"{url}/_emulator/faults", json={**too_many, "order_id": 1}, timeout=10)
        started = time.perf_counter()
        hook.cancel_order(1, "created_by_mistake")  # sleeps through the Retry-After
        sleeping = time.perf_counter() - started

        requests.post(f"{url}/_emulator/faults", json={**too_many, "order_id": 2}, timeout=10)
        operator = CancelOrderOperator(
            task_id="cancel",
            order_id=2,
            disposition_reason="created_by_mistake",
            kibo_conn_id="kibo_bench",
            deferrable=True,
        )
        started = time.perf_counter()
        try:
            operator.execute({})  # type: ignore[typeddict-item,unused-ignore]
        except TaskDeferred as deferred:
            trigger = deferred.trigger
        held = time.perf_counter() - started
        event = asyncio.run(_first_event(trigger))  # the triggerer's part: not worker time
        started = time.perf_counter()
        order = operator.execute_complete({}, event)  # type: ignore[typeddict-item,unused-ignore]
        held += time.perf_counter() - started
        assert order["orderStatus"] == "CANCELED"
    return {"sleeping_s": sleeping, "deferrable_s": held, "wait_s": float(wait)}


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger fired no event")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.025)
    parser.add_argument("--repeats", type=int, default=5, help="bulk runs; the median is reported")
    parser.add_argument("--import-runs", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--fail-fast-orders", type=int, default=10_000)
    parser.add_argument("--retry-after", type=int, default=60, help="the wait of row 5, seconds")
    parser.add_argument("--only-tenant-budget", action="store_true", help="run row 6 alone")
    args = parser.parse_args()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"Machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}", flush=True)

    budget = bench_tenant_budget()
    budget_row = (
        "6. shared tenant budget: 4 tasks x 50 orders, tenant limit 50/s (Retry-After 5), budget 45/s",
        f"per task (today): {budget['alone_429']:.0f} 429s, {budget['alone_ratio']:.2f} x ideal; "
        f"shared: {budget['shared_429']:.0f} 429s, {budget['shared_ratio']:.2f} x ideal "
        f"({budget['ideal']:.2f} s); {budget['lost']:.0f} lost",
        "shared: 0 429s, <= 1.25 x ideal",
        budget["shared_429"] == 0 and budget["shared_ratio"] <= 1.25 and budget["lost"] == 0,
    )
    if args.only_tenant_budget:
        _print_rows([budget_row])
        return 0

    bulk = bench_bulk(args.orders, args.workers, args.latency, args.repeats)
    imports = bench_import(args.import_runs)
    overhead = bench_overhead(args.rounds, args.block)
    fail = bench_fail_fast(args.fail_fast_orders)
    deferral = bench_deferral(args.retry_after)

    rows = [
        (
            f"1. bulk: {args.orders} orders, {args.workers} workers, {1000 * args.latency:.0f} ms latency "
            f"(median of {args.repeats})",
            f"{bulk['ratio']:.2f} x ideal {bulk['ideal']:.2f} s (runs {bulk['low']:.2f}-{bulk['high']:.2f}); "
            f"bare requests on {args.workers} threads {bulk['bare']:.2f} x; "
            f"sequential loop {bulk['sequential_ratio']:.1f} x ({bulk['sequential']:.1f} s)",
            "<= 1.15 x ideal",
            bulk["ratio"] <= 1.15,
        ),
        (
            "2. import cost beyond `import airflow.sdk`",
            f"{imports['ours_ms']:.1f} ms (HttpOperator {imports['http_ms']:.1f} ms)",
            "<= 25 ms and below HttpOperator",
            imports["ours_ms"] <= 25 and imports["ours_ms"] < imports["http_ms"],
        ),
        (
            "3. KiboHook.cancel_order vs bare Session.post",
            f"{overhead['hook_us']:.0f} us vs {overhead['bare_us']:.0f} us per request "
            f"= {overhead['ratio']:.3f} x",
            "<= 1.10 x",
            overhead["ratio"] <= 1.10,
        ),
        (
            f"4a. failing fast: {args.fail_fast_orders} orders, Kibo answering 503 to everything",
            f"{fail['down_s']:.1f} s = {fail['down_s'] / fail['one_order_s']:.2f} x one order's full retry "
            f"schedule ({fail['one_order_s']:.1f} s); {fail['down_requests']:.0f} requests; "
            f"{fail['down_not_attempted']:.0f} not attempted",
            "< 2 x one order's schedule, <= 100 requests",
            fail["down_s"] < 2 * fail["one_order_s"] and fail["down_requests"] <= 100,
        ),
        (
            f"4b. failing fast: {args.fail_fast_orders} orders, wrong shared secret",
            f"{fail['wrong_oauth']:.0f} OAuth request(s), {fail['wrong_cancels']:.0f} cancels in "
            f"{fail['wrong_s']:.2f} s; {fail['wrong_not_attempted']:.0f} not attempted",
            "1 OAuth request, 0 cancels",
            fail["wrong_oauth"] == 1 and fail["wrong_cancels"] == 0,
        ),
        (
            f"5. worker time held while Kibo asks to wait {args.retry_after} s",
            f"deferrable {deferral['deferrable_s']:.2f} s = "
            f"{100 * deferral['deferrable_s'] / deferral['wait_s']:.1f} % of the wait; sleeping "
            f"{deferral['sleeping_s']:.1f} s = {100 * deferral['sleeping_s'] / deferral['wait_s']:.0f} %",
            "deferrable < 5 % of the wait",
            deferral["deferrable_s"] < 0.05 * deferral["wait_s"],
        ),
        budget_row,
    ]
    _print_rows(rows)
    return 0


def _print_rows(rows: list[tuple[str, str, str, bool]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    print(f"\n| {'benchmark':<{widths[0]}} | {'measured':<{widths[1]}} | {'target':<{widths[2]}} | met |")
    print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 2)}|-----|")
    for name, measured, target, met in rows:
        verdict = "yes" if met else "NO"
        print(f"| {name:<{widths[0]}} | {measured:<{widths[1]}} | {target:<{widths[2]}} | {verdict} |")


if __name__ == "__main__":
    sys.exit(main())
