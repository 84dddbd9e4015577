"""The emulator's HTTP side: routing, Kibo's error shape, and faults as they look on the wire (a dropped
connection, a cut or undecodable body, a redirect). What the requests do to orders and tokens is
:class:`~airflow_provider_kibo_cancel.emulator.server.KiboEmulator`'s."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from airflow_provider_kibo_cancel.emulator.record import RecordedRequest
from airflow_provider_kibo_cancel.routes import CANCEL_PATH, OAUTH_PATH

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel.emulator.faults import Fault
    from airflow_provider_kibo_cancel.emulator.server import KiboEmulator

_ORDER_PATH = re.compile(r"^/api/v2/order/(\d+)$")
CONTROL_PREFIX = "/_emulator/"


def kibo_error(message: str, code: str, items: list[str] | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "errorCode": code,
        "applicationName": "Kibo Emulator",
        "items": [{"errorCode": code, "message": item} for item in items or []],
    }


class KiboRequestHandler(BaseHTTPRequestHandler):
    """One HTTP exchange: route it, apply a fault on the wire where one is injected, reply."""

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

        if path.startswith(CONTROL_PREFIX):
            status, payload = emulator._control(self.command, path[len(CONTROL_PREFIX) :], body)
            self._reply(status, payload)
            return

        endpoint, order_id = self._route(path)
        if endpoint == "cancel":
            with emulator._cancel_in_flight():
                self._serve_api(endpoint, order_id, path, headers, body)
            return
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
            self._reply(404, kibo_error(f"No route for {path}", "GENERIC_NOT_FOUND"))
            return
        if self.command != allowed:
            self._reply(405, kibo_error(f"{self.command} is not allowed on {path}", "METHOD_NOT_ALLOWED"))
            return

        if endpoint == "cancel" and isinstance(body, dict):
            given = body.get(emulator.order_id_field, body.get("orderId"))
            order_id = given if isinstance(given, int) else None
        if (tenant_retry_after := emulator.tenant_limit.admit(endpoint)) is not None:
            self._reply(429, None, raw=b"", extra_headers={"Retry-After": tenant_retry_after})
            return
        fault = emulator._take_fault(endpoint, order_id)
        if fault is not None and self._reply_fault_before(fault):
            return

        if endpoint == "oauth":
            if headers.get("content-type", "").split(";")[0] != "application/json":
                self._reply(400, kibo_error("Content-Type must be application/json", "GENERIC_BAD_REQUEST"))
                return
            status, payload = emulator._issue_token(body)
            if fault is not None and fault.kind == "token_fields" and status == 200:
                payload = {**payload, **(fault.fields or {})}
                payload = {key: value for key, value in payload.items() if value is not None}
            self._reply_or_truncate(fault, status, payload)
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
            self._reply(400, kibo_error("Content-Type must be application/json", "GENERIC_BAD_REQUEST"))
            return
        status, payload = emulator._cancel(body)
        self._reply_after_apply(fault, status, payload)

    def _reply_fault_before(self, fault: Fault) -> bool:
        """Faults that strike before the request is handled; True when this one replied already."""
        if fault.kind == "latency":
            time.sleep(fault.delay)
        elif fault.kind == "status":
            self._reply_fault_status(fault)
            return True
        elif fault.kind == "drop":
            self._drop()
            return True
        elif fault.kind == "redirect":
            # What a misconfigured proxy or an http->https hop does; ``status`` picks 301/302/307/308.
            status = fault.status if 300 <= fault.status < 400 else 307
            self._reply(status, None, raw=b"", extra_headers={"Location": "https://elsewhere.invalid/x"})
            return True
        elif fault.kind == "html":
            self._reply(
                fault.status if fault.status < 500 else 200,
                None,
                raw=b"<html><body><h1>Maintenance</h1></body></html>",
                content_type="text/html",
            )
            return True
        return False

    def _reply_after_apply(self, fault: Fault | None, status: int, payload: dict[str, Any]) -> None:
        """The cancel's answer, spoiled by a fault that strikes after the cancel was applied."""
        if fault is not None and status == 200:
            if fault.kind == "slow_after_apply":
                time.sleep(fault.delay)  # the cancel is applied; the client gives up waiting
            elif fault.kind == "drop_after_apply":
                self._drop()
                return
            elif fault.kind == "truncated_after_apply":
                self._reply_truncated(payload)
                return
            elif fault.kind == "drip_after_apply":
                self._reply_dripping(payload, fault.delay)
                return
            elif fault.kind == "undecodable_after_apply":
                self._reply(200, None, raw=b"not gzip at all", extra_headers={"Content-Encoding": "gzip"})
                return
            elif fault.kind == "wrong_order":
                payload = {**payload, "orderID": payload["orderID"] + 1}
        self._reply_or_truncate(fault, status, payload)

    def _reply_or_truncate(self, fault: Fault | None, status: int, payload: dict[str, Any]) -> None:
        if fault is not None and fault.kind == "truncated" and status == 200:
            self._reply(status, None, raw=json.dumps(payload).encode()[: fault.size])
        else:
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
            # As Kibo does: an empty body, Retry-After and a correlation id. retry_after "" sends none,
            # as a proxy's or WAF's 429 often does.
            retry_after = "1" if fault.retry_after is None else fault.retry_after
            headers = {"Retry-After": retry_after} if retry_after else {}
            self._reply(429, None, raw=b"", extra_headers=headers)
        else:
            code = "GENERIC_UNAVAILABLE" if fault.status >= 500 else "GENERIC_BAD_REQUEST"
            self._reply(fault.status, kibo_error(HTTPStatus(fault.status).phrase, code))

    def _reply_truncated(self, payload: dict[str, Any]) -> None:
        """Headers promise the whole body; half of it arrives and the connection closes (a proxy cut)."""
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self._drop()

    def _reply_dripping(self, payload: dict[str, Any], every: float) -> None:
        """The whole answer, a byte every ``every`` seconds: each read gets data, the answer never ends."""
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        with contextlib.suppress(OSError):
            for index in range(len(data)):
                time.sleep(every)
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()

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
