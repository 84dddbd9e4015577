"""A local Kibo emulator: OAuth, Cancel Order and Get Order over real HTTP on 127.0.0.1.

Built on the standard library's ThreadingHTTPServer rather than FastAPI/uvicorn: it starts in
milliseconds in-process, depends on nothing that changes between Airflow releases, and gives the byte-level
control that fault injection needs (dropping a connection after a cancel was applied, an HTML body, a
Retry-After header on an empty 429).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from airflow_provider_kibo_cancel.models import CANCEL_PATH, OAUTH_PATH

Endpoint = Literal["oauth", "cancel", "get_order"]
FaultKind = Literal[
    "status", "latency", "drop", "html", "slow_after_apply", "drop_after_apply", "wrong_order"
]

# Kibo's list is longer than it publishes; the emulator knows a few unpublished reasons too.
KNOWN_REASONS = frozenset(
    {
        "customer_changed_mind",
        "created_by_mistake",
        "other",
        "fraud_suspected",
        "payment_declined",
        "inventory_unavailable",
    }
)
_ORDER_PATH = re.compile(r"^/api/v2/order/(\d+)$")
# Not 8080: that is the Airflow API server's default, and both often run on one machine.
DEFAULT_PORT = 8090
_CONTROL_PREFIX = "/_emulator/"


@dataclass
class RecordedRequest:
    """One request as the emulator received it."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    client_port: int  # the same port on two requests: the client reused its connection


@dataclass
class Fault:
    """A misbehaviour for the next ``times`` requests to ``endpoint`` (None: every endpoint).

    With ``order_id`` set, only requests about that order (cancel body or Get Order path) match.
    """

    kind: FaultKind
    endpoint: str | None = "cancel"
    times: int | None = 1  # None: until cleared
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    order_id: int | None = None


@dataclass
class _State:
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (monotonic)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    cancels_applied: dict[int, int] = field(default_factory=dict)


def make_order(order_id: int, status: str = "OPEN") -> dict[str, Any]:
    """An order in Kibo's Get Order shape, with sections whose fields Kibo does not publish."""
    item_state = "CANCELED" if status == "CANCELED" else "NEW"
    return {
        "orderID": order_id,
        "orderType": "STANDARD",
        "isTestOrder": True,
        "deliveryMethod": "SHIP_TO_HOME",
        "orderCurrency": "USD",
        "orderDate": "2010-04-08T16:32:03+00:00",
        "orderState": status,
        "orderStatus": status,
        "customerSubtotal": 42.5,
        "subtotal": 42.5,
        "estimatedShipping": 5.0,
        "customerTotal": 47.5,
        "customerTotalNet": 47.5,
        "total": 47.5,
        "singlePackageRequested": False,
        "shippingAddress": f"addr-{order_id}",
        "items": [
            {
                "orderItemID": order_id * 10 + 1,
                "itemState": item_state,
                "orderID": order_id,
                "shipmentID": order_id * 10 + 2,
                "externalItemID": f"SKU-{order_id}",
            }
        ],
        "shipments": [{"shipmentID": order_id * 10 + 2, "shipmentStatus": item_state}],
        "customer": {"customerID": 7, "loyaltyTier": "gold"},
        "taxData": {"taxCalculated": True, "lines": [{"rate": 0.0}]},
    }


class KiboEmulator:
    """
    In-memory Kibo: tenants, OAuth clients, orders (open, canceled already, completed, or unknown).

    Use it as a context manager or with ``start()``/``stop()``; ``url`` is the base URL for the
    connection's host override. ``inject()`` schedules faults; ``requests`` records what arrived.
    """

    def __init__(
        self,
        *,
        tenants: tuple[str, ...] = ("30294",),
        clients: dict[str, str] | None = None,
        token_ttl: float = 3600.0,
        latency: float = 0.0,
    ) -> None:
        self.tenants = set(tenants)
        self.clients = dict(clients or {"demo-app-key": "demo-shared-secret"})
        self.token_ttl = token_ttl
        self.latency = latency
        self._lock = threading.Lock()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
    ) -> None:
        with self._lock:
            self._state.faults.append(Fault(kind, endpoint, times, status, retry_after, delay, order_id))

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

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def snapshot(self) -> dict[str, Any]:
        """State as JSON, for the control endpoint and for tests in other processes."""
        with self._lock:
            return {
                "orders": {str(k): v["orderStatus"] for k, v in self._state.orders.items()},
                "cancels_applied": {str(k): v for k, v in self._state.cancels_applied.items()},
                "requests": [
                    {"endpoint": r.endpoint, "method": r.method, "path": r.path, "body": r.body}
                    for r in self._state.requests
                ],
            }

    # --- lifecycle ----------------------------------------------------------------------------------

    def _bind(self, host: str, port: int) -> ThreadingHTTPServer:
        handler = type("BoundHandler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        return server

    def start(self, host: str = "127.0.0.1", port: int = 0) -> KiboEmulator:
        """Serve from a background thread (port 0: a free port); ``url`` tells where."""
        self._server = self._bind(host, port)
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
        return f"http://{host!s}:{port}"

    def __enter__(self) -> KiboEmulator:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling (called from handler threads) ---------------------------------------------

    def _take_fault(self, endpoint: str, order_id: int | None) -> Fault | None:
        with self._lock:
            for fault in self._state.faults:
                if fault.endpoint in (None, endpoint) and fault.order_id in (None, order_id):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._state.faults.remove(fault)
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._state.requests.append(request)

    def _issue_token(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return 400, _error("grant_type must be client_credentials", "INVALID_REQUEST_DATA")
        client_id, secret = body.get("client_id"), body.get("client_secret")
        if not isinstance(client_id, str) or self.clients.get(client_id) != secret:
            return 401, _error("Invalid application key or shared secret", "UNAUTHORIZED")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._state.tokens[token] = time.monotonic() + self.token_ttl
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.token_ttl) if self.token_ttl >= 1 else self.token_ttl,
            "refresh_token": secrets.token_urlsafe(24),
        }

    def _authorize(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with self._lock:
            expiry = self._state.tokens.get(token) if token else None
        if expiry is None or expiry <= time.monotonic():
            return 401, _error("Missing, invalid or expired access token", "UNAUTHORIZED")
        tenant = headers.get("x-vol-tenant")
        if not tenant:
            return 400, _error("x-vol-tenant header is required", "GENERIC_BAD_REQUEST")
        if tenant not in self.tenants:
            return 403, _error(f"Tenant {tenant} is not authorized for this application", "FORBIDDEN")
        return None

    def _cancel(self, body: Any) -> tuple[int, dict[str, Any]]:
        problems = _cancel_problems(body)
        if problems:
            return 400, _error("Validation error", "INVALID_REQUEST_DATA", problems)
        order_id = body["orderId"]
        with self._lock:
            order = self._state.orders.get(order_id)
            if order is None:
                return 404, _error(f"Order {order_id} not found", "GENERIC_NOT_FOUND")
            if order["orderStatus"] == "CANCELED":
                return 409, _error(f"Order {order_id} is already canceled", "ORDER_ALREADY_CANCELED")
            if order["orderStatus"] != "OPEN":
                return 409, _error(
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
            return 404, _error(f"Order {order_id} not found", "GENERIC_NOT_FOUND")
        return 200, order

    def _control(self, method: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Control endpoints for tests and benchmarks that run in another process."""
        if method == "GET" and name == "state":
            return 200, self.snapshot()
        if method == "POST" and name == "reset":
            self.reset()
            return 200, {}
        if method == "POST" and name == "orders" and isinstance(body, dict):
            self.add_orders([int(i) for i in body.get("ids", [])], str(body.get("status", "OPEN")))
            return 200, {}
        if method == "POST" and name == "faults" and isinstance(body, dict):
            self.inject(**body)
            return 200, {}
        if method == "POST" and name == "latency" and isinstance(body, dict):
            self.latency = float(body["seconds"])
            return 200, {}
        return 404, _error(f"Unknown control endpoint {method} {name}", "GENERIC_NOT_FOUND")


def _error(message: str, code: str, items: list[str] | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "errorCode": code,
        "applicationName": "Kibo Emulator",
        "items": [{"errorCode": code, "message": item} for item in items or []],
    }


def _cancel_problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["Request body must be a JSON object"]
    problems = []
    unknown = set(body) - {"orderId", "dispositionReason", "dispositionOtherReason"}
    if unknown:
        problems.append(f"Unknown fields: {sorted(unknown)}")
    order_id = body.get("orderId")
    if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id < 1:
        problems.append("orderId must be an integer >= 1")
    reason = body.get("dispositionReason")
    if reason not in KNOWN_REASONS:
        problems.append(f"dispositionReason {reason!r} is not a valid disposition reason")
    other = body.get("dispositionOtherReason")
    if reason == "other":
        if not isinstance(other, str) or not 1 <= len(other) <= 255:
            problems.append(
                "dispositionOtherReason must be 1..255 characters when dispositionReason is other"
            )
    elif other is not None:
        problems.append("dispositionOtherReason is only used when dispositionReason is other")
    return problems


class _Handler(BaseHTTPRequestHandler):
    emulator: KiboEmulator
    protocol_version = "HTTP/1.1"  # keep-alive, as Kibo's hosts do
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm meets the
    # client's delayed ACK and adds ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = "KiboEmulator"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded, not printed

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        emulator = self.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}

        if path.startswith(_CONTROL_PREFIX):
            status, payload = emulator._control(self.command, path[len(_CONTROL_PREFIX) :], body)
            self._reply(status, payload)
            return

        endpoint, order_id = self._route(path)
        self._serve_api(endpoint, order_id, path, headers, body)

    def _serve_api(
        self, endpoint: str, order_id: int | None, path: str, headers: dict[str, str], body: Any
    ) -> None:
        emulator = self.emulator
        emulator._record(
            RecordedRequest(endpoint, self.command, path, headers, body, time.time(), self.client_address[1])
        )
        if emulator.latency:
            time.sleep(emulator.latency)
        allowed = {"oauth": "POST", "cancel": "POST", "get_order": "GET"}.get(endpoint)
        if allowed is None:
            self._reply(404, _error(f"No route for {path}", "GENERIC_NOT_FOUND"))
            return
        if self.command != allowed:
            self._reply(405, _error(f"{self.command} is not allowed on {path}", "METHOD_NOT_ALLOWED"))
            return

        if endpoint == "cancel" and isinstance(body, dict) and isinstance(body.get("orderId"), int):
            order_id = body["orderId"]
        fault = emulator._take_fault(endpoint, order_id)
        if fault is not None:
            if fault.kind == "latency":
                time.sleep(fault.delay)
            elif fault.kind == "status":
                self._reply_fault_status(fault)
                return
            elif fault.kind == "drop":
                self._drop()
                return
            elif fault.kind == "html":
                self._reply(
                    fault.status if fault.status < 500 else 200,
                    None,
                    raw=b"<html><body><h1>Maintenance</h1></body></html>",
                    content_type="text/html",
                )
                return

        if endpoint == "oauth":
            if headers.get("content-type", "").split(";")[0] != "application/json":
                self._reply(400, _error("Content-Type must be application/json", "GENERIC_BAD_REQUEST"))
                return
            self._reply(*emulator._issue_token(body))
            return
        denied = emulator._authorize(headers)
        if denied:
            self._reply(*denied)
            return
        if endpoint == "get_order":
            assert order_id is not None
            self._reply(*emulator._get_order(order_id))
            return

        if headers.get("content-type", "").split(";")[0] != "application/json":
            self._reply(400, _error("Content-Type must be application/json", "GENERIC_BAD_REQUEST"))
            return
        status, payload = emulator._cancel(body)
        if fault is not None and status == 200:
            if fault.kind == "slow_after_apply":
                time.sleep(fault.delay)  # the cancel is applied; the client gives up waiting
            elif fault.kind == "drop_after_apply":
                self._drop()
                return
            elif fault.kind == "wrong_order":
                payload = {**payload, "orderID": payload["orderID"] + 1}
        self._reply(status, payload)

    @staticmethod
    def _route(path: str) -> tuple[str, int | None]:
        if path == OAUTH_PATH:
            return "oauth", None
        if path == CANCEL_PATH:
            return "cancel", None
        match = _ORDER_PATH.match(path)
        if match:
            return "get_order", int(match.group(1))
        return "unknown", None

    def _reply_fault_status(self, fault: Fault) -> None:
        if fault.status == 429:
            # As Kibo does: an empty body, Retry-After and a correlation id.
            self._reply(429, None, raw=b"", extra_headers={"Retry-After": fault.retry_after or "1"})
        else:
            code = "GENERIC_UNAVAILABLE" if fault.status >= 500 else "GENERIC_BAD_REQUEST"
            self._reply(fault.status, _error(HTTPStatus(fault.status).phrase, code))

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reply(
        self,
        status: int,
        payload: dict[str, Any] | None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        correlation = uuid.uuid4().hex
        if payload is not None and status >= 400:
            payload = {**payload, "correlationId": correlation}
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-vol-correlation", correlation)
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
