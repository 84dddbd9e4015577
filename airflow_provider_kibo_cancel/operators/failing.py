"""The one rule both operators share for failing a task on a Kibo error."""

from __future__ import annotations

from airflow_provider_kibo_cancel._compat import AirflowFailException
from airflow_provider_kibo_cancel.exceptions import KiboError
from airflow_provider_kibo_cancel.operators.retry import is_kibo_retry_policy


def fail_task_unless_retryable(exc: KiboError, operator: object = None) -> None:
    """
    Input, 400/403/404 and authentication errors fail the task without using Airflow's retries.

    Where the operator has the Kibo retry policy (Airflow 3.3+), the policy fails them (the task fails
    with the Kibo error itself, and the policy's reason in its log); elsewhere they are raised as
    ``AirflowFailException``, which Airflow never retries.
    """
    if exc.retryable:
        return
    if _kibo_policy_decides(operator):
        # The Kibo error itself, its traceback starting here: the hook's internals are not repeated.
        raise exc.with_traceback(None) from None
    # `from None`: the message already carries everything the KiboError knew (status, errorCode, Kibo's
    # message and items, order, correlation id); chaining would print it a second time above a second
    # traceback through the hook's internals. The KiboError stays reachable as __context__.
    raise AirflowFailException(str(exc)) from None


def _kibo_policy_decides(operator: object) -> bool:
    if operator is None:
        return False

    return is_kibo_retry_policy(getattr(operator, "retry_policy", None))
