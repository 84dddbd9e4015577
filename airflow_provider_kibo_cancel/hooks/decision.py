"""What one attempt's result means for a call: the retry decision, apart from the machinery that acts on it.

:func:`decide` is the whole decision (answer, retry after a delay, or fail) for one attempt, and
:class:`CallRecord` the immutable record of what a call's attempts did. Both are pure (no I/O, no waiting,
no shared state), so each rule is tested on its own. :class:`~.retry.RetryPolicy` runs the attempts,
waits, pauses and tells the circuit breakers and the tenant's budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import requests

from airflow_provider_kibo_cancel.hooks.policy import (
    MIN_RETRY_WAIT,
    RETRYABLE_STATUSES,
    TransportFailure,
    backoff,
)
from airflow_provider_kibo_cancel.hooks.tenant_budget import TenantBudget


@dataclass(frozen=True)
class RetryLimits:
    """The connection's retry settings, read once the hook has its connection."""

    max_attempts: int
    backoff_base: float
    max_retry_wait: float
    longest_sleep: float  # the longest Retry-After slept through; a longer one fails the call at once
    #: The tenant's budget (shared pause, rate, learning; hooks/tenant_budget.py); None: the Gate alone.
    budget: TenantBudget | None = None


@dataclass(frozen=True)
class CallRecord:
    """
    What the attempts of one call did. Immutable: each attempt makes a new record (urllib3's ``Retry``
    idea), so a record handed to a caller or carried by an error never changes under it.
    """

    attempts: int = 0
    #: A request of this call left this machine (an attempt was made).
    sent: bool = False
    #: An attempt may have reached Kibo and been applied, its answer lost or unreadable (a read timeout,
    #: a connection dropped mid-answer, a 5xx, a 2xx whose body is not what Kibo documents).
    may_have_applied: bool = False

    def after(self, *, reached_kibo: bool) -> CallRecord:
        """This record after one more attempt, which may have ``reached_kibo`` and been applied."""
        return CallRecord(
            attempts=self.attempts + 1,
            sent=True,
            may_have_applied=self.may_have_applied or reached_kibo,
        )

    def merged(self, later: CallRecord) -> CallRecord:
        """This record followed by a later run of the same call (after a token refresh)."""
        return CallRecord(
            attempts=self.attempts + later.attempts,
            sent=self.sent or later.sent,
            may_have_applied=self.may_have_applied or later.may_have_applied,
        )


@dataclass(frozen=True)
class Answer:
    """Kibo's final answer to a call (any status the policy does not retry), and what the call did."""

    response: requests.Response
    record: CallRecord


@dataclass(frozen=True)
class Decision:
    """What one attempt's result means for the call."""

    action: Literal["answer", "retry", "fail"]
    delay: float = 0.0
    #: Every thread of the hook waits ``delay`` (a 429), not only this one.
    pause_all: bool = False
    #: With ``answer``: a 429 asking for more than anyone may sleep; every thread stops until then.
    long_pause: float | None = None


def decide(
    response: requests.Response | None,
    failure: TransportFailure | None,
    *,
    attempt: int,
    attempts: int,
    limits: RetryLimits,
    retry_after: float | None,
) -> Decision:
    """
    The whole retry decision for one attempt, in the spirit of stripe's ``_should_retry``. A transport
    failure is retried unless it is permanent or the attempts are used up; an answer is returned unless
    its status is retryable (429, 5xx) and attempts remain. Every 429 pauses every thread (for its
    Retry-After, or the backoff when it gives none), on the last attempt too.
    """
    last = attempt >= attempts
    if failure is not None:
        if failure.permanent or last:
            return Decision("fail")
        return Decision("retry", backoff(attempt, limits.backoff_base, limits.max_retry_wait))
    assert response is not None
    status = response.status_code
    if status not in RETRYABLE_STATUSES:
        return Decision("answer")
    if status == 429:
        if retry_after is not None and retry_after > limits.longest_sleep:
            return Decision("answer", long_pause=retry_after)
        delay = _wait(limits, attempt, retry_after)
        return Decision("answer" if last else "retry", delay, pause_all=True)
    if last:
        return Decision("answer")
    return Decision("retry", backoff(attempt, limits.backoff_base, limits.max_retry_wait))


def _wait(limits: RetryLimits, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return max(MIN_RETRY_WAIT, min(retry_after, limits.max_retry_wait))
    return backoff(attempt, limits.backoff_base, limits.max_retry_wait)
