"""Spending Kibo's long waits deferred (``deferrable=True``), shared by both operators.

A Kibo-requested wait longer than ``defer_threshold`` (or than the connection's ``max_retry_wait``) is
spent in the triggerer: the task frees its worker slot, :class:`KiboRetryAfterTrigger` fires when the
Retry-After has passed, and the task resumes on a worker, which sends whatever is left. The total time
spent deferred is bounded by ``max_deferred_wait``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_kibo_cancel.exceptions import KiboRateLimitError

if TYPE_CHECKING:
    from airflow_provider_kibo_cancel._compat import BaseOperator

#: Waits above this many seconds are deferred rather than slept: Kibo's documented 429 asks for 60 s, and
#: a defer/resume round trip costs a few seconds, so short waits are cheaper slept.
DEFAULT_DEFER_THRESHOLD = 30.0
#: The longest total a task spends deferred for Kibo (the longest Retry-After reported is an hour).
DEFAULT_MAX_DEFERRED_WAIT = 3600.0


def deferral_problems(deferrable: Any, defer_threshold: Any, max_deferred_wait: Any) -> list[str]:
    """The deferral settings' problems, checked in execute() like every other setting."""
    problems = []
    if not isinstance(deferrable, bool):
        problems.append(f"deferrable must be True or False, got {deferrable!r}")
    for name, value in (("defer_threshold", defer_threshold), ("max_deferred_wait", max_deferred_wait)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            problems.append(f"{name} must be a number of seconds >= 0, got {value!r}")
    return problems


def defer_until_kibo_accepts(
    operator: BaseOperator,
    *,
    wait: float,
    state: dict[str, Any],
    max_deferred_wait: float,
) -> NoReturn:
    """
    Defer ``operator`` for ``wait`` seconds, carrying ``state`` (its ``deferred_seconds`` included) to
    ``execute_complete``; or, when that would exceed ``max_deferred_wait`` in total, fail retryably.
    """
    # Only a deferring task needs the trigger: airflow.triggers.base costs ~5 ms of every parse (measured).
    from airflow_provider_kibo_cancel.triggers.retry_after import KiboRetryAfterTrigger  # noqa: PLC0415

    deferred = float(state.get("deferred_seconds", 0.0))
    if deferred + wait > max_deferred_wait:
        raise KiboRateLimitError(
            f"Kibo asked to wait {wait:.0f} s more (Retry-After); with {deferred:.0f} s deferred already, "
            f"that exceeds max_deferred_wait ({max_deferred_wait:g} s). Nothing more was sent. A task "
            "retry of a durable run (Airflow 3.3+) sends only what is left; before 3.3 it starts over, "
            "and an order canceled meanwhile (by this run too) is reported already_canceled"
        )
    # Here, not at the top: a DAG file's parse loads no metrics code (test_signals.py).
    from airflow_provider_kibo_cancel import metrics  # noqa: PLC0415

    metrics.deferral()
    resume_at = time.time() + wait
    operator.log.info(
        "Kibo asked to wait %.0f s (Retry-After): deferring until %s, the worker slot is free meanwhile",
        wait,
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(resume_at)),
    )
    operator.defer(
        trigger=KiboRetryAfterTrigger(
            resume_at=resume_at, state={**state, "deferred_seconds": deferred + wait}
        ),
        method_name="execute_complete",
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer raises TaskDeferred
