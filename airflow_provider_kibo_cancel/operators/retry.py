"""The Kibo retry policy both operators come with on Airflow 3.3+ (task ``retry_policy``, AIP-105).

Airflow asks a task's ``retry_policy`` (in the worker, with the exception) whether and when to retry:

- Kibo's rate limit stopped the task (a 429 whose ``Retry-After`` is longer than the task may sleep): retry
  when Kibo accepts calls again, not after the task's ``retry_delay``; a wait longer than the operator's
  ``max_deferred_wait`` is left to the task's own settings;
- an error a retry cannot mend (input, 400/403/404, refused credentials, configuration): fail now;
- anything else: the task's ``retries`` and ``retry_delay``, as without a policy.

A policy given by the user (``retry_policy=``, or in ``default_args``) is kept as it is. Before Airflow 3.3
there are no retry policies and nothing is attached. ``airflow.sdk``'s retry policy classes are imported
only when an operator is built on 3.3+, so importing the operator modules stays cheap.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from functools import cache
from typing import Any

from airflow_provider_kibo_cancel.exceptions import KiboError

#: Seconds added to Kibo's Retry-After before the retry, so it does not arrive a moment early.
RETRY_MARGIN = 2.0


def rate_limit_wait(exc: BaseException) -> float | None:
    """Seconds until Kibo accepts calls again, when Kibo's rate limit is what stopped the task."""
    resume_at = getattr(exc, "resume_at", None)
    if isinstance(resume_at, int | float):
        return max(0.0, resume_at - time.time())
    if getattr(exc, "rate_limited", False):
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return max(0.0, float(retry_after))
    return None


def kibo_error_of(exc: BaseException | None) -> Any:
    """The KiboError behind ``exc`` (itself, or what it wraps), or None."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, KiboError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@cache
def _policy_class() -> type[Any] | None:
    try:
        # Airflow 3.3+ only, and the class must exist on older ones too: imported when first asked for.
        from airflow.sdk import RetryDecision, RetryPolicy  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415
    except ImportError:  # Airflow before 3.3: no retry policies
        return None

    class KiboRetryPolicy(RetryPolicy):  # type: ignore[misc,valid-type,unused-ignore]
        """Retry when Kibo accepts calls again; fail errors a retry cannot mend; else the task's settings."""

        def __init__(self, max_deferred_wait: float = 3600.0) -> None:
            self.max_deferred_wait = max_deferred_wait

        def __repr__(self) -> str:
            return f"KiboRetryPolicy(max_deferred_wait={self.max_deferred_wait!r})"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, type(self)) and other.max_deferred_wait == self.max_deferred_wait

        def __hash__(self) -> int:
            return hash(self.max_deferred_wait)

        def evaluate(
            self, exception: BaseException, try_number: int, max_tries: int, context: Any = None
        ) -> Any:
            exc = kibo_error_of(exception)
            if exc is None:
                return RetryDecision.default()
            wait = rate_limit_wait(exc)
            if wait is not None:
                if wait > self.max_deferred_wait:
                    return RetryDecision.default()
                delay = math.ceil(wait + RETRY_MARGIN)
                return RetryDecision.retry(
                    delay=timedelta(seconds=delay),
                    reason=f"Kibo rate limit: Kibo accepts calls again in {wait:.0f} s (Retry-After); "
                    f"retrying in {delay} s",
                )
            if not exc.retryable:
                return RetryDecision.fail(
                    reason=f"{type(exc).__name__}: a Kibo error a retry cannot mend (input, 400/403/404, "
                    "credentials or configuration)"
                )
            return RetryDecision.default()

        def serialize(self) -> dict[str, Any]:
            return {"__type": "KiboRetryPolicy", "max_deferred_wait": self.max_deferred_wait}

        @classmethod
        def deserialize(cls, data: dict[str, Any]) -> KiboRetryPolicy:
            return cls(float(data.get("max_deferred_wait", 3600.0)))

    KiboRetryPolicy.__module__ = __name__
    KiboRetryPolicy.__qualname__ = "KiboRetryPolicy"
    return KiboRetryPolicy


def kibo_retry_policy(max_deferred_wait: float = 3600.0) -> Any:
    """A new Kibo retry policy on Airflow 3.3+, None before."""
    cls = _policy_class()
    if cls is None:
        return None
    wait = max_deferred_wait if isinstance(max_deferred_wait, int | float) else 3600.0
    return cls(float(wait))


def is_kibo_retry_policy(policy: Any) -> bool:
    """Whether ``policy`` is the Kibo retry policy (it then fails permanent errors itself)."""
    cls = _policy_class()
    return cls is not None and isinstance(policy, cls)


def with_kibo_retry_policy(kwargs: dict[str, Any], max_deferred_wait: Any) -> None:
    """
    Give an operator's ``kwargs`` the Kibo retry policy unless the user chose one (or default_args do).
    ``None`` is no choice: ``partial()`` fills it from Airflow's operator defaults, and a mapped task is
    built from those at run time.
    """
    if kwargs.get("retry_policy") is not None or (kwargs.get("default_args") or {}).get("retry_policy"):
        return
    policy = kibo_retry_policy(max_deferred_wait)
    if policy is not None:
        kwargs["retry_policy"] = policy


def __getattr__(name: str) -> Any:
    """``KiboRetryPolicy`` itself, on Airflow 3.3+ (to subclass, or to name in ``default_args``)."""
    if name == "KiboRetryPolicy":
        cls = _policy_class()
        if cls is not None:
            return cls
    raise AttributeError(name)
