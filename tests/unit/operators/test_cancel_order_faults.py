"""Faults met by CancelOrderOperator inside a DAG run in process
(`dag.test()`, against the emulator over HTTP): outcomes, attempts and task tries."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from tests.dag_runs import Run, run_in_process
from tests.support import (
    OPEN_ORDERS,
    SHARED_SECRET,
    kibo_connection,
    kibo_emulator,
    permanent_failure_line,
)

pytestmark = pytest.mark.dag_run


@pytest.fixture(scope="module")
def fault_run() -> Iterator[Run]:
    with kibo_emulator() as emu:
        emu.add_orders(OPEN_ORDERS)
        emu.inject("status", status=400, order_id=1051)
        emu.inject("status", status=429, retry_after="2", order_id=1052)
        emu.inject("slow_after_apply", delay=4, order_id=1053)
        # Applied, answer lost; the read-back then fails too, so the first task try fails retryably.
        emu.inject("drop_after_apply", order_id=1054)
        emu.inject("status", status=503, endpoint="get_order", times=2, order_id=1054)
        result = run_in_process(
            "kibo_fault_injection",
            connections={
                "kibo_default": kibo_connection(emu),
                "kibo_short_timeout": kibo_connection(emu, timeout=1, max_attempts=2),
            },
        )
        yield result, emu


def cancels(emu: KiboEmulator, order_id: int) -> list[float]:
    return [r.received_at for r in emu.requests_to("cancel") if r.body["orderId"] == order_id]


def test_400_is_sent_once_and_fails_without_task_retries(fault_run: Run) -> None:
    result, emu = fault_run
    assert result.state("bad_request") == "failed"
    assert result.tries[("bad_request", -1)] == 1
    assert len(cancels(emu, 1051)) == 1
    assert re.search(
        permanent_failure_line("Kibo POST /api/v2/order/action/cancel failed (order 1051; HTTP 400"),
        result.output,
    )


def test_429_waits_retry_after_inside_the_task(fault_run: Run) -> None:
    result, emu = fault_run
    assert result.state("rate_limited") == "success"
    assert result.tries[("rate_limited", -1)] == 1
    first, second = cancels(emu, 1052)
    assert second - first >= 2.0
    assert "HTTP 429 on attempt 1 of 5; retrying in 2.0 s" in result.output


def test_applied_then_timed_out_ends_canceled_exactly_once(fault_run: Run) -> None:
    result, emu = fault_run
    assert result.state("applied_then_timed_out") == "success"
    assert result.tries[("applied_then_timed_out", -1)] == 1
    assert len(cancels(emu, 1053)) == 2
    assert emu.cancels_applied(1053) == 1
    assert result.xcom[("applied_then_timed_out", -1)]["orderStatus"] == "CANCELED"
    # Our own lost attempt applied it: reported as a plain success, not as "canceled already".
    assert "Order 1053: orderStatus CANCELED" in result.output
    assert "Order 1053 was canceled already" not in result.output


def test_a_task_retry_of_an_applied_cancel_succeeds(fault_run: Run) -> None:
    result, emu = fault_run
    assert result.state("task_retry_after_applied") == "success"
    assert result.tries[("task_retry_after_applied", -1)] == 2
    assert emu.cancels_applied(1054) == 1
    assert result.xcom[("task_retry_after_applied", -1)]["orderID"] == 1054


def test_no_secret_or_token_in_the_task_logs(fault_run: Run) -> None:
    result, emu = fault_run
    tokens = set(emu.issued_tokens())
    assert len(tokens) >= 4 and "retrying in" in result.output
    assert SHARED_SECRET not in result.output
    assert not [token for token in tokens if token in result.output]
