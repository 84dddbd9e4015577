"""The emulator's fault injection: what can go wrong, for which requests, and for how long.

What a fault looks like on the wire is :mod:`~airflow_provider_kibo_cancel.emulator.handler`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["oauth", "cancel", "get_order"]
FaultKind = Literal[
    "status",
    "latency",
    "drop",
    "html",
    "redirect",
    "slow_after_apply",
    "drop_after_apply",
    "truncated_after_apply",
    "drip_after_apply",
    "undecodable_after_apply",
    "wrong_order",
    "token_fields",
    "truncated",
]


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
    # token_fields: keys of the OAuth answer replaced (None removes one); the token is still issued.
    fields: dict[str, Any] | None = None
    # truncated: the answer (a token issued, a cancel applied) is cut to this many bytes.
    size: int = 20
    # With ``times=None``: the fault lasts this many seconds from its injection (a 429 wall, say).
    seconds: float | None = None
    expires_at: float = field(init=False, default=float("inf"))

    def __post_init__(self) -> None:
        if self.seconds is not None:
            self.expires_at = time.monotonic() + self.seconds


def take_fault(faults: list[Fault], endpoint: str, order_id: int | None) -> tuple[list[Fault], Fault | None]:
    """
    The faults still in force (expired ones dropped, a used-up one removed) and the one that strikes this
    request to ``endpoint`` about ``order_id``, or None. Called under the emulator's lock.
    """
    now = time.monotonic()
    faults = [fault for fault in faults if fault.expires_at > now]
    for fault in faults:
        if fault.endpoint in (None, endpoint) and fault.order_id in (None, order_id):
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    faults.remove(fault)
            return faults, fault
    return faults, None
