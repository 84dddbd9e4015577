"""What the emulator keeps of the requests it receives: a bounded record with every secret redacted.

A secret is replaced by a keyed fingerprint (HMAC-SHA256 under a key made at start and never shown):
tests can still tell that two requests carried the same token, or that a request carried a given one
(``KiboEmulator.redacted(value)``), while neither the record nor ``/_emulator/state`` holds a secret, and
a fingerprint cannot be checked against guessed passwords by anyone who only sees the record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass
from typing import Any

from airflow_provider_kibo_cancel.safety import is_loopback

#: How many requests the emulator remembers (the most recent ones); older ones are dropped, so a long
#: benchmark runs in constant memory. ``KiboEmulator(max_recorded=...)`` changes it.
RECORD_LIMIT = 10_000

# Body fields and headers whose values are secrets wherever they appear.
SECRET_FIELDS = frozenset({"client_secret", "password", "access_token", "refresh_token"})
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass
class RecordedRequest:
    """One request as the emulator received it, secrets redacted."""

    endpoint: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    client_port: int  # the same port on two requests: the client reused its connection


class Redactor:
    """Replaces secrets by ``<redacted:fingerprint>``; one key per emulator."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def fingerprint(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
        return f"<redacted:{digest[:16]}>"

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        clean = dict(headers)
        for name in SECRET_HEADERS & clean.keys():
            scheme, _, credential = clean[name].partition(" ")
            # "Bearer <redacted:...>": the scheme stays readable, the credential does not.
            clean[name] = (
                f"{scheme} {self.fingerprint(credential)}" if credential else self.fingerprint(scheme)
            )
        return clean

    def body(self, endpoint: str, body: Any) -> Any:
        if isinstance(body, dict):
            return {
                key: self.fingerprint(str(value)) if key in SECRET_FIELDS and value is not None else value
                for key, value in body.items()
            }
        if endpoint == "oauth" and body is not None:
            # An OAuth body that is not a JSON object may still hold the shared secret: keep its size only.
            return f"<redacted: {len(str(body))} characters that are not a JSON object>"
        return body


def warn_if_exposed(host: str) -> None:
    """Say on stderr when the emulator listens beyond this machine."""
    if is_loopback(host):
        return
    print(
        f"WARNING: the Kibo emulator is bound to {host or 'every address'!r}, reachable from other "
        "machines. It is a test double: its control endpoints (/_emulator/...) change orders and faults "
        "without any authentication and its demo credentials are public. Bind 127.0.0.1 unless another "
        "machine really has to reach it.",
        file=sys.stderr,
        flush=True,
    )
