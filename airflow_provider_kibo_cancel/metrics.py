"""The provider's metrics, sent through Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as configured).

Every name is listed in ``METRICS`` and in the README. A metric that cannot be sent never fails a task:
each function here swallows every error and logs it at debug level. Airflow's ``Stats`` is imported on
the first metric sent, not when this module is imported, so importing the hook stays cheap; the
operator modules import this module only inside ``execute()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_kibo_cancel.exceptions import KiboConfigurationError, KiboValidationError
from airflow_provider_kibo_cancel.routes import ROUTES, route_of

log = logging.getLogger(__name__)

PREFIX = "kibo"
OUTCOMES = ("canceled", "already_canceled", "failed", "invalid", "not_attempted")
RETRY_CAUSES = ("429", "5xx", "transport")
ENDPOINTS = (*(route.name for route in ROUTES), "other")

# Name -> (type, meaning), the list the README documents; tests/integration/test_signals.py checks that
# every metric a real Airflow run sends over StatsD is one of these.
METRICS: dict[str, tuple[str, str]] = {
    **{
        f"{PREFIX}.cancel.{outcome}": ("counter", f"orders whose cancel ended as {outcome}")
        for outcome in OUTCOMES
    },
    **{
        f"{PREFIX}.http.retry.{cause}": ("counter", f"HTTP retries caused by {cause}")
        for cause in RETRY_CAUSES
    },
    f"{PREFIX}.oauth.token_fetch": ("counter", "OAuth token requests made (a failing one included)"),
    f"{PREFIX}.deferral": ("counter", "times a task deferred instead of waiting in the worker"),
    **{
        f"{PREFIX}.http.duration.{endpoint}": ("timer", f"duration of one HTTP request to {endpoint}, ms")
        for endpoint in ENDPOINTS
    },
}


@cache
def _get_stats() -> Any:
    """Airflow's Stats, wherever this Airflow keeps it (3.2+ in the Task SDK, 3.0/3.1 in airflow.stats)."""
    # On the first metric, not at import: Stats lives where this Airflow keeps it, and loading it is
    # not cheap (the hook imports this module).
    try:
        from airflow.sdk.observability.stats import Stats  # noqa: PLC0415
    except ImportError:  # Airflow 3.0/3.1
        from airflow.stats import Stats  # type: ignore[no-redef,attr-defined,unused-ignore]  # noqa: PLC0415
    return Stats


def _incr(name: str, count: int = 1) -> None:
    if count <= 0:
        return
    try:
        _get_stats().incr(name, count)
    except Exception as exc:  # a metric must never fail a task
        log.debug("Metric %s not sent: %s", name, exc)


def cancel_outcome(outcome: str, count: int = 1) -> None:
    """Count ``count`` orders whose cancel ended as ``outcome`` (one of ``OUTCOMES``)."""
    _incr(f"{PREFIX}.cancel.{outcome}", count)


def cancel_outcomes(summary: Mapping[str, Any]) -> None:
    """Count every bucket of a bulk summary that is an outcome (``not_attempted`` once it exists)."""
    try:
        for outcome in OUTCOMES:
            if isinstance(summary.get(outcome), list):
                cancel_outcome(outcome, len(summary[outcome]))
    except Exception as exc:
        log.debug("Cancel outcome metrics not sent: %s", exc)


def cancel_error(exc: BaseException) -> None:
    """Count a single cancel that ended in ``exc``: ``invalid`` input or ``failed``.

    A broken connection or mismatched outlet fails the task before any order is considered, in bulk
    runs too, so it counts as no outcome at all.
    """
    if isinstance(exc, KiboValidationError):
        cancel_outcome("invalid")
    elif not isinstance(exc, KiboConfigurationError):
        cancel_outcome("failed")


def retry(cause: str) -> None:
    """Count one HTTP retry; ``cause`` is ``429``, ``5xx`` or ``transport``."""
    _incr(f"{PREFIX}.http.retry.{cause}")


def retry_status(status: int) -> None:
    """Count one HTTP retry caused by this status (429, or 5xx for any server error)."""
    retry("429" if status == 429 else "5xx")


def token_fetch() -> None:
    _incr(f"{PREFIX}.oauth.token_fetch")


def deferral() -> None:
    _incr(f"{PREFIX}.deferral")


def endpoint_of(method: str, path: str) -> str:
    """The route a request path belongs to, so request durations are grouped by what was called."""
    return route_of(method, path)


def request_duration(method: str, url_or_path: str, elapsed: timedelta | float) -> None:
    """Time one HTTP request; ``elapsed`` a timedelta (``response.elapsed``) or seconds."""
    try:
        path = urlsplit(url_or_path).path if "://" in url_or_path else url_or_path
        name = f"{PREFIX}.http.duration.{endpoint_of(method, path)}"
        delta = elapsed if isinstance(elapsed, timedelta) else timedelta(seconds=elapsed)
        _get_stats().timing(name, delta)
    except Exception as exc:
        log.debug("Request duration metric not sent: %s", exc)
