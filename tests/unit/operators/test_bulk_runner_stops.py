"""The bulk run and both operators stopped: stop(), a real SIGINT, on_kill and kills at every stage, with
nothing sent after; test_connection() on 404s that are and are not Kibo's. Against the emulator over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboBulkCancelError,
    KiboCircuitOpenError,
    KiboStoppedError,
)
from airflow_provider_kibo_cancel.hooks.policy import CircuitBreaker, retry_after_seconds
from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.bulk_runner import BulkRun
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator
from airflow_provider_kibo_cancel.operators.outcome import CANCELED, FAILED, NOT_ATTEMPTED, STOPPED
from tests.support import Connect

# --- stops that hold ----------------------------------------------------------------------------------


def slow_run(emulator: KiboEmulator, connect: Connect) -> BulkRun:
    emulator.latency = 0.05
    hook = connect(emulator, "kibo_faults")
    hook.authenticate()
    plan = plan_bulk_cancel(list(range(1000, 1100)), "created_by_mistake")
    return BulkRun(hook, plan.requests, max_concurrency=4)


def assert_nothing_sent_after(emulator: KiboEmulator, moment: float) -> None:
    late = [r for r in emulator.requests_to("cancel") if r.received_at > moment]
    assert late == [], f"{len(late)} cancels reached Kibo after the run ended"


class AfterTheFirstCancel:
    """Runs an action ``delay`` s after the emulator received the first cancel, in a thread: not after a
    fixed time from the start, since on a busy machine the hook may take longer than that to send
    anything, and the stop would come before the run it is meant to stop. ``ran_at`` holds the moment it
    ran; it stays empty when no cancel came within 30 s or the test ended first (``cancel()``)."""

    def __init__(self, emulator: KiboEmulator, action: Any, *args: Any, delay: float = 0.3) -> None:
        self.ran_at: list[float] = []
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._wait_then_act, args=(emulator, action, args, delay))
        self._thread.start()

    def _wait_then_act(
        self, emulator: KiboEmulator, action: Any, args: tuple[Any, ...], delay: float
    ) -> None:
        deadline = time.monotonic() + 30
        while not emulator.requests_to("cancel"):
            if time.monotonic() > deadline or self._ended.wait(0.01):
                return
        if self._ended.wait(delay):
            return
        self.ran_at.append(time.monotonic())
        action(*args)

    def cancel(self) -> None:
        """Called at the test's end: the action is not taken any more, and the thread is gone."""
        self._ended.set()
        self._thread.join()


@pytest.fixture
def after_the_first_cancel() -> Iterator[Callable[..., AfterTheFirstCancel]]:
    """``after_the_first_cancel(emulator, action, *args)``; no action outlives the test."""
    scheduled: list[AfterTheFirstCancel] = []

    def schedule(emulator: KiboEmulator, action: Any, *args: Any) -> AfterTheFirstCancel:
        scheduled.append(AfterTheFirstCancel(emulator, action, *args))
        return scheduled[-1]

    yield schedule
    for each in scheduled:
        each.cancel()


def test_stop_ends_a_run_and_nothing_is_sent_after_it_returns(
    emulator: KiboEmulator, connect: Connect, after_the_first_cancel: Callable[..., AfterTheFirstCancel]
) -> None:
    run = slow_run(emulator, connect)
    after_the_first_cancel(emulator, run.stop)
    outcome = run.run()
    ended = time.time()
    time.sleep(0.5)
    assert outcome.halted == STOPPED
    assert_nothing_sent_after(emulator, ended)
    assert 0 < outcome.count(CANCELED) < 100
    assert outcome.count(NOT_ATTEMPTED) > 0
    assert sum(outcome.count(b) for b in (CANCELED, FAILED, NOT_ATTEMPTED)) == 100
    # What the summary says was canceled is exactly what Kibo applied.
    applied = {int(k) for k, v in emulator.snapshot()["cancels_applied"].items() if v}
    assert applied == {oid for oid, bucket in outcome.results.items() if bucket == CANCELED}


def test_an_interrupt_stops_the_run_and_is_re_raised(
    emulator: KiboEmulator, connect: Connect, after_the_first_cancel: Callable[..., AfterTheFirstCancel]
) -> None:
    run = slow_run(emulator, connect)
    # A real SIGINT, as Ctrl-C sends it (Python raises KeyboardInterrupt in the main thread); pytest-xdist
    # workers ignore SIGINT, so a handler that raises it is put in for this test. It is disarmed once the
    # run has returned: a SIGINT that comes too late (a run that ended early) must not stop the session.
    armed = True

    def interrupt(signum: int, frame: Any) -> None:
        if armed:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    interrupting = after_the_first_cancel(emulator, os.kill, os.getpid(), signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            run.run()
    finally:
        armed = False
        interrupting.cancel()
        signal.signal(signal.SIGINT, previous)
    ended = time.time()
    time.sleep(0.5)
    assert_nothing_sent_after(emulator, ended)
    assert sum(run.outcome.count(b) for b in (CANCELED, FAILED, NOT_ATTEMPTED)) == 100
    assert run.outcome.count(NOT_ATTEMPTED) > 0


def test_a_stopped_hook_sends_nothing_and_says_so(emulator: KiboEmulator, connect: Connect) -> None:
    hook = connect(emulator, "kibo_faults")
    hook.stop()
    with pytest.raises(KiboStoppedError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.sent
    assert emulator.requests == []


def test_a_retry_waiting_in_backoff_is_not_sent_after_a_stop(
    emulator: KiboEmulator, connect: Connect, after_the_first_cancel: Callable[..., AfterTheFirstCancel]
) -> None:
    hook = connect(emulator, "kibo_faults", backoff_base=5)
    hook.authenticate()
    emulator.inject("status", status=503, times=None)
    stopping = after_the_first_cancel(emulator, hook.stop)
    with pytest.raises(KiboStoppedError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert (
        stopping.ran_at and time.monotonic() - stopping.ran_at[0] < 1.0
    )  # the 2.5-5 s backoff ended at the stop
    assert caught.value.sent and caught.value.may_have_applied
    assert len(emulator.requests_to("cancel")) == 1


def test_the_circuit_open_error_is_not_a_send(emulator: KiboEmulator, connect: Connect) -> None:
    hook = connect(emulator, "kibo_faults")
    hook._retry._breakers["cancel"] = CircuitBreaker(threshold=1)
    hook._retry.breaker("cancel").record_exhausted(time.monotonic(), "test")
    with pytest.raises(KiboCircuitOpenError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.sent and caught.value.retryable
    assert emulator.requests_to("cancel") == []


def test_expired_date_math_sanity() -> None:
    # formatdate in the past and the future round-trips through retry_after_seconds (guards a tz slip).
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    assert retry_after_seconds(formatdate(now + 30, usegmt=True)) == pytest.approx(30, abs=2)


# --- test_connection and on_kill -----------------------------------------------------------------------


def test_test_connection_fails_on_a_404_that_is_not_kibos(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("html", endpoint="get_order", status=404)
    ok, message = connect(emulator, "kibo_faults").test_connection()
    assert not ok
    assert "does not answer like Kibo: GET /api/v2/order/1 gave HTTP 404 (text/html)" in message
    assert "Maintenance" in message  # an excerpt of what answered


def test_test_connection_accepts_kibos_404(emulator: KiboEmulator, connect: Connect) -> None:
    ok, message = connect(emulator, "kibo_faults").test_connection()
    assert ok, message  # the emulator has no order 1: Kibo's JSON 404


class _TaskInstance:
    """Just enough of a task instance for execute(): XCom pushes are kept."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_on_kill_stops_a_running_bulk_task(
    emulator: KiboEmulator, connect: Connect, after_the_first_cancel: Callable[..., AfterTheFirstCancel]
) -> None:

    emulator.latency = 0.05
    connect(emulator, "kibo_faults")
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1100)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_faults",
        max_concurrency=4,
    )
    ti = _TaskInstance()
    # What the task runner's SIGTERM handler does (kill, "mark failed"): call on_kill while execute runs.
    after_the_first_cancel(emulator, operator.on_kill)
    with pytest.raises(KiboBulkCancelError, match="Bulk cancel stopped early: the task was stopped"):
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    ended = time.time()
    time.sleep(0.5)
    assert_nothing_sent_after(emulator, ended)
    summary = ti.pushed["summary"]
    assert summary["halted"] == STOPPED and summary["not_attempted"]
    everything = summary["canceled"] + summary["not_attempted"] + [f["order_id"] for f in summary["failed"]]
    assert sorted(everything) == list(range(1000, 1100))


def test_a_kill_while_the_plan_is_checked_sends_nothing(emulator: KiboEmulator, connect: Connect) -> None:
    # SIGTERM can arrive before the run's hook exists (while the orders are validated): on_kill must
    # still hold, so the run that follows sends nothing.

    connect(emulator, "kibo_faults")
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1050)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_faults",
    )
    ti = _TaskInstance()
    operator.on_kill()  # what the task runner's handler calls; no hook has been built yet
    with pytest.raises(KiboBulkCancelError, match="the task was stopped"):
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    assert emulator.requests_to("cancel") == []
    summary = ti.pushed["summary"]
    assert summary["halted"] == STOPPED and summary["not_attempted"] == list(range(1000, 1050))


def test_a_kill_stops_a_single_cancel_waiting_out_its_backoff(
    emulator: KiboEmulator, connect: Connect, after_the_first_cancel: Callable[..., AfterTheFirstCancel]
) -> None:

    connect(emulator, "kibo_faults", backoff_base=4)
    emulator.inject("status", status=503, times=None)
    operator = CancelOrderOperator(
        task_id="one", order_id=1001, disposition_reason="created_by_mistake", kibo_conn_id="kibo_faults"
    )
    killing = after_the_first_cancel(emulator, operator.on_kill)  # its 503 starts a 2-4 s backoff
    with pytest.raises(KiboStoppedError):
        operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert (
        killing.ran_at and time.monotonic() - killing.ran_at[0] < 1.0
    )  # the 2-4 s backoff ended at the kill
    assert len(emulator.requests_to("cancel")) == 1
