"""The retry policy, token lifecycle and safe re-runs, proven by fault injection against the emulator."""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest

from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.exceptions import (
    KiboBadRequestError,
    KiboConfigurationError,
    KiboError,
    KiboForbiddenError,
    KiboNotFoundError,
    KiboRateLimitError,
    KiboServerError,
    KiboTransportError,
)
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from tests.support import SHARED_SECRET, Connect, kibo_connection


def cancel_times(emu: KiboEmulator) -> list[float]:
    return [r.received_at for r in emu.requests_to("cancel")]


def test_429_waits_for_retry_after_then_succeeds(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("status", status=429, retry_after="2")
    order = connect(emulator, "kibo_faults").cancel_order(1001, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    first, second = cancel_times(emulator)
    assert second - first >= 2.0
    assert emulator.cancels_applied(1001) == 1


def test_429_with_an_http_date(emulator: KiboEmulator, connect: Connect) -> None:
    # A date, not a number of seconds: the retry goes out at it, not before (HTTP dates have whole
    # seconds). The token first, so the first cancel comes well before the date: CI once took a second
    # to send it, and "at least 1 s after the first cancel" for a date 2 s ahead measured 0.99.
    hook = connect(emulator, "kibo_faults")
    hook.authenticate()
    retry_at = int(time.time()) + 4
    emulator.inject("status", status=429, retry_after=formatdate(retry_at, usegmt=True))
    hook.cancel_order(1002, "created_by_mistake")
    first, second = cancel_times(emulator)
    assert first < retry_at <= second


def test_retry_after_beyond_the_cap_fails_at_once(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("status", status=429, retry_after="600")
    started = time.monotonic()
    with pytest.raises(KiboRateLimitError) as caught:
        connect(emulator, "kibo_faults", max_retry_wait=5).cancel_order(1003, "created_by_mistake")
    assert time.monotonic() - started < 5
    assert caught.value.retryable and caught.value.status == 429
    assert "Retry-After 600" in str(caught.value) and "correlation id" in str(caught.value)
    assert len(emulator.requests_to("cancel")) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(emulator: KiboEmulator, connect: Connect, status: int) -> None:
    emulator.inject("status", status=status, times=2)
    order = connect(emulator, "kibo_faults").cancel_order(1004, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    assert len(emulator.requests_to("cancel")) == 3
    assert emulator.cancels_applied(1004) == 1


def test_backoff_grows_exponentially(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("status", status=503, times=3)
    connect(emulator, "kibo_faults", backoff_base=0.4).cancel_order(1005, "created_by_mistake")
    times = cancel_times(emulator)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Equal jitter: each wait is at least half of backoff_base * 2^(attempt-1): 0.2, 0.4, 0.8 s.
    assert len(gaps) == 3
    assert all(gap >= low for gap, low in zip(gaps, (0.2, 0.4, 0.8), strict=True)), gaps


def test_attempts_are_bounded(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("status", status=503, times=None)
    with pytest.raises(KiboServerError) as caught:
        connect(emulator, "kibo_faults", max_attempts=3).cancel_order(1006, "created_by_mistake")
    assert caught.value.retryable and caught.value.status == 503
    assert caught.value.error_code == "GENERIC_UNAVAILABLE"
    assert len(emulator.requests_to("cancel")) == 3
    # A 5xx may hide an applied cancel, so the order was read back (still OPEN: the error stands).
    assert len(emulator.requests_to("get_order")) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, KiboBadRequestError),
        (404, KiboNotFoundError),
        (405, KiboBadRequestError),
    ],
)
def test_client_errors_are_never_retried(
    emulator: KiboEmulator, connect: Connect, status: int, error: type[KiboError]
) -> None:
    emulator.inject("status", status=status)
    with pytest.raises(error) as caught:
        connect(emulator, "kibo_faults").cancel_order(1007, "created_by_mistake")
    assert not caught.value.retryable and caught.value.status == status
    assert len(emulator.requests_to("cancel")) == 1
    assert emulator.requests_to("get_order") == []


def test_a_403_fetches_one_new_token_then_fails_without_retries(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # Kibo's own clients fetch a new token on a 403 too (a token issued before a permission change is
    # refused so), once: a 403 that stands is the tenant's or site's, and refreshing per order would
    # cost a token request per order.
    emulator.inject("status", status=403, times=None)
    hook = connect(emulator, "kibo_faults")
    for order_id in (1007, 1008):
        with pytest.raises(KiboForbiddenError) as caught:
            hook.cancel_order(order_id, "created_by_mistake")
        assert not caught.value.retryable and caught.value.status == 403
    assert "Tenant ID and Site ID" in str(caught.value) and "'kibo_faults'" in str(caught.value)
    assert [r.endpoint for r in emulator.requests] == ["oauth", "cancel", "oauth", "cancel", "cancel"]


def test_a_403_cured_by_a_new_token_cancels_the_order(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("status", status=403)
    order = connect(emulator, "kibo_faults").cancel_order(1007, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    assert [r.endpoint for r in emulator.requests] == ["oauth", "cancel", "oauth", "cancel"]


def test_a_dropped_connection_is_retried(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("drop")
    order = connect(emulator, "kibo_faults").cancel_order(1008, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    assert len(emulator.requests_to("cancel")) == 2
    assert emulator.cancels_applied(1008) == 1


@pytest.mark.parametrize("fault", ["slow_after_apply", "drop_after_apply"])
def test_a_cancel_applied_then_lost_ends_canceled_exactly_once(
    emulator: KiboEmulator, connect: Connect, fault: str
) -> None:
    emulator.inject(fault, delay=3)  # type: ignore[arg-type]
    order = connect(emulator, "kibo_faults", timeout=0.5).cancel_order(1009, "created_by_mistake")
    assert order["orderStatus"] == "CANCELED"
    assert emulator.cancels_applied(1009) == 1
    # First attempt applied but unanswered; the retry got 409; the order was read back.
    assert [r.endpoint for r in emulator.requests if r.endpoint != "oauth"] == [
        "cancel",
        "cancel",
        "get_order",
    ]


def test_the_timeout_is_always_applied(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.inject("latency", endpoint="get_order", delay=5)
    started = time.monotonic()
    with pytest.raises(KiboTransportError) as caught:
        connect(emulator, "kibo_faults", timeout=0.5, max_attempts=1).get_order(1010)
    assert time.monotonic() - started < 3
    assert caught.value.retryable and "ReadTimeout" in str(caught.value)


def test_an_unreachable_host_fails_after_the_attempts(connect: Connect) -> None:
    with KiboEmulator() as gone:
        url = gone.url
    hook = connect(url, "kibo_gone", max_attempts=2)
    with pytest.raises(
        KiboTransportError, match=r"OAuth token request failed after 2 attempt\(s\): ConnectionError"
    ):
        hook.cancel_order(1011, "created_by_mistake")


def test_one_token_for_many_threads(emulator: KiboEmulator, connect: Connect) -> None:
    emulator.latency = 0.05  # widen the race window
    hook = connect(emulator, "kibo_faults")
    with ThreadPoolExecutor(8) as pool:
        orders = list(pool.map(lambda i: hook.cancel_order(i, "created_by_mistake"), range(1020, 1036)))
    assert all(o["orderStatus"] == "CANCELED" for o in orders)
    assert len(emulator.requests_to("oauth")) == 1


def test_a_429_pauses_every_thread_of_the_hook(emulator: KiboEmulator, connect: Connect) -> None:
    hook = connect(emulator, "kibo_faults")
    hook.get_order(1040)  # token and connection first, so every worker starts on equal terms
    emulator.inject("status", status=429, retry_after="1", order_id=1045)
    start = threading.Barrier(4)

    def worker(first: int) -> None:
        start.wait()
        for order_id in range(first, first + 20, 4):
            hook.cancel_order(order_id, "created_by_mistake")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(1041, 1045)))
    cancels = emulator.requests_to("cancel")
    limited = next(r.received_at for r in cancels if r.body["orderId"] == 1045)
    # Requests already in flight when the 429 came back may land just after it; nothing else for 1 s.
    window = [r for r in cancels if limited + 0.1 < r.received_at < limited + 0.9]
    assert window == []
    assert all(emulator.cancels_applied(order_id) == 1 for order_id in range(1041, 1061))


def test_bad_tenant_or_host_is_rejected_before_any_request(
    emulator: KiboEmulator, monkeypatch: pytest.MonkeyPatch, connect: Connect
) -> None:
    for extra in ({"tenant_id": "30294.attacker.example"}, {"site_id": "1;drop"}):
        with pytest.raises(KiboConfigurationError):
            connect(emulator, "kibo_faults", **extra).cancel_order(1050, "created_by_mistake")
    conn = kibo_connection(emulator)
    conn["host"] = emulator.url + "/somewhere?x=1"
    monkeypatch.setenv("AIRFLOW_CONN_KIBO_PATH", json.dumps(conn))
    with pytest.raises(KiboConfigurationError, match="plain http"):
        KiboHook("kibo_path").cancel_order(1050, "created_by_mistake")
    assert emulator.requests == []


def test_secrets_and_tokens_are_registered_with_the_masker(emulator: KiboEmulator, connect: Connect) -> None:
    try:  # the masker Airflow's task logs go through
        # Imported here: the masker's module depends on the Airflow version.
        from airflow.sdk._shared.secrets_masker import redact  # noqa: PLC0415
    except ImportError:  # Airflow < 3.2
        from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef,unused-ignore]  # noqa: PLC0415

    hook = connect(emulator, "kibo_faults")
    hook.cancel_order(1051, "created_by_mistake")
    token, refresh_token = emulator.issued_tokens()
    redacted = redact(f"secret={SHARED_SECRET} token={token} refresh={refresh_token}")
    assert SHARED_SECRET not in redacted and token not in redacted and refresh_token not in redacted


def test_requests_per_second_caps_the_rate(emulator: KiboEmulator, connect: Connect) -> None:
    connect(emulator, "kibo_faults")
    hook = KiboHook("kibo_faults", requests_per_second=10)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hook.get_order, range(1060, 1070)))
    reads = [r.received_at for r in emulator.requests_to("get_order")]
    assert len(reads) == 10
    assert max(reads) - min(reads) >= 0.85  # ten requests at ten a second span at least 0.9 s


def test_the_test_button_answers_fast_when_the_host_is_down(connect: Connect) -> None:
    with KiboEmulator() as gone:
        url = gone.url
    hook = connect(url, "kibo_gone", backoff_base=5)
    started = time.monotonic()
    ok, message = hook.test_connection()
    assert not ok and "OAuth token request failed after 1 attempt(s)" in message
    assert time.monotonic() - started < 5  # one attempt, no backoff
