"""BulkCancelOrdersOperator: exact summary buckets, each order canceled once, 429 storms, re-runs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboValidationError
from devtools.airflow_local import AirflowEnv, DagRunResult
from tests.support import APP_KEY, SHARED_SECRET, TENANT, kibo_connection

Run = tuple[DagRunResult, KiboEmulator]


def emulator_with_orders() -> KiboEmulator:
    emu = KiboEmulator(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET})
    emu.add_orders(range(1000, 2000))
    emu.add_orders(range(2000, 2010), status="CANCELED")
    return emu


@pytest.fixture(scope="module")
def bulk_run(airflow_env: AirflowEnv) -> Iterator[Run]:
    with emulator_with_orders() as emu:
        for order_id in range(1100, 1300, 8):  # a storm: one in eight storm orders is rate limited first
            emu.inject("status", status=429, retry_after="1", order_id=order_id)
        result = airflow_env.run_dag(
            "kibo_bulk_cancel",
            conf={"orders": [1700, 1701, 1702], "reason": "customer_changed_mind"},
            connections={"kibo_default": kibo_connection(emu, max_attempts=10)},
        )
        yield result, emu


def test_plan_splits_the_input() -> None:
    plan = plan_bulk_cancel(
        [
            1,
            "2",
            2,
            {"order_id": 3, "disposition_reason": "other", "disposition_other_reason": "x"},
            0,
            {"order": 4},
            {"order_id": 5},
            {"order_id": 6, "disposition_reason": "created_by_mistake"},
        ],
        "other",
        "default note",
    )
    assert [(r.order_id, r.disposition_reason, r.disposition_other_reason) for r in plan.requests] == [
        (1, "other", "default note"),
        (2, "other", "default note"),
        (3, "other", "x"),
        (5, "other", "default note"),
        (6, "created_by_mistake", None),  # the default note goes with the default reason only
    ]
    assert plan.invalid == [
        {"input": 0, "errors": ["order_id must be >= 1, got 0"]},
        {"input": {"order": 4}, "errors": ["unknown keys ['order']"]},
    ]
    assert plan.duplicates == [{"order_id": 2, "input": 2}]
    assert plan.total == 8


@pytest.mark.parametrize("orders", [None, 5, {"order_id": 1}, "not a list"])
def test_orders_that_are_not_a_list_are_rejected(orders: object) -> None:
    with pytest.raises(KiboValidationError, match="orders must be a list of order ids or dicts"):
        plan_bulk_cancel(orders, "created_by_mistake")


def test_a_missing_reason_makes_an_entry_invalid() -> None:
    plan = plan_bulk_cancel([1], None)
    assert plan.invalid[0]["errors"] == [
        "disposition_reason is required: give it per order or as the operator's default"
    ]


def test_mixed_input_lands_in_exact_buckets(bulk_run: Run) -> None:
    result, emu = bulk_run
    assert result.state("mixed") == "success", result.output[-3000:]
    summary = result.xcom[("mixed", -1)]
    assert sorted(summary["canceled"]) == [1001, 1002, 1003, 1004]
    assert summary["already_canceled"] == [2001]
    assert [(f["order_id"], f["status"], f["error_code"], f["retryable"]) for f in summary["failed"]] == [
        (424242, 404, "GENERIC_NOT_FOUND", False)
    ]
    assert summary["failed"][0]["correlation_id"]
    assert [i["input"] for i in summary["invalid"]] == [
        "abc",
        {"order_id": 1005, "disposition_reason": "Bad Reason"},
    ]
    assert summary["duplicates"] == [{"order_id": 1002, "input": 1002}]
    buckets = ("canceled", "already_canceled", "failed", "invalid", "duplicates")
    assert sum(len(summary[b]) for b in buckets) == summary["total"] == 9
    assert "orders" not in summary  # XCom stays small unless include_orders=True
    for order_id in (1001, 1002, 1003, 1004):
        assert emu.cancels_applied(order_id) == 1
    other = [r.body for r in emu.requests_to("cancel") if r.body["orderId"] == 1003]
    assert other[-1]["dispositionOtherReason"] == "Duplicate order"


def test_a_429_storm_still_cancels_everything_once(bulk_run: Run) -> None:
    result, emu = bulk_run
    assert result.state("storm") == "success", result.output[-3000:]
    summary = result.xcom[("storm", -1)]
    assert sorted(summary["canceled"]) == list(range(1100, 1300))
    assert summary["failed"] == [] and summary["already_canceled"] == []
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(1100, 1300))
    assert "Bulk cancel progress: " in result.output and "orders/s, ETA" in result.output
    limited = [r for r in emu.requests_to("cancel") if r.body["orderId"] in range(1100, 1300, 8)]
    assert len(limited) == 2 * 25  # each rate-limited order was sent twice, and canceled once
    waited = re.findall(r"for order (\d+): HTTP 429 on attempt 1 of 10; retrying in 1\.0 s", result.output)
    assert {int(order_id) for order_id in waited} == set(range(1100, 1300, 8))


def test_templated_orders_and_include_orders(bulk_run: Run) -> None:
    result, emu = bulk_run
    summary = result.xcom[("from_conf", -1)]
    assert sorted(summary["canceled"]) == [1700, 1701, 1702]
    assert summary["orders"]["1700"] == emu.order(1700)


def test_dry_run_sends_nothing(bulk_run: Run) -> None:
    result, emu = bulk_run
    summary = result.xcom[("dry_run", -1)]
    assert summary["dry_run"] is True
    assert summary["would_cancel"] == [1400, 1401]
    assert [i["input"] for i in summary["invalid"]] == ["x"]
    assert not [r for r in emu.requests_to("cancel") if r.body["orderId"] in (1400, 1401)]


def test_fails_at_the_end_after_attempting_everything(bulk_run: Run) -> None:
    result, emu = bulk_run
    assert result.state("fails_at_the_end") == "failed"
    assert result.tries[("fails_at_the_end", -1)] == 1  # a 404 will not heal: no task retry
    assert emu.cancels_applied(1500) == 1 and emu.cancels_applied(1501) == 1
    assert "Bulk cancel finished with 1 failed and 0 invalid of 3 entries (2 canceled" in result.output


def test_a_rerun_after_a_partial_failure_cancels_only_what_is_left(airflow_env: AirflowEnv) -> None:
    with emulator_with_orders() as emu:
        connections = {"kibo_default": kibo_connection(emu, max_attempts=2)}
        for order_id in (1605, 1606, 1607):
            emu.inject("status", status=503, times=None, order_id=order_id)
            emu.inject("status", status=503, endpoint="get_order", times=None, order_id=order_id)
        first = airflow_env.run_dag("kibo_bulk_rerun", connections=connections)
        assert first.state("cancel") == "failed"
        assert "Bulk cancel finished with 3 failed and 0 invalid of 20 entries (17 canceled" in first.output
        emu.clear_faults()
        second = airflow_env.run_dag("kibo_bulk_rerun", connections=connections)
    assert second.state("cancel") == "success"
    summary = second.xcom[("cancel", -1)]
    assert sorted(summary["canceled"]) == [1605, 1606, 1607]
    assert len(summary["already_canceled"]) == 17
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(1600, 1620))
