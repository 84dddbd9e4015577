"""The provider's operators, and the one rule they share for failing a task."""

from __future__ import annotations

from airflow_provider_kibo_cancel._compat import AirflowFailException
from airflow_provider_kibo_cancel.exceptions import KiboError


def fail_task_unless_retryable(exc: KiboError) -> None:
    """Input, 400/403/404 and authentication errors fail the task without using Airflow's retries."""
    if not exc.retryable:
        # `from None`: the message already carries everything the KiboError knew (status, errorCode,
        # Kibo's message and items, order, correlation id); chaining would print it a second time above a
        # second traceback through the hook's internals. The KiboError stays reachable as __context__.
        raise AirflowFailException(str(exc)) from None
