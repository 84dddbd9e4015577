"""Sustained faults, at the hook and the bulk run: every transport error under the policy, the circuit
breaker, refused credentials, stops that hold, rate slots and 429 pauses. Real HTTP to the emulator."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboAuthenticationError,
    KiboCircuitOpenError,
    KiboError,
    KiboRedirectError,
    KiboServerError,
    KiboStoppedError,
    KiboTLSError,
    KiboTransportError,
)
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.hooks.policy import MIN_RETRY_WAIT, CircuitBreaker, retry_after_seconds
from airflow_provider_kibo_cancel.models import plan_bulk_cancel
from airflow_provider_kibo_cancel.operators.bulk_runner import (
    CANCELED,
    CIRCUIT_OPEN,
    FAILED,
    NOT_ATTEMPTED,
    STOPPED,
    BulkRun,
)
from tests.support import SHARED_SECRET, TENANT, tls_server_context
from tests.test_reliability import hook_for


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- every requests error under the policy ----------------------------------------------------------


@pytest.mark.parametrize("fault", ["truncated_after_apply", "undecodable_after_apply", "drop_after_apply"])
def test_an_answer_lost_after_the_cancel_was_applied_is_settled_by_reading_back(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    emulator.inject(fault)  # type: ignore[arg-type]
    result = hook_for(emulator, monkeypatch).cancel(
        plan_bulk_cancel([1001], "created_by_mistake").requests[0]
    )
    assert result.order["orderStatus"] == "CANCELED"
    assert not result.already_canceled  # our own lost attempt applied it
    assert emulator.cancels_applied(1001) == 1
    assert len(emulator.requests_to("cancel")) == 2  # the retry met a 409, then the order was read
    assert len(emulator.requests_to("get_order")) == 1


def test_connection_refused_never_reached_kibo(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    connection = {
        "conn_type": "kibo",
        "host": f"http://127.0.0.1:{port}",
        "extra": {"tenant_id": TENANT, "environment": "sandbox", "access_token": "t0k", "max_attempts": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_FAULTS", json.dumps(connection))
    with pytest.raises(KiboTransportError) as caught:
        KiboHook("kibo_faults", backoff_base=0).cancel_order(1001, "created_by_mistake")
    error = caught.value
    assert not error.may_have_applied  # so no read-back was tried
    assert error.retryable
    assert str(error).startswith("POST /api/v2/order/action/cancel failed after 2 attempt(s)")
    assert "could not connect" in str(error)
    assert "GET" not in str(error)


def test_a_redirect_is_never_followed(emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.inject("redirect", status=307)
    with pytest.raises(KiboRedirectError) as caught:
        hook_for(emulator, monkeypatch).cancel_order(1002, "created_by_mistake")
    assert "redirected to https://elsewhere.invalid/x" in str(caught.value)
    assert not caught.value.retryable
    assert len(emulator.requests_to("cancel")) == 1
    assert emulator.cancels_applied(1002) == 0


def test_a_redirected_oauth_request_is_not_resent(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.inject("redirect", endpoint="oauth", status=308)
    with pytest.raises(KiboRedirectError, match="never followed"):
        hook_for(emulator, monkeypatch).cancel_order(1002, "created_by_mistake")
    assert len(emulator.requests_to("oauth")) == 1  # the shared secret went nowhere else
    assert emulator.requests_to("cancel") == []


@pytest.fixture
def tls_emulator(tmp_path: Path) -> Iterator[tuple[KiboEmulator, Path]]:
    """The emulator over https with a self-signed certificate for 127.0.0.1."""
    context, cert = tls_server_context(tmp_path)
    emu = KiboEmulator(tenants=(TENANT,), clients={"demo-app-key": SHARED_SECRET})
    emu.add_orders([1003])
    emu.start(tls=context)
    try:
        yield emu, cert
    finally:
        emu.stop()


def test_an_untrusted_certificate_is_permanent_and_says_what_to_do(
    tls_emulator: tuple[KiboEmulator, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, cert = tls_emulator
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(KiboTLSError) as caught:
        hook_for(emu, monkeypatch, login="demo-app-key").cancel_order(1003, "created_by_mistake")
    assert not caught.value.retryable
    assert "REQUESTS_CA_BUNDLE" in str(caught.value)
    assert "OAuth token request failed: TLS error" in str(caught.value)
    # The advice works: with the bundle named, the same connection cancels.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    hook = hook_for(emu, monkeypatch, login="demo-app-key")
    assert hook.cancel_order(1003, "created_by_mistake")["orderStatus"] == "CANCELED"


# --- Retry-After, floors, token lifetime --------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u0666\u0660", "60s", "-5", "1e3", "", "Tue, 99 Foo 2026"])
def test_retry_after_that_is_not_delta_seconds_or_a_date_is_ignored(value: str) -> None:
    assert retry_after_seconds(value) is None


def test_retry_after_forms() -> None:
    assert retry_after_seconds(" 60 ") == 60.0
    assert retry_after_seconds(formatdate(time.time() - 100, usegmt=True)) == 0.0
    in_a_minute = retry_after_seconds(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 < in_a_minute <= 60


@pytest.mark.parametrize("header", ["0", "\u0661", "past-date"])
def test_every_retry_waits_at_least_the_floor(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    if header == "past-date":
        header = formatdate(time.time() - 3600, usegmt=True)
    emulator.inject("status", status=429, retry_after=header, times=3)
    hook = hook_for(emulator, monkeypatch, backoff_base=0)
    hook.cancel_order(1004, "created_by_mistake")
    times = [r.received_at for r in emulator.requests_to("cancel")]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= MIN_RETRY_WAIT * 0.9, gaps


def test_a_429_pause_holds_threads_waiting_for_a_rate_slot(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_for(emulator, monkeypatch)
    hook = KiboHook("kibo_faults", requests_per_second=8)
    hook.get_order(1010)  # token and connection first
    emulator.inject("status", endpoint="get_order", status=429, retry_after="2", times=1)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hook.get_order, range(1010, 1018)))
    reads = sorted(r.received_at for r in emulator.requests_to("get_order"))[1:]
    first = reads[0]  # the request that got the 429
    # A slot reached before the 429's answer arrived may still go out (it was on its way): 0.2 s of slack.
    during_pause = [t for t in reads[1:] if first + 0.2 < t < first + 1.9]
    assert during_pause == [], f"{len(during_pause)} requests went out during the 2 s pause"
    assert len(reads) == 9


# --- the circuit breaker and shared failures ----------------------------------------------------------


def test_the_breaker_opens_only_after_several_calls_fail_with_no_answer_meanwhile() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=0.2)
    started = time.monotonic()
    assert not breaker.record_exhausted(started, "a")
    breaker.record_answer()  # Kibo answered someone: the count starts again
    assert not breaker.record_exhausted(started, "b")  # began before that answer: not counted
    later = time.monotonic()
    assert not breaker.record_exhausted(later, "c")
    assert not breaker.record_exhausted(later, "d")
    assert breaker.record_exhausted(later, "e") and breaker.is_open
    assert not breaker.allow()
    time.sleep(0.25)
    assert breaker.allow()  # one probe after the cool-down
    assert not breaker.allow()  # only one
    assert breaker.record_exhausted(time.monotonic(), "probe failed")  # a failed probe reopens at once
    time.sleep(0.25)
    assert breaker.allow()
    breaker.record_answer()
    assert not breaker.is_open and breaker.allow()


def test_a_kibo_that_is_down_stops_a_bulk_run_within_one_retry_schedule(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, backoff_base=0.05)
    hook.authenticate()
    emulator.inject("status", endpoint=None, status=503, times=None)
    plan = plan_bulk_cancel(list(range(1000, 1100)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
    assert outcome.halted == CIRCUIT_OPEN
    # At most the orders in flight, each at most its attempts and a read-back's: each route (cancel, Get
    # Order) has its own breaker, so the reads of the orders in flight run their schedules too.
    assert len(emulator.requests_to("cancel")) <= 8 * 5
    assert len(emulator.requests_to("get_order")) <= 8 * 5
    assert outcome.count(NOT_ATTEMPTED) >= 100 - 8
    assert outcome.count(FAILED) + outcome.count(NOT_ATTEMPTED) == 100


def test_threads_sharing_a_hook_in_user_code_share_the_breaker(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, backoff_base=0.05, max_attempts=3)
    hook.authenticate()
    emulator.inject("status", endpoint=None, status=503, times=None)

    def cancel(order_id: int) -> str:
        try:
            hook.cancel_order(order_id, "created_by_mistake")
        except KiboError as exc:
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(cancel, range(1000, 1060)))
    assert results.count("KiboCircuitOpenError") >= 50
    assert len(emulator.requests_to("cancel")) <= 4 * 3 + 4


def test_refused_credentials_cost_one_oauth_request_for_every_thread(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, password="wrong-secret")
    plan = plan_bulk_cancel(list(range(1000, 1040)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
    assert len(emulator.requests_to("oauth")) == 1
    assert emulator.requests_to("cancel") == []
    assert outcome.count(NOT_ATTEMPTED) == 40
    with pytest.raises(KiboAuthenticationError):
        hook.get_order(1000)
    assert len(emulator.requests_to("oauth")) == 1


def test_an_oauth_outage_is_tried_once_for_the_whole_run(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.inject("status", endpoint="oauth", status=503, times=None)
    hook = hook_for(emulator, monkeypatch, backoff_base=0.05, max_attempts=3)
    plan = plan_bulk_cancel(list(range(1000, 1040)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
    # Each worker's token request waits for the one in progress; 3 failed fetches open the circuit.
    assert len(emulator.requests_to("oauth")) <= 3 * 3
    assert emulator.requests_to("cancel") == []
    assert outcome.count(NOT_ATTEMPTED) == 40
    assert outcome.halted == CIRCUIT_OPEN


def test_a_failed_refresh_after_a_possibly_applied_attempt_still_reads_back(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, backoff_base=0.05, max_attempts=2)
    hook.authenticate()
    emulator.inject("status", status=503, times=1)  # may have applied
    emulator.inject("status", status=401, times=1)  # then the token is refused...
    emulator.inject("status", endpoint="oauth", status=503, times=2)  # ...and the refresh fails
    with pytest.raises(KiboServerError) as caught:
        hook.cancel_order(1005, "created_by_mistake")
    assert caught.value.may_have_applied
    assert len(emulator.requests_to("get_order")) == 1  # the order was read back (OPEN: error stands)


# --- stops that hold ----------------------------------------------------------------------------------


def slow_run(emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> BulkRun:
    emulator.latency = 0.05
    hook = hook_for(emulator, monkeypatch)
    hook.authenticate()
    plan = plan_bulk_cancel(list(range(1000, 1100)), "created_by_mistake")
    return BulkRun(hook, plan.requests, max_concurrency=4)


def assert_nothing_sent_after(emulator: KiboEmulator, moment: float) -> None:
    late = [r for r in emulator.requests_to("cancel") if r.received_at > moment]
    assert late == [], f"{len(late)} cancels reached Kibo after the run ended"


def test_stop_ends_a_run_and_nothing_is_sent_after_it_returns(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = slow_run(emulator, monkeypatch)
    threading.Timer(0.4, run.stop).start()
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
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = slow_run(emulator, monkeypatch)
    # A real SIGINT, as Ctrl-C sends it (Python raises KeyboardInterrupt in the main thread); pytest-xdist
    # workers ignore SIGINT, so the default handler is put back for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            run.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    ended = time.time()
    time.sleep(0.5)
    assert_nothing_sent_after(emulator, ended)
    assert sum(run.outcome.count(b) for b in (CANCELED, FAILED, NOT_ATTEMPTED)) == 100
    assert run.outcome.count(NOT_ATTEMPTED) > 0


def test_a_stopped_hook_sends_nothing_and_says_so(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch)
    hook.stop()
    with pytest.raises(KiboStoppedError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.sent
    assert emulator.requests == []


def test_a_retry_waiting_in_backoff_is_not_sent_after_a_stop(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, backoff_base=5)
    hook.authenticate()
    emulator.inject("status", status=503, times=None)
    threading.Timer(0.5, hook.stop).start()
    started = time.monotonic()
    with pytest.raises(KiboStoppedError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert time.monotonic() - started < 2.0  # the 2.5-5 s backoff ended at the stop
    assert caught.value.sent and caught.value.may_have_applied
    assert len(emulator.requests_to("cancel")) == 1


def test_the_circuit_open_error_is_not_a_send(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch)
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


def test_test_connection_fails_on_a_404_that_is_not_kibos(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.inject("html", endpoint="get_order", status=404)
    ok, message = hook_for(emulator, monkeypatch).test_connection()
    assert not ok
    assert "does not answer like Kibo: GET /api/v2/order/1 gave HTTP 404 (text/html)" in message
    assert "Maintenance" in message  # an excerpt of what answered


def test_test_connection_accepts_kibos_404(emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = hook_for(emulator, monkeypatch).test_connection()
    assert ok, message  # the emulator has no order 1: Kibo's JSON 404


class _TaskInstance:
    """Just enough of a task instance for execute(): XCom pushes are kept."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_on_kill_stops_a_running_bulk_task(emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError
    from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator

    emulator.latency = 0.05
    hook_for(emulator, monkeypatch)
    operator = BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1100)),
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_faults",
        max_concurrency=4,
    )
    ti = _TaskInstance()
    # What the task runner's SIGTERM handler does (kill, "mark failed"): call on_kill while execute runs.
    threading.Timer(0.5, operator.on_kill).start()
    with pytest.raises(KiboBulkCancelError, match="Bulk cancel stopped early: the task was stopped"):
        operator.execute({"ti": ti})  # type: ignore[typeddict-item]
    ended = time.time()
    time.sleep(0.5)
    assert_nothing_sent_after(emulator, ended)
    summary = ti.pushed["summary"]
    assert summary["halted"] == STOPPED and summary["not_attempted"]
    everything = summary["canceled"] + summary["not_attempted"] + [f["order_id"] for f in summary["failed"]]
    assert sorted(everything) == list(range(1000, 1100))


def test_a_kill_while_the_plan_is_checked_sends_nothing(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM can arrive before the run's hook exists (while the orders are validated): on_kill must
    # still hold, so the run that follows sends nothing.
    from airflow_provider_kibo_cancel.exceptions import KiboBulkCancelError
    from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator

    hook_for(emulator, monkeypatch)
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
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_kibo_cancel.exceptions import KiboStoppedError
    from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

    hook_for(emulator, monkeypatch, backoff_base=4)
    emulator.inject("status", status=503, times=None)
    operator = CancelOrderOperator(
        task_id="one", order_id=1001, disposition_reason="created_by_mistake", kibo_conn_id="kibo_faults"
    )
    threading.Timer(0.5, operator.on_kill).start()
    started = time.monotonic()
    with pytest.raises(KiboStoppedError):
        operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
    assert time.monotonic() - started < 2.0  # the 2-4 s backoff ended at the kill
    assert len(emulator.requests_to("cancel")) == 1


# --- failures found in review: every one a run-wide condition the run must see ---------------------------


def test_a_long_retry_after_on_the_last_attempt_still_stops_every_worker(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, max_attempts=1)
    hook.authenticate()
    # The 429 answers at once, every other cancel after 0.3 s: the first answer the run reads is the 429.
    # (With equal latencies another worker could read its 200 and send one more order in the moment
    # before the 429's thread ran: a bound on a race, not on the run.)
    emulator.inject("status", status=429, retry_after="600", order_id=1000)
    emulator.inject("latency", delay=0.3, times=None)
    plan = plan_bulk_cancel(list(range(1000, 1040)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=4).run()
    assert outcome.halted == "rate_limited"
    assert len(emulator.requests_to("cancel")) <= 4  # the 429 and what was already on its way
    assert outcome.count(NOT_ATTEMPTED) >= 36


def test_a_pause_extended_while_a_thread_waits_is_not_slept_through() -> None:
    from airflow_provider_kibo_cancel.hooks.policy import Gate, PausedTooLong

    gate = Gate()
    gate.pause(2)  # short: the waiting thread may sleep through it...
    threading.Timer(0.3, gate.pause, (600,)).start()  # ...until another thread's 429 asks for 10 minutes
    started = time.monotonic()
    with pytest.raises(PausedTooLong) as caught:
        gate.wait(max_pause=30)
    assert time.monotonic() - started < 2.0
    assert caught.value.remaining > 590


def test_a_probe_that_settles_nothing_lets_a_later_one_try() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.2)
    breaker.record_exhausted(time.monotonic(), "down")
    time.sleep(0.25)
    assert breaker.allow()  # the probe...
    breaker.end_probe()  # ...was stopped before it got an answer
    assert breaker.is_open and not breaker.allow()  # a new cool-down
    time.sleep(0.25)
    assert breaker.allow()


def test_a_tenant_kibo_refuses_stops_the_run_after_three_orders(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch, tenant_id="99999")  # not authorised: 403 to every call
    plan = plan_bulk_cancel(list(range(1000, 1050)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=2).run()
    assert outcome.halted == "forbidden"
    # Three orders and the one in flight; the orders sent on the first token are sent once more on the
    # one fetched after the first 403, which is refused too.
    assert len(emulator.requests_to("cancel")) <= 3 + 2 + 2
    assert len(emulator.requests_to("oauth")) == 2
    assert outcome.count(NOT_ATTEMPTED) >= 45


def test_a_token_refused_even_after_a_refresh_stops_the_run(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_for(emulator, monkeypatch)
    hook.authenticate()
    emulator.inject("status", status=401, times=None)
    plan = plan_bulk_cancel(list(range(1000, 1050)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=2).run()
    assert outcome.halted == "credentials_refused"
    assert len(emulator.requests_to("cancel")) <= 2 * 2  # each worker's order: the 401, then once more
    assert outcome.count(NOT_ATTEMPTED) >= 46
