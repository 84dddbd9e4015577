"""One rate budget per Kibo tenant: the shared 429 pause, the budget and the rate it learns.

Kibo counts calls per tenant and environment, every task and worker together, and publishes no numbers.
A :class:`TenantBudget` is what the retry policy consults before each request (``acquire``) and tells
after each answer (``rate_limited`` on a 429, ``succeeded`` otherwise):

- :class:`LocalTenantBudget` holds it within one hook (one task instance): the connection extra
  ``tenant_requests_per_second`` caps the hook's rate, a 429 lowers the rate it sends at, successes
  raise it again slowly. The 429 pause itself is the hook's :class:`~.policy.Gate`'s.
- ``RedisTenantBudget`` (``hooks/redis_budget.py``; connection extra ``rate_limit_conn_id``) holds the pause,
  the budget and the learned rate in Redis, shared by every task and worker; it falls back to a
  :class:`LocalTenantBudget` while Redis cannot be reached.

The learning is additive increase, multiplicative decrease (AIMD), with the constants below.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Protocol

#: A 429 sets the rate to this fraction of the rate being sent. Gentler than TCP's or botocore's 0.5/0.7:
#: the rate measured is the one that met the limit (Kibo blocks at its limit, it does not drop some),
#: so 85 % of it is under the limit after one cut in most runs, and at worst after two, while keeping
#: most of the throughput.
DECREASE_FACTOR = 0.85
#: While calls succeed the rate climbs by this fraction of the rate set at the last cut, per minute of
#: sending: additive, and slow on purpose: each climb past the limit costs every task a Retry-After
#: (60 s to an hour), so from a cut the rate gets back to where it met the limit in about 9 minutes
#: (15 % / 1.7 % a minute) rather than seconds.
INCREASE_PER_MINUTE = 0.017
#: The learned rate never goes below this (requests per second): a trickle still makes progress.
MIN_RATE = 1.0
#: A 429 lowers the rate only when at least this many requests were sent in the second before it: a
#: task that sends a few calls and meets a 429 did not cause it (Kibo's limit is the tenant's), and a
#: rate "learned" from two requests would slow every later run to a crawl.
MIN_SAMPLES = 10
#: The window, in seconds, over which the rate being sent is measured.
SENT_WINDOW = 1.0
#: How long a learned rate is kept (seconds): the next nightly run starts at it.
LEARNED_TTL = 86_400.0


class TenantBudget(Protocol):
    """What the retry policy asks and tells the tenant's budget."""

    def acquire(self, *, counted: bool) -> tuple[float, float]:
        """
        Before a request: ``(paused, wait)``. ``paused`` > 0 means the tenant is paused that many more
        seconds (send nothing); otherwise a slot is reserved and the request goes after ``wait`` s.
        ``counted`` is False for the OAuth request, which Kibo does not count against the tenant (it
        respects the pause, but takes no slot).
        """
        ...

    def rate_limited(self, pause: float) -> None:
        """A 429: pause the tenant ``pause`` seconds and lower the rate (once per pause)."""
        ...

    def succeeded(self) -> None:
        """A counted request was answered without a 429: the rate may climb."""
        ...

    def confirm_slot(self) -> tuple[float, float]:
        """
        After waiting for a reserved slot: ``(paused, wait)`` as :meth:`acquire` gives them. ``paused``
        > 0 when the tenant was paused meanwhile (a 429 elsewhere); ``wait`` > 0 when the slot was lost
        (the shared store went away while the request waited) and the next one is ``wait`` s away.
        """
        ...

    def describe(self) -> str:
        """Where the budget lives and the rate in force, for the log (never a secret)."""
        ...


# --- the learning arithmetic, shared by both budgets (the Redis scripts do the same in Lua) ----------


def decreased(rate: float | None, sent: float) -> float | None:
    """The rate after a 429: a fraction of the rate being sent (``sent``, measured over the last
    second, never above the rate in force); unchanged (None: no learned rate) when too few were sent
    to say anything."""
    if sent < MIN_SAMPLES:
        return rate
    sending = sent if rate is None else min(rate, sent)
    return max(MIN_RATE, sending * DECREASE_FACTOR)


def increased(rate: float, step: float, seconds: float, cap: float | None) -> float:
    """The rate after ``seconds`` (at most one) of successful sending: ``step`` more per minute."""
    grown = rate + step * min(max(seconds, 0.0), 1.0) / 60.0
    return grown if cap is None else min(cap, grown)


def step_for(rate: float) -> float:
    """The additive step (requests per second per minute) for a rate just set by a cut."""
    return max(rate * INCREASE_PER_MINUTE, 0.01)


class LocalTenantBudget:
    """
    The budget within one hook: ``cap`` (``tenant_requests_per_second``) and the learned rate space its
    requests (GCRA: each request reserves the next slot), a 429 lowers the rate, successes raise it
    again, never above the cap. As Redis's fallback, its cap is the hook's share of the shared rate.
    """

    def __init__(self, cap: float | None) -> None:
        self._lock = threading.Lock()
        self.cap = cap
        self.rate: float | None = None  # learned; None: none yet
        self._step = 0.0
        self._last_increase = time.monotonic()
        self._next_slot = 0.0  # time.monotonic() of the next free slot
        self._sent: deque[float] = deque()
        self._paused_until = 0.0

    def _in_force(self) -> float | None:
        if self.rate is None:
            return self.cap
        return self.rate if self.cap is None else min(self.rate, self.cap)

    def acquire(self, *, counted: bool) -> tuple[float, float]:
        if not counted:
            return 0.0, 0.0
        with self._lock:
            now = time.monotonic()
            self._sent.append(now)
            while self._sent and self._sent[0] <= now - SENT_WINDOW:
                self._sent.popleft()
            rate = self._in_force()
            if rate is None:
                return 0.0, 0.0
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / rate
            return 0.0, slot - now

    def limit_to(self, cap: float | None) -> None:
        """Hold to ``cap`` from now on (a new share Redis gave); a rate learned here stays if lower."""
        with self._lock:
            self.cap = cap
            if self.rate is not None and cap is not None and self.rate > cap:
                self.rate, self._step = cap, step_for(cap)

    def reserved_until(self, moment: float) -> None:
        """Slots up to ``moment`` (``time.monotonic()``) are taken elsewhere: the next one comes after."""
        with self._lock:
            self._next_slot = max(self._next_slot, moment)

    def next_slot(self) -> float:
        """The ``time.monotonic()`` of the next free slot (in the past when one is free now)."""
        with self._lock:
            return self._next_slot

    def rate_limited(self, pause: float) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._paused_until:
                return  # the same episode: in-flight requests meeting the same wall cut nothing more
            self._paused_until = now + pause
            while self._sent and self._sent[0] <= now - SENT_WINDOW:
                self._sent.popleft()
            learned = decreased(self._in_force(), float(len(self._sent)))
            if learned is not None and learned != self.rate:
                self.rate, self._step = learned, step_for(learned)
            self._last_increase = now + pause  # the pause is not time spent sending

    def succeeded(self) -> None:
        if self.rate is None:
            return
        with self._lock:
            now = time.monotonic()
            if self.rate is not None:
                self.rate = increased(self.rate, self._step, now - self._last_increase, self.cap)
                self._last_increase = max(self._last_increase, now)

    def confirm_slot(self) -> tuple[float, float]:
        return 0.0, 0.0  # the hook's Gate holds this hook's pause; a slot here is never lost

    def describe(self) -> str:
        rate = self._in_force()
        return f"per task, {'no limit' if rate is None else f'{rate_text(rate)} requests/s'}"


def rate_text(rate: float) -> str:
    """A rate for the log: one decimal, or two significant figures under one a second (a share of a low
    rate among many tasks is 0.083/s, not "0.1")."""
    return f"{rate:.1f}" if rate >= 0.95 else f"{rate:.2g}"


def budget_for(
    settings: Any,
    log: Any,
    get_connection: Any,
) -> TenantBudget:
    """
    The budget a hook uses: in Redis when the connection names ``rate_limit_conn_id`` (and the ``redis``
    client is installed), otherwise within the hook. A Redis that cannot be used is said once in the log
    and the hook goes on with its own budget.
    """
    cap = settings.tenant_requests_per_second
    if not settings.rate_limit_conn_id:
        return LocalTenantBudget(cap)
    try:
        from airflow_provider_kibo_cancel.hooks.redis_budget import RedisTenantBudget  # noqa: PLC0415 - redis is an optional extra
    except ImportError:
        log.warning(
            "Connection extra 'rate_limit_conn_id' is set but the redis client is not installed "
            "(pip install airflow-provider-kibo-cancel[redis]): the rate budget holds within this task only"
        )
        return LocalTenantBudget(cap)
    return RedisTenantBudget.from_connection(
        settings.rate_limit_conn_id,
        tenant_id=settings.tenant_id,
        environment=settings.environment,
        cap=cap,
        log=log,
        get_connection=get_connection,
    )
