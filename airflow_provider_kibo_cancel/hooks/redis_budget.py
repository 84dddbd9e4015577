"""The tenant budget in Redis, shared by every task and worker (connection extra ``rate_limit_conn_id``).

Every operation is one Lua script (``hooks/redis_scripts.py``: atomic on the server, timed by the
server's clock, so workers' clocks do not matter). Keys, all under ``kibo_cancel:{<tenant>:<environment>}:``
(the braces keep them in one Redis Cluster slot) and all expiring; none holds a secret:

- ``pause``: present while the tenant is paused after a 429; expires when Retry-After has passed.
- ``tat``: the GCRA's theoretical arrival time (ms): the next free slot of the shared budget.
- ``learned``: a hash ``rate``, ``step``, ``last`` (the learned rate, its additive step, the time of the
  last increase); kept :data:`~.tenant_budget.LEARNED_TTL` after its last change.
- ``sent``: a sorted set of the last second's counted requests, ``seq`` its member counter: the rate
  being sent, for the multiplicative decrease.
- ``holders``: a sorted set of the budgets (one per hook, a random id), each scored by when it sends
  (its last slot, or the end of the pause it met) and kept :data:`HOLDER_WINDOW` s after: how many
  share the rate, for the fallback.

While Redis cannot be reached the budget is a :class:`~.tenant_budget.LocalTenantBudget`, said once in the
log. It is capped at this hook's share of the last rate Redis gave (that rate divided by the holders
at this hook's last slot: tasks that lose Redis at once, on a stall or a failover, together send within
the shared rate, not each at all of it), its first slot after the last one taken in Redis. Redis is tried
again every :data:`RETRY_STORE_AFTER` s, and back on Redis the slots taken meanwhile come first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any, cast

import redis

from airflow_provider_kibo_cancel.hooks.redis_client import client_for, extra_of, failure
from airflow_provider_kibo_cancel.hooks.redis_scripts import (
    ACQUIRE,
    ACQUIRE_KEYS,
    RATE_LIMITED,
    RATE_LIMITED_KEYS,
    SUCCEEDED,
    SUCCEEDED_KEYS,
)
from airflow_provider_kibo_cancel.hooks.tenant_budget import (
    DECREASE_FACTOR,
    INCREASE_PER_MINUTE,
    LEARNED_TTL,
    MIN_RATE,
    MIN_SAMPLES,
    SENT_WINDOW,
    LocalTenantBudget,
    rate_text,
)

#: Seconds on the per-task budget after a Redis failure before Redis is tried again: short, since the
#: fallback is only a share of the rate; a store that hangs costs one call a timeout each time.
RETRY_STORE_AFTER = 10.0
#: A budget counts as sharing the rate this many seconds after the slot it last took (or the end of the
#: pause it met): longer than a task goes between requests (backoffs of up to 8 s, a call of up to 30 s),
#: so none drops out while it still sends; a finished task counts this long after, a smaller share for
#: the others should Redis go meanwhile, which is the safe side.
HOLDER_WINDOW = 60.0
#: A pause check (after a thread slept to its slot) that took this much (s) longer than this hook's
#: quickest recent call to Redis met a stalled Redis: every thread whose slot fell in the stall is
#: answered at once, so the slot is taken again, once. Against the quickest: a far Redis is no stall.
SLOW_CONFIRM = 0.2
KEY_PREFIX = "kibo_cancel"


def keys(tenant_id: str, environment: str) -> dict[str, str]:
    """The budget's keys for one tenant and environment."""
    base = f"{KEY_PREFIX}:{{{tenant_id}:{environment}}}:"
    return {name: base + name for name in ("pause", "tat", "learned", "sent", "seq", "holders")}


class RedisTenantBudget:
    """The tenant's pause, budget and learned rate in Redis; the per-task budget while Redis is down."""

    def __init__(
        self,
        client: redis.Redis | None,
        *,
        tenant_id: str,
        environment: str,
        cap: float | None,
        log: Any,
        store: str = "Redis",
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._secrets = secrets  # only to mask them, should an error message ever quote one
        self._keys = keys(tenant_id, environment)
        self._cap = cap
        self._log = log
        self._store = store  # host:port/db for the log; never the password
        self._lock = threading.Lock()
        self._down_until = 0.0 if client is not None else float("inf")
        self._warned = False
        self._learned = False  # the last acquire saw a learned rate: successes may raise it
        self._last_rate: float | None = None
        self._holder = uuid.uuid4().hex[:16]  # this budget among the holders; random, no secret
        self._holders = 1  # budgets that took a slot within HOLDER_WINDOW, as Redis last counted them
        self._answered = False  # Redis answered since the last failure: the next one is a new outage
        # Per thread: whether its last slot was Redis's (only such a slot can be lost with the store).
        self._slot_of = threading.local()
        # The last round trips (s) of the acquire script and the pause check: their quickest tells a
        # stalled Redis from a far one.
        self._round_trips: deque[float] = deque(maxlen=32)
        self._fallback: LocalTenantBudget | None = None
        # time.monotonic() after the last slot this task took in Redis: a switch to its own budget (and
        # back) starts after the slots it already holds, not beside them (a burst at each switch).
        self._reserved_until = 0.0
        # No client (a missing or malformed connection): no scripts, and _run() answers None, so every
        # call takes the per-task fallback.
        self._acquire: Any = client.register_script(ACQUIRE) if client is not None else None
        self._rate_limited: Any = client.register_script(RATE_LIMITED) if client is not None else None
        self._succeeded: Any = client.register_script(SUCCEEDED) if client is not None else None

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        tenant_id: str,
        environment: str,
        cap: float | None,
        log: Any,
        get_connection: Any,
    ) -> RedisTenantBudget:
        try:
            conn = get_connection(conn_id)
            client = client_for(conn)
            store = f"Redis connection {conn_id!r} ({conn.host or '127.0.0.1'}:{conn.port or 6379})"
        except Exception as exc:  # a missing or malformed connection: the run goes on per task
            budget = cls(None, tenant_id=tenant_id, environment=environment, cap=cap, log=log)
            budget._fall_back(f"connection {conn_id!r} cannot be used ({failure(exc)})")
            return budget
        return cls(
            client,
            tenant_id=tenant_id,
            environment=environment,
            cap=cap,
            log=log,
            store=store,
            secrets=tuple(
                secret
                for secret in (conn.password, extra_of(conn).get("ssl_password"))
                if isinstance(secret, str) and secret
            ),
        )

    # --- the store, or the fallback while it is down ------------------------------------------------

    def share(self) -> float | None:
        """This budget's part of the last rate Redis gave (requests/s): that rate divided by the budgets
        drawing on it then; None when Redis gave none (no cap and nothing learned, or never reached)."""
        with self._lock:
            return None if self._last_rate is None else self._last_rate / max(1, self._holders)

    def _fallback_cap(self, share: float | None) -> float | None:
        # The share is the cap of the fallback, not a rate it starts from: successes would raise a rate
        # to tenant_requests_per_second (every task at all of it again, after 10 to 60 minutes).
        if share is None:
            return self._cap
        return share if self._cap is None else min(share, self._cap)

    def _local(self) -> LocalTenantBudget:
        share = self.share()
        with self._lock:
            if self._fallback is None:
                self._fallback = LocalTenantBudget(self._fallback_cap(share))
            self._fallback.reserved_until(self._reserved_until)
            return self._fallback

    def _fall_back(self, reason: str) -> None:
        share = self.share()
        with self._lock:
            self._down_until = max(self._down_until, time.monotonic() + RETRY_STORE_AFTER)
            warn = not self._warned
            self._warned = True
            if self._answered and self._fallback is not None and share is not None:
                # A new outage: the fallback holds to this hook's share now, not the one of the last.
                self._fallback.limit_to(self._fallback_cap(share))
            self._answered = False
        if warn:
            # Once per task: the run goes on, and a flood of warnings helps no one.
            self._log.warning(
                "The shared rate budget's store cannot be reached (%s: %s); this task goes on with its "
                "own budget (%s) and tries the store again every %.0f s",
                self._store,
                reason,
                self._fallback_rate(share),
                RETRY_STORE_AFTER,
            )

    def _fallback_rate(self, share: float | None) -> str:
        if share is not None:
            return f"its share of the shared rate, {rate_text(share)} requests/s"
        if self._cap is not None:
            # Redis never gave this task a rate to share: it cannot know how many others draw on it.
            return f"tenant_requests_per_second, {self._cap:g} requests/s, for this task alone"
        return "no limit"

    def _store_up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A script's reply, or None when the store failed (then the fallback takes over)."""
        if script is None or not self._store_up():
            return None
        try:
            reply = script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            self._fall_back(failure(exc, *self._secrets))
            return None
        with self._lock:
            if self._store_up():  # not a reply that was in flight when an outage began
                self._answered = True
        return reply

    # --- TenantBudget ------------------------------------------------------------------------------

    def acquire(self, *, counted: bool) -> tuple[float, float]:
        return self._acquire_slot(counted=counted)

    def _acquire_slot(self, *, counted: bool, retake: bool = False) -> tuple[float, float]:
        k = self._keys
        started = time.monotonic()
        reply = self._run(
            self._acquire,
            [k[name] for name in ACQUIRE_KEYS],
            [
                self._cap or 0,
                1 if counted else 0,
                int(SENT_WINDOW * 1000),
                self._own_backlog_ms(),
                self._holder,
                int(HOLDER_WINDOW * 1000),
                1 if retake else 0,
            ],
        )
        if reply is None:
            return self._local_slot(counted=counted)
        with self._lock:  # the round trip that gave the slot: what a pause check after it is measured by
            self._round_trips.append(time.monotonic() - started)
        self._slot_of.redis = True
        self._slot_of.retaken = retake
        paused, wait, rate, learned, holders = (int(v) for v in reply)
        if not counted:
            return max(paused, 0) / 1000, 0.0
        # Paused or not, the reply tells the rate and the holders: what the fallback's share is.
        self._learned = bool(learned)
        with self._lock:
            self._holders = max(1, holders)
            if rate:
                self._last_rate = rate / 1000
        if paused > 0:
            return paused / 1000, 0.0
        if not rate:
            return 0.0, wait / 1000
        with self._lock:
            self._reserved_until = max(self._reserved_until, time.monotonic() + wait / 1000 + 1000 / rate)
        return 0.0, wait / 1000

    def _local_slot(self, *, counted: bool) -> tuple[float, float]:
        self._slot_of.redis = False
        return self._local().acquire(counted=counted)

    def _own_backlog_ms(self) -> int:
        """How far ahead (ms) the slots this task took on its own reach: back on Redis, its first slot
        there comes after them, so Redis's next free slot follows what the task really sends and a task
        starting now is not given slots this one is still using."""
        with self._lock:
            fallback = self._fallback
        if fallback is None:
            return 0
        return max(0, int((fallback.next_slot() - time.monotonic()) * 1000))

    def rate_limited(self, pause: float) -> None:
        k = self._keys
        reply = self._run(
            self._rate_limited,
            [k[name] for name in RATE_LIMITED_KEYS],
            [
                int(pause * 1000),
                self._cap or 0,
                DECREASE_FACTOR,
                MIN_RATE,
                MIN_SAMPLES,
                int(SENT_WINDOW * 1000),
                int(LEARNED_TTL * 1000),
                INCREASE_PER_MINUTE,
                self._holder,
                int(HOLDER_WINDOW * 1000),
            ],
        )
        if reply is None:
            self._local().rate_limited(pause)
            return
        cut, rate, holders = (int(v) for v in reply)
        with self._lock:
            self._holders = max(1, holders)
        if cut:
            self._last_rate = rate / 1000
            self._log.warning(
                "Kibo answered 429: every task of this tenant pauses %.0f s; the shared rate is now "
                "%.1f requests/s",
                pause,
                rate / 1000,
            )

    def succeeded(self) -> None:
        if not self._store_up():
            self._local().succeeded()
            return
        if not self._learned:
            return  # no learned rate: nothing to raise (the cap, or no limit, holds)
        reply = self._run(
            self._succeeded,
            [self._keys[name] for name in SUCCEEDED_KEYS],
            [self._cap or 0, int(LEARNED_TTL * 1000)],
        )
        if reply:
            self._last_rate = int(reply) / 1000

    def confirm_slot(self) -> tuple[float, float]:
        if not getattr(self._slot_of, "redis", False) or not self._store_up():
            # A slot of the fallback is never lost (re-taking it at each try of the store kept a request
            # that waits longer than RETRY_STORE_AFTER from ever going out); a Redis slot whose store
            # another thread found gone comes before the fallback's first one: it stands.
            return 0.0, 0.0
        started = time.monotonic()
        try:
            assert self._client is not None
            remaining = int(cast(Any, self._client.pttl(self._keys["pause"])))
        except (redis.RedisError, OSError) as exc:
            # The slot was Redis's and is past: sent now, beside the fallback's own, every waiting thread
            # of every task that lost Redis together would go out at once (seen: 16 in a quarter second
            # of 4 tasks at 10/s each). It takes a slot of the fallback instead.
            self._fall_back(failure(exc, *self._secrets))
            return self._local_slot(counted=True)
        took = time.monotonic() - started
        with self._lock:
            quickest = min(self._round_trips, default=took)
            self._round_trips.append(took)
        if remaining > 0:
            return remaining / 1000, 0.0
        if took > quickest + SLOW_CONFIRM and not getattr(self._slot_of, "retaken", False):
            # Redis stalled (under its timeout) while this thread checked: every thread whose slot fell
            # in the stall is answered now, and would go out with it (seen: 9 within 10 ms at 20/s). A
            # new slot (not counted again as sent), once per request: a Redis slow at every call must
            # not keep it from going out.
            return self._acquire_slot(counted=True, retake=True)
        return 0.0, 0.0

    def describe(self) -> str:
        if not self._store_up():
            return self._local().describe() + " (shared store unreachable)"
        rate = self._last_rate or self._cap
        return f"shared in {self._store}, {'no limit' if rate is None else f'{rate_text(rate)} requests/s'}"
