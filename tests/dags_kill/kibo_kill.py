"""A bulk and a single cancel, each killed while it runs (tests/integration/test_scheduler.py sends the
SIGTERM)."""

from __future__ import annotations

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_kill() -> None:
    BulkCancelOrdersOperator(
        task_id="bulk",
        orders=list(range(1000, 1100)),
        disposition_reason="created_by_mistake",
        max_concurrency=2,
        progress_interval=1.0,
    )
    # Its cancel answers 503 every time: the task waits out a backoff when it is killed.
    CancelOrderOperator(task_id="single", order_id=3000, disposition_reason="created_by_mistake")


kibo_kill()
