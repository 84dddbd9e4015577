"""A local Kibo emulator: OAuth, Cancel Order and Get Order over real HTTP on 127.0.0.1.

Built on the standard library's ThreadingHTTPServer rather than FastAPI/uvicorn: it starts in
milliseconds in-process, depends on nothing that changes between Airflow releases, and gives the byte-level
control that fault injection needs (dropping a connection after a cancel was applied, an HTML body, a
Retry-After header on an empty 429).
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from airflow_provider_kibo_cancel.emulator.faults import Fault, FaultKind, take_fault
from airflow_provider_kibo_cancel.emulator.handler import KiboRequestHandler, kibo_error
from airflow_provider_kibo_cancel.emulator.orders import cancel_problems, make_order
from airflow_provider_kibo_cancel.emulator.record import (
    RECORD_LIMIT,
    RecordedRequest,
    Redactor,
    warn_if_exposed,
)
from airflow_provider_kibo_cancel.emulator.tenant_limit import TenantLimit

# Not 8080: that is the Airflow API server's default, and both often run on one machine.
DEFAULT_PORT = 8090


@dataclass
class _State:
    max_recorded: int = RECORD_LIMIT
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    faults: list[Fault] = field(default_factory=list)
    cancels_applied: dict[int, int] = field(default_factory=dict)
    # Cancel requests being handled now and the most at once: what a pool or max_concurrency allows.
    cancels_in_flight: int = 0
    max_cancels_in_flight: int = 0
    # Bounded: the most recent requests and issued tokens only.
    requests: deque[RecordedRequest] = field(init=False)
    issued: deque[str] = field(init=False)

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.max_recorded)
        self.issued = deque(maxlen=self.max_recorded)


class KiboEmulator:
    """
    In-memory Kibo: tenants, OAuth clients, orders (open, canceled already, completed, or unknown).

    Use it as a context manager or with ``start()``/``stop()``; ``url`` is the base URL for the
    connection's host override. ``inject()`` schedules faults; ``requests`` records what arrived: the
    most recent ``max_recorded`` requests (default ``RECORD_LIMIT``, 10,000), secrets redacted.
    """

    def __init__(
        self,
        *,
        tenants: tuple[str, ...] = ("30294",),
        clients: dict[str, str] | None = None,
        token_ttl: float = 3600.0,
        latency: float = 0.0,
        max_recorded: int = RECORD_LIMIT,
        order_id_field: str = "orderId",
        tenant_requests_per_second: float | None = None,
        tenant_retry_after: float = 60.0,
    ) -> None:
        self.tenants = set(tenants)
        # The cancel body's order id key this tenant expects: the specification's orderId, or orderID
        # as Kibo's own pages spell it.
        self.order_id_field = order_id_field
        self.clients = dict(clients or {"demo-app-key": "demo-shared-secret"})
        self.token_ttl = token_ttl
        self.latency = latency
        self.max_recorded = max_recorded
        self._redactor = Redactor()
        self._lock = threading.Lock()
        self._state = _State(max_recorded)
        self._server: ThreadingHTTPServer | None = None
        self._scheme = "http"
        self._thread: threading.Thread | None = None
        # Kibo's limit counts every client of the tenant together (see tenant_limit.py).
        self.tenant_limit = TenantLimit(tenant_requests_per_second, tenant_retry_after)

    # --- orders -------------------------------------------------------------------------------------

    def add_orders(self, order_ids: range | list[int], status: str = "OPEN") -> None:
        with self._lock:
            for order_id in order_ids:
                self._state.orders[order_id] = make_order(order_id, status)

    def order(self, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            order = self._state.orders.get(order_id)
            return copy.deepcopy(order) if order else None

    def cancels_applied(self, order_id: int) -> int:
        """How many times a cancel of this order changed it (at most 1 for a correct client)."""
        with self._lock:
            return self._state.cancels_applied.get(order_id, 0)

    # --- faults and records -------------------------------------------------------------------------

    def inject(
        self,
        kind: FaultKind,
        *,
        endpoint: str | None = "cancel",
        times: int | None = 1,
        status: int = 503,
        retry_after: str | None = None,
        delay: float = 0.0,
        order_id: int | None = None,
        fields: dict[str, Any] | None = None,
        size: int = 20,
        seconds: float | None = None,
    ) -> None:
        fault = Fault(kind, endpoint, times, status, retry_after, delay, order_id, fields, size, seconds)
        with self._lock:
            self._state.faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    def expire_tokens(self) -> None:
        with self._lock:
            self._state.tokens.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def redacted(self, secret: str) -> str:
        """How ``secret`` appears in the record: compare it with a recorded header or body field."""
        return self._redactor.fingerprint(secret)

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token issued (the most recent ones), for tests that search logs
        for them. In-process only: never part of the record or of ``/_emulator/state``."""
        with self._lock:
            return list(self._state.issued)

    def reset(self) -> None:
        with self._lock:
            self._state = _State(self.max_recorded)

    def snapshot(self) -> dict[str, Any]:
        """State as JSON, for the control endpoint and for tests in other processes."""
        with self._lock:
            return {
                "orders": {str(k): v["orderStatus"] for k, v in self._state.orders.items()},
                "cancels_applied": {str(k): v for k, v in self._state.cancels_applied.items()},
                "requests": [
                    {
                        "endpoint": r.endpoint,
                        "method": r.method,
                        "path": r.path,
                        "body": r.body,
                        "received_at": r.received_at,
                        "client_port": r.client_port,
                    }
                    for r in self._state.requests
                ],
            }

    # --- concurrency ----------------------------------------------------------------------------------

    def in_flight(self) -> dict[str, int]:
        """Cancel requests being handled now, and the most at once since the last reset."""
        with self._lock:
            state = self._state
            return {"now": state.cancels_in_flight, "max": state.max_cancels_in_flight}

    def reset_in_flight(self) -> None:
        """Start a new high-water mark (from the requests in flight now)."""
        with self._lock:
            self._state.max_cancels_in_flight = self._state.cancels_in_flight

    @contextlib.contextmanager
    def _cancel_in_flight(self) -> Iterator[None]:
        with self._lock:
            state = self._state  # a reset() while this request runs must not skew the new state
            state.cancels_in_flight += 1
            state.max_cancels_in_flight = max(state.max_cancels_in_flight, state.cancels_in_flight)
        try:
            yield
        finally:
            with self._lock:
                state.cancels_in_flight -= 1

    # --- lifecycle ----------------------------------------------------------------------------------

    def _bind(self, host: str, port: int) -> ThreadingHTTPServer:
        warn_if_exposed(host)
        handler = type("BoundHandler", (KiboRequestHandler,), {"emulator": self})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        return server

    def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None
    ) -> KiboEmulator:
        """
        Serve from a background thread (port 0: a free port); ``url`` tells where. With ``tls`` (a server
        context holding a certificate) it serves https, for tests of certificate handling.
        """
        self._server = self._bind(host, port)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        """Serve from this thread until interrupted (the console script)."""
        self._server = self._bind(host, port)
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator is not running"
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def __enter__(self) -> KiboEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling (called from handler threads) ---------------------------------------------

    def _take_fault(self, endpoint: str, order_id: int | None) -> Fault | None:
        with self._lock:
            self._state.faults, fault = take_fault(self._state.faults, endpoint, order_id)
        return fault

    def _record(self, request: RecordedRequest) -> None:
        request.headers = self._redactor.headers(request.headers)
        request.body = self._redactor.body(request.endpoint, request.body)
        with self._lock:
            self._state.requests.append(request)

    def _issue_token(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return 400, kibo_error("grant_type must be client_credentials", "INVALID_REQUEST_DATA")
        client_id, secret = body.get("client_id"), body.get("client_secret")
        if not isinstance(client_id, str) or self.clients.get(client_id) != secret:
            return 401, kibo_error("Invalid application key or shared secret", "UNAUTHORIZED")
        token, refresh_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            tokens = self._state.tokens
            for expired in [t for t, expiry in tokens.items() if expiry <= now]:
                del tokens[expired]  # bounded: a long benchmark does not keep every token it issued
            tokens[token] = now + self.token_ttl
            self._state.issued.extend((token, refresh_token))
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.token_ttl) if self.token_ttl >= 1 else self.token_ttl,
            "refresh_token": refresh_token,
        }

    def _authorize(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self._lock:
            expiry = self._state.tokens.get(token) if token else None
        if expiry is None or expiry <= time.monotonic():
            return 401, kibo_error("Missing, invalid or expired access token", "UNAUTHORIZED")
        tenant = headers.get("x-vol-tenant")
        if not tenant:
            return 400, kibo_error("x-vol-tenant header is required", "GENERIC_BAD_REQUEST")
        if tenant not in self.tenants:
            return 403, kibo_error(f"Tenant {tenant} is not authorized for this application", "FORBIDDEN")
        return None

    def _cancel(self, body: Any) -> tuple[int, dict[str, Any]]:
        problems = cancel_problems(body, self.order_id_field)
        if problems:
            return 400, kibo_error("Validation error", "INVALID_REQUEST_DATA", problems)
        order_id = body[self.order_id_field]
        with self._lock:
            order = self._state.orders.get(order_id)
            if order is None:
                return 404, kibo_error(f"Order {order_id} not found", "GENERIC_NOT_FOUND")
            if order["orderStatus"] == "CANCELED":
                return 409, kibo_error(f"Order {order_id} is already canceled", "ORDER_ALREADY_CANCELED")
            if order["orderStatus"] != "OPEN":
                return 409, kibo_error(
                    f"Order {order_id} cannot be canceled in status {order['orderStatus']}",
                    "INVALID_ORDER_STATE",
                )
            canceled = make_order(order_id, "CANCELED")
            canceled.update({k: v for k, v in order.items() if k not in canceled})
            canceled["dispositionReason"] = body["dispositionReason"]
            self._state.orders[order_id] = canceled
            self._state.cancels_applied[order_id] = self._state.cancels_applied.get(order_id, 0) + 1
            return 200, canceled  # stored orders are replaced, never changed in place: no copy needed

    def _get_order(self, order_id: int) -> tuple[int, dict[str, Any]]:
        with self._lock:
            order = self._state.orders.get(order_id)
        if order is None:
            return 404, kibo_error(f"Order {order_id} not found", "GENERIC_NOT_FOUND")
        return 200, order

    def _control(self, method: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Control endpoints for tests and benchmarks that run in another process."""
        if method == "GET" and name == "state":
            return 200, {**self.snapshot(), "cancels_in_flight": self.in_flight()}
        if method == "POST" and name == "in_flight/reset":
            self.reset_in_flight()
            return 200, {}
        if method == "POST" and name == "reset":
            self.reset()
            return 200, {}
        if method == "POST" and name == "orders" and isinstance(body, dict):
            self.add_orders([int(i) for i in body.get("ids", [])], str(body.get("status", "OPEN")))
            return 200, {}
        if method == "POST" and name == "faults" and isinstance(body, dict):
            self.inject(**body)
            return 200, {}
        if name == "tenant_limit" and (method == "GET" or isinstance(body, dict)):
            if method == "POST":
                rate, retry_after = body.get("requests_per_second"), body.get("retry_after")
                self.tenant_limit.configure(
                    None if rate is None else float(rate), None if retry_after is None else float(retry_after)
                )
            return 200, self.tenant_limit.snapshot()
        if method == "POST" and name == "latency" and isinstance(body, dict):
            self.latency = float(body["seconds"])
            return 200, {}
        return 404, kibo_error(f"Unknown control endpoint {method} {name}", "GENERIC_NOT_FOUND")
