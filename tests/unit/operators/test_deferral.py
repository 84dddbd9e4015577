"""Deferrable operators (operators/deferral.py): Kibo's long Retry-After is spent deferred in a DAG run in
process (`dag.test()` runs the trigger inline), cancels are sent only by workers, and a non-deferrable
bulk run stops at a 429 wall instead of firing into it; the deferral settings and budget directly. Under
a real scheduler and triggerer: tests/integration/test_deferral_triggerer.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_provider_kibo_cancel._compat import TaskDeferred
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import KiboRateLimitError
from airflow_provider_kibo_cancel.operators.deferral import defer_until_kibo_accepts, deferral_problems
from airflow_provider_kibo_cancel.triggers.retry_after import KiboRetryAfterTrigger
from tests.dag_runs import Run, run_in_process
from tests.support import kibo_connection, kibo_emulator
from tests.unit.operators.test_ledger import _single

pytestmark = pytest.mark.dag_run


@pytest.fixture(scope="module")
def deferral_run() -> Iterator[Run]:
    with kibo_emulator(latency=0.02) as emu:
        emu.add_orders(range(1500, 1800))
        for order_id in (1500, 1620, 1680):
            emu.inject("status", status=429, retry_after="3", order_id=order_id)
        emu.inject("status", status=429, retry_after="5", order_id=1501)
        emu.inject("drop_after_apply", order_id=1502)
        emu.inject("status", status=429, retry_after="3", order_id=1502)
        # Order 1640's cancel is applied but its answer lost, then its retry meets a 429 (Retry-After: 3):
        # re-sent after the deferral, it is found canceled, and the cancel was this run's.
        emu.inject("drop_after_apply", order_id=1640)
        emu.inject("status", status=429, retry_after="3", order_id=1640)
        emu.inject("status", status=429, retry_after="30", order_id=1710)
        connections = {
            "kibo_default": kibo_connection(emu),
            "kibo_short_sleep": kibo_connection(emu, max_retry_wait=1),
        }
        yield run_in_process("kibo_deferral", connections=connections), emu


def cancels_of(emu: KiboEmulator, order_ids: range) -> list[int]:
    return [r.body["orderId"] for r in emu.requests_to("cancel") if r.body["orderId"] in order_ids]


def test_a_deferrable_cancel_defers_resumes_and_cancels_once(deferral_run: Run) -> None:
    result, emu = deferral_run
    assert result.state("single") == "success", result.output[-3000:]
    assert result.xcom[("single", -1)]["orderStatus"] == "CANCELED"
    assert emu.cancels_applied(1500) == 1
    sent = [r.received_at for r in emu.requests_to("cancel") if r.body["orderId"] == 1500]
    assert len(sent) == 2 and sent[1] - sent[0] >= 2.9  # the 429, then the resumed worker's cancel
    assert "Kibo asked to wait 3 s (Retry-After): deferring until" in result.output


def test_a_cancel_applied_before_the_wait_is_reported_as_this_tasks(deferral_run: Run) -> None:
    result, emu = deferral_run
    task = "single_applied_before_the_wait"
    assert result.state(task) == "success", result.output[-3000:]
    assert result.xcom[(task, -1)]["orderStatus"] == "CANCELED"
    assert emu.cancels_applied(1502) == 1
    assert len(cancels_of(emu, range(1502, 1503))) == 3  # answer lost, the 429, the resumed worker's 409
    assert "Order 1502: orderStatus CANCELED" in result.output
    assert "Order 1502 was canceled already" not in result.output


def test_a_deferrable_bulk_run_resumes_with_only_the_orders_left(deferral_run: Run) -> None:
    result, emu = deferral_run
    assert result.state("bulk") == "success", result.output[-3000:]
    summary = result.xcom[("bulk", -1)]
    assert summary["canceled"] == list(range(1600, 1700))  # as an uninterrupted run: all, in input order
    for bucket in ("already_canceled", "failed", "not_attempted", "invalid", "duplicates"):
        assert summary[bucket] == [], bucket
    assert result.xcoms[("bulk", -1, "summary")] == summary
    assert all(emu.cancels_applied(i) == 1 for i in range(1600, 1700))
    sent = cancels_of(emu, range(1600, 1700))
    assert sorted(set(sent)) == list(range(1600, 1700))
    # Only the rate-limited orders were sent again: 1620 and 1680 once more, 1640 twice (its answer was
    # lost, then the 429): in `canceled` above, not `already_canceled`, though Kibo had applied it before.
    assert len(sent) == 100 + 4
    assert emu.cancels_applied(1640) == 1
    assert result.output.count("deferring until") >= 3  # single, and bulk at least twice


def test_deferral_beyond_max_deferred_wait_fails_retryable(deferral_run: Run) -> None:
    result, emu = deferral_run
    assert result.state("over_budget") == "failed"
    assert emu.cancels_applied(1501) == 0
    # Raised as the retryable KiboRateLimitError, not wrapped in AirflowFailException (no retries).
    lines = [line for line in result.output.splitlines() if "exceeds max_deferred_wait (2 s)" in line]
    assert lines, "the task's error was not logged"
    assert any("KiboRateLimitError" in line for line in lines), lines
    assert not any("AirflowFailException" in line for line in lines), lines


def test_a_non_deferrable_bulk_run_stops_at_a_429_wall(deferral_run: Run) -> None:
    result, emu = deferral_run
    assert result.state("bulk_no_defer") == "failed"
    summary = result.xcoms[("bulk_no_defer", -1, "summary")]
    assert summary["halted"] == "rate_limited"
    every = (
        summary["canceled"]
        + summary["already_canceled"]
        + summary["not_attempted"]
        + [f["order_id"] for f in summary["failed"]]
    )
    assert sorted(every) == list(range(1700, 1800))
    assert summary["not_attempted"], "the run should have stopped dispatching"
    # The 429 reaches the client once the emulator has answered it (latency 0.02 s) and the client has
    # read it; requests already on their way by then may still arrive, nothing dispatched afterwards.
    wall = next(r.received_at for r in emu.requests_to("cancel") if r.body["orderId"] == 1710) + 0.02 + 0.05
    after = [
        r
        for r in emu.requests_to("cancel")
        if r.body["orderId"] in range(1700, 1800) and r.received_at > wall
    ]
    assert len(after) <= 4, f"{len(after)} cancels were sent after the 429 (max_concurrency 4)"
    assert "it accepts calls again at" in result.output
    applied = {i for i in range(1700, 1800) if emu.cancels_applied(i)}
    assert applied == set(summary["canceled"])


# --- operators/deferral.py itself: the settings, the budget, the trigger it defers with ----------------


@pytest.mark.parametrize(
    ("settings", "problems"),
    [
        ((True, 30, 3600), []),
        ((False, 0, 0.5), []),
        (("yes", 30, 3600), ["deferrable must be True or False, got 'yes'"]),
        ((True, -1, 3600), ["defer_threshold must be a number of seconds >= 0, got -1"]),
        ((True, 30, float("inf")), ["max_deferred_wait must be a number of seconds >= 0, got inf"]),
        (
            (True, True, "60"),
            [
                "defer_threshold must be a number of seconds >= 0, got True",
                "max_deferred_wait must be a number of seconds >= 0, got '60'",
            ],
        ),
    ],
)
def test_deferral_settings_are_checked_with_every_problem_named(
    settings: tuple[object, object, object], problems: list[str]
) -> None:
    assert deferral_problems(*settings) == problems


def test_a_wait_within_the_budget_defers_with_the_state_and_the_time_spent() -> None:
    operator = _single(1001, deferrable=True)
    before = time.time()
    with pytest.raises(TaskDeferred) as caught:
        defer_until_kibo_accepts(
            operator, wait=20, state={"deferred_seconds": 5.0, "left": [1001]}, max_deferred_wait=60
        )
    assert caught.value.method_name == "execute_complete"
    trigger = caught.value.trigger
    assert isinstance(trigger, KiboRetryAfterTrigger)
    assert trigger.state == {"deferred_seconds": 25.0, "left": [1001]}
    assert before + 20 <= trigger.resume_at <= time.time() + 20


def test_a_wait_beyond_the_budget_fails_retryably_without_deferring() -> None:
    operator = _single(1001, deferrable=True)
    with pytest.raises(KiboRateLimitError, match=r"exceeds max_deferred_wait \(60 s\)") as caught:
        defer_until_kibo_accepts(operator, wait=30, state={"deferred_seconds": 40.0}, max_deferred_wait=60)
    assert not isinstance(caught.value, TaskDeferred)
    assert "Nothing more was sent" in str(caught.value)
