"""BulkCancelOrdersOperator in DAG runs in process (`dag.test()`, against the emulator over HTTP): exact
summary buckets, each order canceled once, 429 storms, templated input, dry run, re-runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from tests.dag_runs import Run, run_in_process
from tests.support import kibo_connection, kibo_emulator

pytestmark = pytest.mark.dag_run


def emulator_with_orders() -> KiboEmulator:
    return kibo_emulator(range(1000, 2000), range(2000, 2010))


@pytest.fixture(scope="module")
def bulk_run() -> Iterator[Run]:
    with emulator_with_orders() as emu:
        result = run_in_process(
            "kibo_bulk_cancel",
            conf={"orders": [1700, 1701, 1702], "reason": "customer_changed_mind"},
            connections={"kibo_default": kibo_connection(emu, max_attempts=10)},
        )
        yield result, emu


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


def test_a_rerun_after_a_partial_failure_cancels_only_what_is_left() -> None:
    with emulator_with_orders() as emu:
        connections = {"kibo_default": kibo_connection(emu, max_attempts=2)}
        for order_id in (1605, 1606, 1607):
            emu.inject("status", status=503, times=None, order_id=order_id)
            emu.inject("status", status=503, endpoint="get_order", times=None, order_id=order_id)
        first = run_in_process("kibo_bulk_rerun", connections=connections)
        assert first.state("cancel") == "failed"
        assert "Bulk cancel finished with 3 failed and 0 invalid of 20 entries (17 canceled" in first.output
        emu.clear_faults()
        second = run_in_process("kibo_bulk_rerun", connections=connections)
    assert second.state("cancel") == "success"
    summary = second.xcom[("cancel", -1)]
    assert sorted(summary["canceled"]) == [1605, 1606, 1607]
    assert len(summary["already_canceled"]) == 17
    assert all(emu.cancels_applied(order_id) == 1 for order_id in range(1600, 1620))
