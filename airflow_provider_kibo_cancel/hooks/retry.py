"""The one retry policy every request of a KiboHook follows, its OAuth request included.

:class:`RetryPolicy` runs a request's attempts: it waits its turn at the :class:`~.policy.Gate` (429 pause,
rate cap, stop), sorts each failure (:func:`~.policy.classify`), backs off, and tells the
:class:`~.policy.CircuitBreaker` what it saw. The hook builds one per hook, so every thread shares it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
from airflow_provider_kibo_cancel.hooks.policy import (
    MIN_RETRY_WAIT,
    RETRYABLE_STATUSES,
    CircuitBreaker,
    Gate,
    HookStopped,
    PausedTooLong,
    TransportFailure,
    backoff,
    classify,
    retry_after_seconds,
)


class _Log(Protocol):
    """The hook's logger (stdlib's or the Task SDK's), so retries show up under the hook's name."""

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class RetryLimits:
    """The connection's retry settings, read once the hook has its connection."""

    max_attempts: int
    backoff_base: float
    max_retry_wait: float
    longest_sleep: float  # the longest Retry-After slept through; a longer one fails the call at once


class RetryPolicy:
    """
    Attempts, backoff, 429 pauses and the circuit breaker for one hook, shared by all its threads.

    The limits come with each call rather than at construction: the hook reads its connection lazily,
    and :meth:`Gate.stop` must work before (or without) a connection.
    """

    def __init__(self, log: _Log, *, requests_per_second: float | None = None) -> None:
        self._log = log
        self.gate = Gate(requests_per_second)
        self.breaker = CircuitBreaker()

    def run(
        self,
        send: Callable[[], requests.Response],
        *,
        limits: RetryLimits,
        what: str,
        order_id: int | None,
        max_attempts: int | None = None,
    ) -> tuple[requests.Response, bool]:
        """
        Apply the retry policy to one request.

        Returns the last response (any status that is not retried, or the last retried one) and whether
        an attempt may have reached Kibo and been applied (it timed out, lost its answer or got a 5xx).
        Raises a :class:`KiboPreflightError` (``sent`` False) when nothing was sent: the hook was stopped,
        the circuit is open, or Kibo asked to wait longer than ``max_retry_wait``.
        """
        attempts = max_attempts or limits.max_attempts
        for_order = f" for order {order_id}" if order_id else ""
        may_have_applied = False
        sent = False
        probe = self._admit(what, for_order, order_id)
        started = time.monotonic()
        try:
            for attempt in range(1, attempts + 1):
                if attempt > 1 and not probe and self.breaker.is_open:
                    raise self._circuit_open_error(what, for_order, order_id)
                self._wait_for_turn(limits.longest_sleep, what, for_order, order_id)
                sent = True
                retry_after: float | None = None
                try:
                    response = send()
                except requests.RequestException as exc:
                    failure = classify(exc)
                    may_have_applied = may_have_applied or failure.reached_kibo
                    self._raise_if_final(failure, attempt, attempts, started=started, what=what)
                    problem = failure.description
                    metrics.retry("transport")
                else:
                    may_have_applied = may_have_applied or response.status_code >= 500
                    if response.status_code == 429:
                        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                    last = attempt == attempts
                    if self._final_answer(
                        response, limits, retry_after, last=last, started=started, what=what
                    ):
                        return response, may_have_applied
                    problem = f"HTTP {response.status_code}"
                    metrics.retry_status(response.status_code)
                delay = _backoff(limits, attempt, retry_after)
                self._log.warning(
                    "%s%s: %s on attempt %d of %d; retrying in %.1f s",
                    what,
                    for_order,
                    problem,
                    attempt,
                    attempts,
                    delay,
                )
                if retry_after is not None:
                    self.gate.pause(delay)  # every thread of this hook waits, not just this one
                else:
                    self.gate.sleep(delay)
        except HookStopped:
            stopped = KiboStoppedError(
                f"{what} not sent: the run was stopped (task timeout, kill or interrupt)", order_id=order_id
            )
            stopped.sent, stopped.may_have_applied = sent, may_have_applied
            raise stopped from None
        except KiboError as exc:
            exc.sent = exc.sent or sent
            exc.may_have_applied = exc.may_have_applied or may_have_applied
            raise
        finally:
            if probe:
                self.breaker.end_probe()  # a probe that settled nothing must not block later ones
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_if_final(
        self, failure: TransportFailure, attempt: int, attempts: int, *, started: float, what: str
    ) -> None:
        """A transport failure ends the call when it is permanent or the attempts are used up."""
        if failure.permanent:
            raise _permanent_transport_error(what, failure.description)
        if attempt == attempts:
            self.breaker.record_exhausted(started, f"{what}: {failure.description}")
            raise KiboTransportError(f"{what} failed after {attempts} attempt(s): {failure.description}")

    def _final_answer(
        self,
        response: requests.Response,
        limits: RetryLimits,
        retry_after: float | None,
        *,
        last: bool,
        started: float,
        what: str,
    ) -> bool:
        """
        Whether this answer ends the call (returned to the caller) rather than being retried;
        ``retry_after`` is a 429's Retry-After in seconds, as parsed once by the caller.
        """
        status = response.status_code
        if status < 500:
            self.breaker.record_answer()  # Kibo is up, whatever it said
        if status not in RETRYABLE_STATUSES:
            return True
        if status == 429 and retry_after is not None and retry_after > limits.longest_sleep:
            # Longer than anyone may sleep: every thread stops sending until then (last attempt too).
            self.gate.pause(retry_after)
            return True
        if last:
            if status >= 500:
                self.breaker.record_exhausted(started, f"{what}: HTTP {status}")
            return True
        return False

    def _admit(self, what: str, for_order: str, order_id: int | None) -> bool:
        """Check the circuit before a call; True when this call is the probe after a cool-down."""
        if self.gate.stopped:
            raise KiboStoppedError(
                f"{what} not sent: the run was stopped (task timeout, kill or interrupt)", order_id=order_id
            )
        was_open = self.breaker.is_open
        if not self.breaker.allow():
            raise self._circuit_open_error(what, for_order, order_id)
        return was_open

    def _circuit_open_error(self, what: str, for_order: str, order_id: int | None) -> KiboCircuitOpenError:
        return KiboCircuitOpenError(
            f"{what}{for_order} not sent: Kibo looks down (every request failed for a whole retry "
            f"schedule; last: {self.breaker.reason})",
            order_id=order_id,
        )

    def _wait_for_turn(self, longest_sleep: float, what: str, for_order: str, order_id: int | None) -> None:
        """Wait out a 429 pause and the rate cap; refuse when Kibo asked for more than max_retry_wait."""
        try:
            self.gate.wait(max_pause=longest_sleep)
        except PausedTooLong as too_long:
            remaining = too_long.remaining
            raise KiboRateLimitWaitError(
                f"{what}{for_order} not sent: Kibo asked to wait {remaining:.0f} s (Retry-After), longer "
                f"than this task may sleep ({longest_sleep:g} s); it accepts calls again at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(time.time() + remaining))}",
                retry_after=remaining,
                resume_at=time.time() + remaining,
                order_id=order_id,
            ) from None


def _backoff(limits: RetryLimits, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return max(MIN_RETRY_WAIT, min(retry_after, limits.max_retry_wait))
    return backoff(attempt, limits.backoff_base, limits.max_retry_wait)


def _permanent_transport_error(what: str, description: str) -> KiboError:
    if description.startswith("TLS error"):
        return KiboTLSError(
            f"{what} failed: {description}. The server's certificate is not trusted: point "
            "REQUESTS_CA_BUNDLE at your CA bundle (a corporate proxy's CA, say) or fix the host name",
        )
    error = KiboTransportError(f"{what} failed: {description}")
    error.retryable = False
    return error
