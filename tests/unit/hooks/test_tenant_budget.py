"""The tenant budget within one process: the emulator's tenant-wide limit, the per-task fallback and
the learning arithmetic (no Redis, no Airflow processes)."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from airflow_provider_kibo_cancel.connection import KiboConnectionSettings, budget_settings
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.emulator.__main__ import _parser
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.hooks.tenant_budget import (
    DECREASE_FACTOR,
    INCREASE_PER_MINUTE,
    MIN_SAMPLES,
    LocalTenantBudget,
    decreased,
    increased,
    step_for,
)
from tests.support import APP_KEY, SHARED_SECRET, TENANT, Connect, kibo_connection


def _token(emu: KiboEmulator) -> str:
    answer = requests.post(
        emu.url + "/api/platform/applications/authtickets/oauth",
        json={"client_id": APP_KEY, "client_secret": SHARED_SECRET, "grant_type": "client_credentials"},
        timeout=5,
    )
    token: str = answer.json()["access_token"]
    return token


def test_the_emulator_blocks_the_tenant_beyond_its_limit_for_retry_after() -> None:
    with KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET}) as emu:
        emu.add_orders(range(1, 40))
        emu.tenant_limit.configure(10, retry_after=2)
        headers = {"Authorization": f"Bearer {_token(emu)}", "x-vol-tenant": TENANT}
        with requests.Session() as session:
            statuses = [
                session.get(f"{emu.url}/api/v2/order/{i}", headers=headers, timeout=5) for i in range(1, 16)
            ]
        assert [r.status_code for r in statuses] == [200] * 10 + [429] * 5
        assert statuses[10].headers["Retry-After"] == "2" and statuses[10].content == b""
        assert emu.tenant_limit.snapshot()["episodes"] == 1
        # OAuth is not the tenant's host: not counted, not blocked.
        assert _token(emu)
        time.sleep(2.1)
        assert requests.get(f"{emu.url}/api/v2/order/1", headers=headers, timeout=5).status_code == 200


def test_the_tenant_limit_is_set_through_the_control_api_and_the_command_line() -> None:
    with KiboEmulator(tenants=(TENANT,)) as emu:
        control = emu.url + "/_emulator/tenant_limit"
        limit = {"requests_per_second": 50, "retry_after": 15}
        answer = requests.post(control, json=limit, timeout=5).json()
        assert (answer["requests_per_second"], answer["retry_after"], answer["episodes"]) == (50.0, 15.0, 0)
        assert requests.get(control, timeout=5).json()["requests_per_second"] == 50
        requests.post(control, json={"requests_per_second": None}, timeout=5)
        assert emu.tenant_limit.requests_per_second is None
    args = _parser().parse_args(["--tenant-limit", "50", "--tenant-retry-after", "15"])
    assert (args.tenant_limit, args.tenant_retry_after) == (50.0, 15.0)


# --- the learning arithmetic ----------------------------------------------------------------------


def test_a_429_cuts_the_rate_being_sent_once_and_successes_raise_it_slowly() -> None:
    # Nothing learned, 60 sent in the last second: 85 % of what was sent.
    assert decreased(None, 60.0) == pytest.approx(51.0)
    # A learned rate below what the window shows (a burst): the cut is from the rate in force.
    assert decreased(40.0, 60.0) == pytest.approx(34.0)
    # Too few sent to say anything: a task that sent three calls did not cause the tenant's 429.
    assert decreased(None, 3.0) is None and decreased(20.0, 3.0) == 20.0
    assert decreased(None, 10.0) == pytest.approx(8.5) and decreased(1.0, 1000.0) == 1.0
    rate = 40.0
    step = step_for(rate)
    # A minute of successful sending adds 1.7 % of the rate set at the cut; never above the cap.
    for _ in range(60):
        rate = increased(rate, step, 1.0, cap=None)
    assert rate == pytest.approx(40.0 * (1 + INCREASE_PER_MINUTE))
    assert increased(44.9, step, 1.0, cap=45.0) == pytest.approx(44.9 + step / 60)
    assert increased(45.0, step, 1.0, cap=45.0) == 45.0
    # Idle time does not count: one call adds at most one second's worth.
    assert increased(40.0, step, 3600.0, cap=None) == pytest.approx(40.0 + step / 60)
    assert (DECREASE_FACTOR, MIN_SAMPLES) == (0.85, 10)


def test_the_extras_are_checked_with_the_connection() -> None:
    values, problems = budget_settings(
        {"tenant_requests_per_second": "45", "rate_limit_conn_id": "kibo_redis"}
    )
    assert (values, problems) == (
        {"tenant_requests_per_second": 45.0, "rate_limit_conn_id": "kibo_redis"},
        [],
    )
    assert budget_settings({"tenant_requests_per_second": "", "rate_limit_conn_id": None}) == ({}, [])
    for bad in (0, -1, "fast", True, float("inf")):
        _, problems = budget_settings({"tenant_requests_per_second": bad})
        assert problems and "tenant_requests_per_second" in problems[0]
    _, problems = budget_settings({"rate_limit_conn_id": "redis://:pw@host"})
    assert problems and "not a Redis URL" in problems[0] and "pw" not in problems[0]
    values, problems = budget_settings({"rate_limit_conn_id": "redis.shared"})  # Airflow allows dots
    assert (values, problems) == ({"rate_limit_conn_id": "redis.shared"}, [])
    _, problems = budget_settings({"tenant_requests_per_second": 1e-10})  # its slots would overflow
    assert problems and "at least 0.01" in problems[0]
    settings = KiboConnectionSettings.from_connection(
        "kibo_default",
        host=None,
        login="key",
        password="secret",
        extra={"tenant_id": TENANT, "environment": "sandbox", "tenant_requests_per_second": 12.5},
    )
    assert (settings.tenant_requests_per_second, settings.rate_limit_conn_id) == (12.5, None)


# --- the per-task budget (no rate_limit_conn_id) ------------------------------------------------------


def _hook(emu: KiboEmulator, monkeypatch: pytest.MonkeyPatch, **extra: object) -> KiboHook:
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_DEFAULT", json.dumps(kibo_connection(emu, **extra)))
    return KiboHook(max_retry_wait=5)


def _get_all(hook: KiboHook, order_ids: range, threads: int = 8) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(hook.get_order, order_ids))


def test_tenant_requests_per_second_caps_one_task_without_a_shared_store(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _hook(emulator, monkeypatch, tenant_requests_per_second=40)
    hook.authenticate()
    started = time.monotonic()
    _get_all(hook, range(1000, 1040))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed  # 40 slots at 40/s: the first at once, the last at 0.975 s
    assert isinstance(hook._retry_limits.budget, LocalTenantBudget)


def test_one_task_learns_the_tenant_limit_and_keeps_under_it(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kibo's limit 30/s, Retry-After 1: the task cuts its rate on the 429s, then sends without one."""
    emulator.tenant_limit.configure(30, retry_after=1)
    hook = _hook(emulator, monkeypatch)
    _get_all(hook, range(1000, 1100))
    budget = hook._retry_limits.budget
    limit = emulator.tenant_limit.snapshot()
    assert isinstance(budget, LocalTenantBudget) and budget.rate is not None, limit
    assert budget.rate < 30, (budget.rate, limit)
    assert 1 <= limit["episodes"] <= 2, limit
    # The same hook sends at the learned rate. The emulator shares this process's GIL (and the machine
    # its cores), so a stall can squeeze more than a second's slots into one of its windows: at most one
    # more 429 is tolerated here; the multi-process proofs (tests/integration) allow none.
    rate = budget.rate
    started = time.monotonic()
    _get_all(hook, range(1000, 1100), threads=4)
    assert time.monotonic() - started >= 0.9 * 100 / 30
    assert emulator.tenant_limit.snapshot()["episodes"] <= limit["episodes"] + 1, (rate, limit)
    assert all(emulator.order(i) is not None for i in range(1000, 1100))


def test_without_the_redis_client_the_budget_holds_per_task_with_a_warning(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "airflow_provider_kibo_cancel.hooks.redis_budget", None)
    hook = _hook(emulator, monkeypatch, rate_limit_conn_id="kibo_redis", tenant_requests_per_second=50)
    assert hook.get_order(1000)["orderID"] == 1000
    assert isinstance(hook._retry_limits.budget, LocalTenantBudget)
    assert capsys.readouterr().out.count("redis client is not installed") == 1


def test_a_missing_redis_connection_warns_once_and_the_run_goes_on_per_task(
    emulator: KiboEmulator, connect: Connect, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = connect(emulator, "kibo_budget_missing", rate_limit_conn_id="no_such_redis")
    for order_id in (1001, 1002):
        assert hook.cancel_order(order_id, "created_by_mistake")["orderID"] == order_id
    out = capsys.readouterr().out
    assert out.count("The shared rate budget's store cannot be reached") == 1
    assert "connection 'no_such_redis' cannot be used" in out
    assert emulator.cancels_applied(1001) == 1 and emulator.cancels_applied(1002) == 1
