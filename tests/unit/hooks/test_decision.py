"""hooks/decision.py: the one retry decision (``decide``) for each kind of attempt, and the immutable
record of a call's attempts."""

from __future__ import annotations

import dataclasses

import pytest
import requests

from airflow_provider_kibo_cancel.hooks.decision import CallRecord, RetryLimits, decide
from airflow_provider_kibo_cancel.hooks.policy import MIN_RETRY_WAIT, TransportFailure

LIMITS = RetryLimits(max_attempts=3, backoff_base=0.4, max_retry_wait=5.0, longest_sleep=30.0)
LOST = TransportFailure(reached_kibo=True, permanent=False, description="ReadTimeout")
PERMANENT = TransportFailure(reached_kibo=False, permanent=True, description="TLS error")


def answer(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


def decided(
    status: int | None = None,
    failure: TransportFailure | None = None,
    *,
    attempt: int = 1,
    retry_after: float | None = None,
) -> tuple[str, float, bool, float | None]:
    decision = decide(
        answer(status) if status is not None else None,
        failure,
        attempt=attempt,
        attempts=LIMITS.max_attempts,
        limits=LIMITS,
        retry_after=retry_after,
    )
    return decision.action, decision.delay, decision.pause_all, decision.long_pause


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409])
def test_an_answer_that_is_not_retryable_is_returned_at_once(status: int) -> None:
    assert decided(status) == ("answer", 0.0, False, None)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_retried_with_a_backoff_until_the_last_attempt(status: int) -> None:
    action, delay, pause_all, _ = decided(status)
    assert action == "retry" and not pause_all
    assert MIN_RETRY_WAIT <= delay <= LIMITS.backoff_base
    assert decided(status, attempt=3)[0] == "answer"  # the last attempt's answer is the call's


def test_a_429_pauses_every_thread_for_its_retry_after_even_on_the_last_attempt() -> None:
    assert decided(429, retry_after=2.0) == ("retry", 2.0, True, None)
    assert decided(429, retry_after=2.0, attempt=3) == ("answer", 2.0, True, None)
    assert decided(429, retry_after=0.0)[1] == MIN_RETRY_WAIT  # never below the floor
    assert decided(429, retry_after=20.0)[1] == LIMITS.max_retry_wait  # capped at max_retry_wait


def test_a_429_without_retry_after_pauses_every_thread_for_the_backoff() -> None:
    action, delay, pause_all, _ = decided(429)
    assert (action, pause_all) == ("retry", True)
    assert MIN_RETRY_WAIT <= delay <= LIMITS.backoff_base


def test_a_429_longer_than_anyone_may_sleep_is_answered_with_a_long_pause() -> None:
    assert decided(429, retry_after=60.0) == ("answer", 0.0, False, 60.0)


def test_a_transport_failure_is_retried_unless_permanent_or_the_last() -> None:
    action, delay, _, _ = decided(failure=LOST)
    assert action == "retry" and delay >= MIN_RETRY_WAIT
    assert decided(failure=LOST, attempt=3)[0] == "fail"
    assert decided(failure=PERMANENT)[0] == "fail"


def test_a_call_record_is_never_changed_only_followed() -> None:
    start = CallRecord()
    sent = start.after(reached_kibo=False)
    lost = sent.after(reached_kibo=True)
    assert start == CallRecord(attempts=0, sent=False, may_have_applied=False)
    assert (sent.attempts, sent.sent, sent.may_have_applied) == (1, True, False)
    assert (lost.attempts, lost.may_have_applied) == (2, True)
    assert lost.after(reached_kibo=False).may_have_applied  # once it may have applied, it stays so
    merged = sent.merged(CallRecord().after(reached_kibo=True))
    assert (merged.attempts, merged.sent, merged.may_have_applied) == (2, True, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        start.attempts = 1  # type: ignore[misc]
