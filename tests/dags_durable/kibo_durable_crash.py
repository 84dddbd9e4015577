"""A durable bulk run whose Celery worker's task process is SIGKILLed
(tests/integration/test_distributed.py)."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_durable_crash() -> None:
    BulkCancelOrdersOperator(
        task_id="cancel_orders",
        orders=list(range(1001, 1061)),
        disposition_reason="created_by_mistake",
        max_concurrency=4,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


kibo_durable_crash()
