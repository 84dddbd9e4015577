"""Test DAG: CancelOrderOperator under injected faults; tests/unit/operators/test_cancel_order_faults.py
sets them up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_fault_injection() -> None:
    retry: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=1)}
    CancelOrderOperator(
        task_id="bad_request", order_id=1051, disposition_reason="created_by_mistake", **retry
    )
    CancelOrderOperator(
        task_id="rate_limited", order_id=1052, disposition_reason="created_by_mistake", **retry
    )
    CancelOrderOperator(
        task_id="applied_then_timed_out",
        order_id=1053,
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_short_timeout",
        **retry,
    )
    CancelOrderOperator(
        task_id="task_retry_after_applied",
        order_id=1054,
        disposition_reason="created_by_mistake",
        kibo_conn_id="kibo_short_timeout",
        **retry,
    )


kibo_fault_injection()
