"""The emulator's tenant-wide rate limit: Kibo counts calls per tenant, every client together.

Beyond ``requests_per_second`` accepted in any sliding second, the tenant is blocked for ``retry_after``
seconds: every tenant call (cancel, Get Order) meanwhile gets an empty 429 with ``Retry-After``, as
Kibo's "wait 60 s" does. The OAuth endpoint is not counted (Kibo serves it from home.mozu.com, not from
the tenant's host). Off (``requests_per_second=None``) unless set.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

#: Routes that carry ``x-vol-tenant`` and count against the tenant's limit.
LIMITED_ENDPOINTS = frozenset({"cancel", "get_order"})


class TenantLimit:
    """A sliding one-second window of accepted calls, and the block a call beyond it starts."""

    def __init__(self, requests_per_second: float | None = None, retry_after: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._accepted: deque[float] = deque()
        self._blocked_until = 0.0
        self.requests_per_second = requests_per_second
        self.retry_after = retry_after
        self.accepted = 0
        self.rejected = 0
        #: Times a call beyond the limit started a block (each one costs every client a Retry-After).
        self.episodes = 0
        #: When the last block began (epoch seconds, as the record's ``received_at``); 0: none yet.
        self.last_block_started = 0.0

    def configure(self, requests_per_second: float | None, retry_after: float | None = None) -> None:
        """Set (or, with None, lift) the limit; the counters and any block start afresh."""
        with self._lock:
            self.requests_per_second = requests_per_second
            if retry_after is not None:
                self.retry_after = retry_after
            self._accepted.clear()
            self._blocked_until = 0.0
            self.accepted = self.rejected = self.episodes = 0

    def admit(self, endpoint: str) -> str | None:
        """None when the call may proceed; otherwise the Retry-After value of its 429."""
        if endpoint not in LIMITED_ENDPOINTS:
            return None
        with self._lock:
            limit = self.requests_per_second
            if limit is None:
                return None
            now = time.monotonic()
            if now < self._blocked_until:
                self.rejected += 1
                return str(max(1, round(self._blocked_until - now)))
            while self._accepted and self._accepted[0] <= now - 1.0:
                self._accepted.popleft()
            if len(self._accepted) >= limit:
                self._blocked_until = now + self.retry_after
                self.rejected += 1
                self.episodes += 1
                self.last_block_started = time.time()
                return str(max(1, round(self.retry_after)))
            self._accepted.append(now)
            self.accepted += 1
            return None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_per_second": self.requests_per_second,
                "retry_after": self.retry_after,
                "accepted": self.accepted,
                "rejected": self.rejected,
                "episodes": self.episodes,
                "blocked_for": max(0.0, self._blocked_until - time.monotonic()),
            }
