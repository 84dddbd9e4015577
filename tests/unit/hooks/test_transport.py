"""The hook against answers and faults that used to be settled wrongly: per-route circuits, OAuth failures
that send no cancel, malformed tokens, 429s without Retry-After, a stop while connecting, the order id
field's spelling. Real HTTP to the emulator (or, for the TLS handshake, a small stdlib server)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kibo_cancel.bulk_plan import plan_bulk_cancel
from airflow_provider_kibo_cancel.cancel_request import CancelOrderRequest
from airflow_provider_kibo_cancel.emulator import KiboEmulator
from airflow_provider_kibo_cancel.emulator.handler import kibo_error
from airflow_provider_kibo_cancel.exceptions import (
    KiboBadRequestError,
    KiboConfigurationError,
    KiboResponseError,
    KiboStoppedError,
    KiboTransportError,
)
from airflow_provider_kibo_cancel.hooks.kibo import KiboHook
from airflow_provider_kibo_cancel.operators.bulk_runner import BulkRun
from airflow_provider_kibo_cancel.operators.outcome import CANCELED, CIRCUIT_OPEN, NOT_ATTEMPTED
from tests.support import APP_KEY, SHARED_SECRET, TENANT, Connect, tls_server_context

TOKEN_WITH_A_LINE_BREAK = "eyJhbGciOi.first-half\nsecond-half-of-the-token"


def test_a_dead_cancel_route_opens_its_circuit_while_get_order_still_answers(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # Kibo's failures are per route: every cancel answers 503 while Get Order answers 200. The
    # read-backs' answers must not keep the cancel route's breaker closed.
    hook = connect(emulator, "kibo_faults", backoff_base=0.01)
    hook.authenticate()
    emulator.inject("status", endpoint="cancel", status=503, times=None)
    plan = plan_bulk_cancel(list(range(1000, 1060)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=4).run()
    assert outcome.halted == CIRCUIT_OPEN
    # The breaker opens after 3 calls used up their attempts; the 4 workers' calls in flight finish.
    assert len(emulator.requests_to("cancel")) <= (3 + 4) * 5
    assert outcome.count(NOT_ATTEMPTED) >= 60 - 7
    assert emulator.requests_to("get_order"), "the orders that got 5xx were read back"


class _PermissionChangedAfterTheFirstToken(KiboEmulator):
    """The first token was issued before the application got the tenant: Kibo refuses it with 403."""

    first_token: str | None = None

    def _issue_token(self, body: Any) -> tuple[int, dict[str, Any]]:
        status, payload = super()._issue_token(body)
        if status == 200 and self.first_token is None:
            self.first_token = payload["access_token"]
        return status, payload

    def _authorize(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        if headers.get("authorization") == f"Bearer {self.first_token}":
            return 403, kibo_error("Tenant 30294 is not authorized for this application", "FORBIDDEN")
        return super()._authorize(headers)


def test_workers_whose_403_came_with_a_replaced_token_repeat_with_the_new_one(
    connect: Connect,
) -> None:
    # Eight workers in flight on a token refused with 403: one fetches a new token, the others must use
    # it rather than count their 403s as refusals (three in a row would halt the run).
    emu = _PermissionChangedAfterTheFirstToken(tenants=(TENANT,), clients={APP_KEY: SHARED_SECRET})
    emu.add_orders(range(1000, 1040))
    emu.latency = 0.2
    with emu:
        hook = connect(emu, "kibo_faults")
        plan = plan_bulk_cancel(list(range(1000, 1040)), "created_by_mistake")
        outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
    assert outcome.halted is None and outcome.count(CANCELED) == 40
    assert len(emu.requests_to("oauth")) == 2


def test_an_oauth_read_timeout_leaves_the_cancel_not_sent_and_reads_nothing_back(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # The token request times out on every attempt: no cancel went out, so there is nothing to read
    # back (that used to cost a second full OAuth schedule) and the order is not attempted.
    emulator.inject("latency", endpoint="oauth", delay=1.0, times=None)
    hook = connect(emulator, "kibo_faults", timeout=0.3, max_attempts=3)
    with pytest.raises(KiboTransportError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.sent and not caught.value.may_have_applied
    assert caught.value.order_id == 1001
    assert "OAuth token request failed after 3 attempt(s)" in str(caught.value)
    assert "was not sent" in str(caught.value) and "reading the order back" not in str(caught.value)
    assert [r.endpoint for r in emulator.requests] == ["oauth"] * 3


def test_a_bulk_run_counts_orders_behind_a_failed_token_request_as_not_attempted(
    emulator: KiboEmulator, connect: Connect
) -> None:
    hook = connect(emulator, "kibo_faults", timeout=0.3, max_attempts=2)
    emulator.inject("latency", endpoint="oauth", delay=1.0, times=None)
    plan = plan_bulk_cancel([1001, 1002, 1003], "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=1).run()
    assert outcome.count(NOT_ATTEMPTED) == 3 and outcome.failures == {}
    assert emulator.requests_to("cancel") == [] and emulator.requests_to("get_order") == []


def test_a_pre_issued_token_with_a_line_break_is_refused_without_quoting_it(
    emulator: KiboEmulator, connect: Connect
) -> None:
    hook = connect(emulator, "kibo_faults", login="", password="", access_token=TOKEN_WITH_A_LINE_BREAK)
    with pytest.raises(KiboConfigurationError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    message = str(caught.value)
    assert "extra 'access_token' is not a usable bearer token: the token holds a line break" in message
    assert "first-half" not in message and "second-half" not in message
    assert not caught.value.retryable and not caught.value.sent
    assert emulator.requests == []


def test_a_pre_issued_token_with_a_line_break_fails_a_dry_run_and_the_test_button_too(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # Checked with the connection, not at the first request: a dry run must not pass on a token that
    # the real run would refuse, and the Test button names the problem.
    hook = connect(emulator, "kibo_faults", login="", password="", access_token=TOKEN_WITH_A_LINE_BREAK)
    with pytest.raises(KiboConfigurationError) as caught:
        hook.describe_cancel(CancelOrderRequest.from_raw(1001, "created_by_mistake"))
    assert "the token holds a line break at character 22 of 46" in str(caught.value)
    ok, message = connect(
        emulator, "kibo_faults", login="", password="", access_token=TOKEN_WITH_A_LINE_BREAK
    ).test_connection()
    assert not ok and "extra 'access_token' is not a usable bearer token" in message
    assert "first-half" not in message + str(caught.value) and "second-half" not in message
    assert emulator.requests == []


def test_an_issued_token_with_a_line_break_is_an_error_that_does_not_quote_it(
    emulator: KiboEmulator, connect: Connect
) -> None:
    emulator.inject("token_fields", endpoint="oauth", fields={"access_token": TOKEN_WITH_A_LINE_BREAK})
    with pytest.raises(KiboResponseError) as caught:
        connect(emulator, "kibo_faults", max_attempts=1).cancel_order(1001, "created_by_mistake")
    assert "the token holds a line break" in str(caught.value)
    assert "first-half" not in str(caught.value) and "second-half" not in str(caught.value)
    assert emulator.requests_to("cancel") == []


def test_a_429_without_retry_after_pauses_every_worker_and_one_request_probes(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # A proxy's or WAF's 429 gives no Retry-After. Every worker must still stand back for the backoff,
    # and one request probes the wall before the others resume (8 workers sent 27 into a 2 s wall).
    hook = connect(emulator, "kibo_faults", backoff_base=0.5, max_attempts=8)
    hook.authenticate()
    wall_ends = time.time() + 2.0  # the emulator records wall-clock times
    emulator.inject("status", status=429, retry_after="", times=None, seconds=2.0)
    plan = plan_bulk_cancel(list(range(1000, 1040)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=8).run()
    assert outcome.count(CANCELED) == 40
    into_the_wall = [r for r in emulator.requests_to("cancel") if r.received_at < wall_ends - 0.05]
    # The first wave of 8 was in flight before any 429 came back; after it, only probes.
    assert len(into_the_wall) <= 8 + 3, len(into_the_wall)


def test_a_429_wall_that_outlasts_the_retries_halts_the_run_as_rate_limited(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # A WAF's 429 without Retry-After, for good: three orders in a row that used up their attempts on
    # it halt the run instead of giving each of 10,000 orders its whole retry schedule.
    hook = connect(emulator, "kibo_faults", backoff_base=0.01, max_attempts=3)
    hook.authenticate()
    emulator.inject("status", status=429, retry_after="", times=None)
    plan = plan_bulk_cancel(list(range(1000, 1100)), "created_by_mistake")
    outcome = BulkRun(hook, plan.requests, max_concurrency=2).run()
    assert outcome.halted == "rate_limited" and outcome.resume_at is not None
    assert outcome.count(NOT_ATTEMPTED) >= 100 - 3 - 2
    assert len(emulator.requests_to("cancel")) <= (3 + 2) * 3


def test_a_short_retry_after_on_the_last_attempt_still_pauses_the_other_workers(
    emulator: KiboEmulator, connect: Connect
) -> None:
    hook = connect(emulator, "kibo_faults", max_attempts=1)
    hook.authenticate()
    emulator.latency = 0.05
    emulator.inject("status", status=429, retry_after="2", order_id=1003)
    plan = plan_bulk_cancel(list(range(1000, 1020)), "created_by_mistake")
    BulkRun(hook, plan.requests, max_concurrency=4).run()
    cancels = emulator.requests_to("cancel")
    wall = next(r.received_at for r in cancels if r.body.get("orderId") == 1003)
    # Requests already on their way when the 429 came back arrive within moments; none for 2 s after.
    during = [r for r in cancels if wall + 0.5 < r.received_at < wall + 1.9]
    assert during == [], [round(r.received_at - wall, 2) for r in during]
    assert any(r.received_at >= wall + 1.9 for r in cancels)


def test_an_answer_that_drips_in_ends_at_the_read_timeout_and_is_settled(
    emulator: KiboEmulator, connect: Connect
) -> None:
    # Kibo applied the cancel, then its answer arrives a byte every 0.2 s: each read gets data within
    # the 1 s read timeout, so only a deadline on the whole answer ends it.
    emulator.inject("drip_after_apply", delay=0.2)
    hook = connect(emulator, "kibo_faults", timeout=1)
    started = time.monotonic()
    result = hook.cancel(CancelOrderRequest.from_raw(1001, "created_by_mistake"))
    assert time.monotonic() - started < 5  # about 1 s of dripping, not the ~80 s the whole body takes
    assert result.order["orderStatus"] == "CANCELED" and not result.already_canceled
    assert emulator.cancels_applied(1001) == 1


class _OneShotKibo(BaseHTTPRequestHandler):
    """HTTP/1.0, as BaseHTTPRequestHandler speaks by default: every answer closes its connection."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        data = json.dumps({"orderID": body["orderId"], "orderStatus": "CANCELED", "pad": "x" * 20_000})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())


def test_answers_that_close_their_connection_are_read_whole(connect: Connect) -> None:
    # http.client closes a connection whose answer says it will close before reading the body; the
    # hook's sockets must keep the body readable until then, as a plain socket does.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OneShotKibo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        connect(url, "kibo_http10", login="", password="", access_token="tok-123")
        hook = KiboHook("kibo_http10", max_attempts=1)
        for order_id in (1001, 1002, 1003):
            assert hook.cancel_order(order_id, "created_by_mistake")["orderID"] == order_id
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serving(listener: socket.socket, serve: Callable[[], None]) -> Iterator[None]:
    """``serve`` in a thread while the block runs; then ``listener`` closed and the thread ended."""
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # wakes the accept() a bare close() leaves blocked
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


@pytest.fixture
def relay_proxy(emulator: KiboEmulator) -> Iterator[str]:
    """A forward HTTP proxy on 127.0.0.1 to the emulator that passes answers on as they come."""
    upstream = int(emulator.url.rsplit(":", 1)[1])
    listener = socket.create_server(("127.0.0.1", 0))

    def relay(client: socket.socket) -> None:
        # The hook gives up on a dripping answer and closes: what the relay was writing then is lost.
        with client, client.makefile("rb") as reader, contextlib.suppress(OSError):
            while line := reader.readline():
                method, url, version = line.decode().split()
                headers, length = [], 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                    if not header.lower().startswith((b"connection:", b"proxy-connection:")):
                        headers.append(header)
                path = "/" + url.split("://", 1)[1].split("/", 1)[1]
                with socket.create_connection(("127.0.0.1", upstream)) as up:
                    head = f"{method} {path} {version}\r\n".encode() + b"".join(headers)
                    up.sendall(head + b"Connection: close\r\n\r\n" + reader.read(length))
                    while chunk := up.recv(65536):  # a drip stays a drip
                        client.sendall(chunk)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                threading.Thread(target=relay, args=(client,), daemon=True).start()

    with serving(listener, serve):
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_through_a_proxy_a_dripping_answer_still_ends_at_the_read_timeout(
    emulator: KiboEmulator, relay_proxy: str, monkeypatch: pytest.MonkeyPatch, connect: Connect
) -> None:
    # requests builds a proxy's connection pools itself: they must be the hook's too.
    monkeypatch.setenv("HTTP_PROXY", relay_proxy)
    monkeypatch.setenv("http_proxy", relay_proxy)
    hook = connect(emulator, "kibo_faults", timeout=1)
    hook.authenticate()
    emulator.inject("drip_after_apply", delay=0.25)
    started = time.monotonic()
    result = hook.cancel(CancelOrderRequest.from_raw(1001, "created_by_mistake"))
    assert time.monotonic() - started < 6, "the dripping answer was read to its end"
    assert result.order["orderStatus"] == "CANCELED" and not result.already_canceled
    assert all(r.headers.get("connection") == "close" for r in emulator.requests), "it went via the proxy"


@pytest.fixture
def slow_handshake_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[bytes]]]:
    """A TLS server that waits 1.5 s before its handshake, then records what the client sends."""
    context, cert = tls_server_context(tmp_path)
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            time.sleep(1.5)  # the client sits in its TLS handshake meanwhile
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2.0)
                    received.append(tls.recv(65536))
            except (OSError, ssl.SSLError):
                pass

    with serving(listener, serve):
        yield listener.getsockname()[1], cert, received


def test_a_request_still_in_its_tls_handshake_when_stopped_is_never_sent(
    slow_handshake_server: tuple[int, Path, list[bytes]], monkeypatch: pytest.MonkeyPatch, connect: Connect
) -> None:
    port, cert, received = slow_handshake_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    connect(f"https://127.0.0.1:{port}", "kibo_tls", login="", password="", access_token="tok-123")
    hook = KiboHook("kibo_tls", timeout=5)
    threading.Timer(0.5, hook.stop).start()
    with pytest.raises(KiboStoppedError) as caught:
        hook.cancel_order(1001, "created_by_mistake")
    assert not caught.value.sent
    # The handshake finished (the server got to read), but not a byte of the request followed.
    assert received in ([], [b""]), received


def test_the_order_id_field_follows_the_connection_and_a_400_naming_it_says_how_to_switch(
    emulator: KiboEmulator, connect: Connect
) -> None:
    emulator.order_id_field = "orderID"  # a tenant that spells it as Kibo's own pages do
    with pytest.raises(KiboBadRequestError) as caught:
        connect(emulator, "kibo_faults").cancel_order(1001, "created_by_mistake")
    message = str(caught.value)
    assert "sent as 'orderId'" in message and "set extra order_id_field to 'orderID'" in message
    assert "'kibo_faults'" in message

    order = connect(emulator, "kibo_faults", order_id_field="orderID").cancel_order(
        1002, "created_by_mistake"
    )
    assert order["orderStatus"] == "CANCELED"
    assert emulator.requests_to("cancel")[-1].body == {
        "orderID": 1002,
        "dispositionReason": "created_by_mistake",
    }


def test_an_unknown_order_id_field_is_a_configuration_error(emulator: KiboEmulator, connect: Connect) -> None:
    with pytest.raises(KiboConfigurationError, match="extra 'order_id_field' must be 'orderId'"):
        connect(emulator, "kibo_faults", order_id_field="order_id").cancel_order(1001, "created_by_mistake")
    assert emulator.requests == []
    assert TENANT  # the connection was otherwise valid
