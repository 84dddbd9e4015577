"""The bulk operator's own arguments, checked once rendered (in ``execute()``, never in ``__init__``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_kibo_cancel.operators.deferral import deferral_problems

MAX_CONCURRENCY = 64


def order_limit(value: Any) -> int | None:
    """``max_orders`` as an int, or None for no limit; a template renders it as a string of digits."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        # A template renders None as the text 'None': that is refused rather than read as "no limit".
        hint = " (a template rendered None as text: pass max_orders=None itself)" if value == "None" else ""
        raise ValueError(
            f"max_orders must be an integer >= 1 (or a string of digits), or None for no limit; "
            f"got {value!r}{hint}"
        )
    return value


def bulk_settings_problems(
    *,
    max_concurrency: Any,
    requests_per_second: Any,
    progress_interval: Any,
    max_orders: Any,
    deferral: tuple[Any, Any, Any],
    flags: dict[str, Any],
) -> list[str]:
    """
    Every problem with the operator's arguments: ``deferral`` is (deferrable, defer_threshold,
    max_deferred_wait), ``flags`` the arguments that must be True or False, by name.
    """
    problems = []
    if not _is_int_in(max_concurrency, 1, MAX_CONCURRENCY):
        problems.append(
            f"max_concurrency must be an integer from 1 to {MAX_CONCURRENCY}, got {max_concurrency!r}"
        )
    if requests_per_second is not None and not _is_positive_number(requests_per_second):
        problems.append(f"requests_per_second must be a positive number or None, got {requests_per_second!r}")
    problems += deferral_problems(*deferral)
    if not _is_positive_number(progress_interval):
        problems.append(f"progress_interval must be a positive number of seconds, got {progress_interval!r}")
    problems += [
        f"{name} must be True or False, got {value!r}"
        for name, value in flags.items()
        if not isinstance(value, bool)
    ]
    try:
        order_limit(max_orders)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _is_int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value != float("inf")
    )
