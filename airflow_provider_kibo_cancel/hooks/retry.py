"""The one retry policy every request of a KiboHook follows, its OAuth request included.

:class:`RetryPolicy` runs a call's attempts: it waits its turn at the :class:`~.policy.Gate` (429 pause,
rate cap, stop), sends, and asks :func:`~.decision.decide` what the attempt's result means: return the
answer to the caller, retry after a backoff (every thread pausing for a 429), or fail. What the attempts
did is kept in an immutable :class:`~.decision.CallRecord`, returned with the answer and carried by every
error, so callers decide from it (read the order back, count the order as not attempted) instead of from
a mutated exception.
Each route (OAuth, cancel, Get Order) has its own :class:`~.policy.CircuitBreaker`: Kibo's failures and
limits are per route, and a Get Order that answers says nothing of a cancel route that is down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests

from airflow_provider_kibo_cancel import metrics
from airflow_provider_kibo_cancel.exceptions import (
    KiboCircuitOpenError,
    KiboError,
    KiboRateLimitWaitError,
    KiboStoppedError,
    KiboTLSError,
    KiboTransportError,
)
from airflow_provider_kibo_cancel.hooks.decision import Answer, CallRecord, Decision, RetryLimits, decide
from airflow_provider_kibo_cancel.hooks.policy import (
    MIN_RETRY_WAIT,
    CircuitBreaker,
    Gate,
    HookStopped,
    PausedTooLong,
    TransportFailure,
    classify,
    retry_after_seconds,
)
from airflow_provider_kibo_cancel.hooks.tenant_budget import TenantBudget
from airflow_provider_kibo_cancel.hooks.transport import stopped_while_connecting


class _Log(Protocol):
    """The hook's logger (stdlib's or the Task SDK's), so retries show up under the hook's name."""

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


class RetryPolicy:
    """
    Attempts, backoff, 429 pauses and the circuit breakers for one hook, shared by all its threads.

    The limits come with each call rather than at construction: the hook reads its connection lazily,
    and :meth:`Gate.stop` must work before (or without) a connection.
    """

    def __init__(self, log: _Log, *, requests_per_second: float | None = None) -> None:
        self._log = log
        self.gate = Gate(requests_per_second)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()

    def breaker(self, route: str) -> CircuitBreaker:
        """The circuit breaker of one route (``oauth``, ``cancel``, ``get_order``)."""
        with self._breakers_lock:
            return self._breakers.setdefault(route, CircuitBreaker())

    def circuit_open(self, *routes: str) -> bool:
        return any(self.breaker(route).is_open for route in routes)

    def run(
        self,
        send: Callable[[], requests.Response],
        *,
        limits: RetryLimits,
        what: str,
        route: str,
        order_id: int | None,
        max_attempts: int | None = None,
    ) -> Answer:
        """
        Apply the retry policy to one request. Returns Kibo's final answer with the call's record, or
        raises a complete :class:`KiboError` carrying that record: transport failures after every
        attempt, or a refusal before anything more was sent (stopped, circuit open, a wait too long).
        """
        attempts = max_attempts or limits.max_attempts
        for_order = f" for order {order_id}" if order_id else ""
        breaker = self.breaker(route)
        record = CallRecord()
        probe = self._admit(breaker, what, for_order, order_id)
        started = time.monotonic()
        try:
            while True:
                if record.attempts and not probe and breaker.is_open:
                    raise self._circuit_open_error(breaker, what, for_order, order_id, record)
                rate_probe, response, failure = self._attempt(
                    send, limits, what, for_order, order_id, record, route=route
                )
                try:
                    record, decision = self._judge(response, failure, record, attempts, limits)
                    problem = _problem(response, failure)
                    _tell_breaker(breaker, response, failure, decision, f"{what}: {problem}", started)
                    if decision.pause_all or decision.long_pause is not None:
                        self.gate.pause(decision.long_pause or decision.delay)
                    _tell_budget(limits.budget, response, decision, route)
                finally:
                    # After the pause is set: the threads waiting for the probe must see it.
                    if rate_probe:
                        self.gate.end_probe(rate_limited=response is not None and response.status_code == 429)
                if decision.action == "answer":
                    assert response is not None
                    return Answer(response, record)
                if decision.action == "fail":
                    assert failure is not None
                    raise _transport_error(what, failure, record, attempts, order_id)
                if failure:
                    metrics.retry("transport")
                elif response is not None:
                    metrics.retry_status(response.status_code)
                self._log.warning(
                    "%s%s: %s on attempt %d of %d; retrying in %.1f s",
                    what,
                    for_order,
                    problem,
                    record.attempts,
                    attempts,
                    decision.delay,
                )
                if not decision.pause_all:
                    self.gate.sleep(decision.delay)
        except HookStopped:
            happened = "stopped before its next attempt" if record.sent else "not sent"
            raise KiboStoppedError(
                f"{what} {happened}: the run was stopped (task timeout, kill or interrupt)",
                order_id=order_id,
                sent=record.sent,
                may_have_applied=record.may_have_applied,
            ) from None
        finally:
            if probe:
                breaker.end_probe()  # a probe that settled nothing must not block later ones

    def _attempt(  # noqa: PLR0917
        self,
        send: Callable[[], requests.Response],
        limits: RetryLimits,
        what: str,
        for_order: str,
        order_id: int | None,
        record: CallRecord,
        *,
        route: str = "",
    ) -> tuple[bool, requests.Response | None, TransportFailure | None]:
        """
        One attempt after its turn at the gate: whether it is the probe after a 429 pause (the caller
        then ends the probe), and Kibo's answer or what the transport failure means.
        """
        rate_probe = self._wait_for_turn(limits, what, for_order, order_id, record, route=route)
        try:
            return rate_probe, send(), None
        except requests.RequestException as exc:
            if not stopped_while_connecting(exc):
                return rate_probe, None, classify(exc)
            if rate_probe:
                self.gate.end_probe(rate_limited=False)
            raise HookStopped from None
        except BaseException:
            if rate_probe:
                self.gate.end_probe(rate_limited=False)
            raise

    @staticmethod
    def _judge(
        response: requests.Response | None,
        failure: TransportFailure | None,
        record: CallRecord,
        attempts: int,
        limits: RetryLimits,
    ) -> tuple[CallRecord, Decision]:
        """The call's record after this attempt, and what :func:`decide` makes of it."""
        retry_after = None
        if failure is not None:
            record = record.after(reached_kibo=failure.reached_kibo)
        else:
            assert response is not None
            record = record.after(reached_kibo=response.status_code >= 500)
            if response.status_code == 429:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        decision = decide(
            response,
            failure,
            attempt=record.attempts,
            attempts=attempts,
            limits=limits,
            retry_after=retry_after,
        )
        return record, decision

    def _admit(self, breaker: CircuitBreaker, what: str, for_order: str, order_id: int | None) -> bool:
        """Check the circuit before a call; True when this call is the probe after a cool-down."""
        if self.gate.stopped:
            raise KiboStoppedError(
                f"{what} not sent: the run was stopped (task timeout, kill or interrupt)",
                order_id=order_id,
                sent=False,
            )
        was_open = breaker.is_open
        if not breaker.allow():
            raise self._circuit_open_error(breaker, what, for_order, order_id, CallRecord())
        return was_open

    @staticmethod
    def _circuit_open_error(
        breaker: CircuitBreaker, what: str, for_order: str, order_id: int | None, record: CallRecord
    ) -> KiboCircuitOpenError:
        return KiboCircuitOpenError(
            f"{what}{for_order} not sent: Kibo looks down (every request failed for a whole retry "
            f"schedule; last: {breaker.reason})",
            order_id=order_id,
            sent=record.sent,
            may_have_applied=record.may_have_applied,
        )

    def _wait_for_turn(
        self,
        limits: RetryLimits,
        what: str,
        for_order: str,
        order_id: int | None,
        record: CallRecord,
        *,
        route: str = "",
    ) -> bool:
        """
        Wait out a 429 pause, the rate cap and the tenant's budget; refuse when Kibo asked for more than
        max_retry_wait. True when this request is the probe after a 429 pause.
        """
        longest_sleep = limits.longest_sleep
        try:
            while True:
                probe = self.gate.wait(max_pause=longest_sleep)
                if limits.budget is None:
                    return probe
                try:
                    paused = self._take_budget(limits.budget, counted=route != "oauth")
                except BaseException:
                    if probe:
                        self.gate.end_probe(rate_limited=False)
                    raise
                if not paused:
                    return probe
                # The tenant is paused (another task met a 429): so is every thread of this hook, and
                # a pause longer than this task may sleep is refused as if this task had met it.
                if probe:
                    self.gate.end_probe(rate_limited=True)
                self.gate.pause(paused)
        except PausedTooLong as too_long:
            remaining = too_long.remaining
            raise KiboRateLimitWaitError(
                f"{what}{for_order} not sent: Kibo asked to wait {remaining:.0f} s (Retry-After), longer "
                f"than this task may sleep ({longest_sleep:g} s); it accepts calls again at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(time.time() + remaining))}",
                retry_after=remaining,
                resume_at=time.time() + remaining,
                order_id=order_id,
                sent=record.sent,
                may_have_applied=record.may_have_applied,
            ) from None

    def _take_budget(self, budget: TenantBudget, *, counted: bool) -> float:
        """A slot of the tenant's budget, slept up to; or the seconds the tenant stays paused."""
        paused, wait = budget.acquire(counted=counted)
        while paused <= 0 < wait:
            self.gate.sleep(wait)
            # A 429 (here or in another task) while this thread waited for its slot: wait that pause
            # out; a slot lost with the shared store: wait for the next one.
            paused, wait = budget.confirm_slot()
            paused = max(paused, self.gate.paused_for())
        return max(paused, 0.0)


def _tell_budget(
    budget: TenantBudget | None, response: requests.Response | None, decision: Decision, route: str
) -> None:
    """The tenant's budget learns from each answer: a 429 pauses every task and cuts the rate. The OAuth
    host is not the tenant's API: its answers (a 429 too; this hook's own gate still pauses for it) say
    nothing of the tenant's limit."""
    if budget is None or response is None or route == "oauth":
        return
    if response.status_code == 429:
        budget.rate_limited(decision.long_pause or decision.delay or MIN_RETRY_WAIT)
    elif response.status_code < 500:
        budget.succeeded()


def _problem(response: requests.Response | None, failure: TransportFailure | None) -> str:
    if failure is not None:
        return failure.description
    return f"HTTP {response.status_code}" if response is not None else "no answer"


def _tell_breaker(  # noqa: PLR0917 - one call site, every argument named there by position
    breaker: CircuitBreaker,
    response: requests.Response | None,
    failure: TransportFailure | None,
    decision: Decision,
    problem: str,
    started: float,
) -> None:
    """Any answer below 500 shows the route is up; a call that failed every attempt counts against it."""
    if response is not None and response.status_code < 500:
        breaker.record_answer()
    elif decision.action != "retry" and (failure is None or not failure.permanent):
        breaker.record_exhausted(started, problem)


def _transport_error(
    what: str, failure: TransportFailure, record: CallRecord, attempts: int, order_id: int | None
) -> KiboError:
    """The error a call ends with when its last (or a permanent) transport failure is final."""
    context: dict[str, Any] = {
        "order_id": order_id,
        "sent": record.sent,
        "may_have_applied": record.may_have_applied,
    }
    if not failure.permanent:
        return KiboTransportError(
            f"{what} failed after {attempts} attempt(s): {failure.description}", **context
        )
    if failure.description.startswith("TLS error"):
        return KiboTLSError(
            f"{what} failed: {failure.description}. The server's certificate is not trusted: point "
            "REQUESTS_CA_BUNDLE at your CA bundle (a corporate proxy's CA, say) or fix the host name",
            **context,
        )
    return KiboTransportError(f"{what} failed: {failure.description}", retryable=False, **context)
