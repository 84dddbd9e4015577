"""Several bulk tasks and a hundred mapped cancels at once on one tenant, each task its own process
(tests/integration/test_tenant_budget_airflow.py, tests/integration/test_tenant_budget_distributed.py)."""

from __future__ import annotations

from airflow.sdk import dag

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator
from airflow_provider_kibo_cancel.operators.cancel_order import CancelOrderOperator

BULK_TASKS, BULK_ORDERS = 3, 100
BULK_FIRST = 1
MAPPED_FIRST, MAPPED_ORDERS = 5001, 100


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_tenant_budget() -> None:
    for index in range(BULK_TASKS):
        first = BULK_FIRST + index * BULK_ORDERS
        BulkCancelOrdersOperator(
            task_id=f"bulk_{index}",
            orders=list(range(first, first + BULK_ORDERS)),
            disposition_reason="created_by_mistake",
            max_concurrency=4,
        )
    CancelOrderOperator.partial(task_id="mapped_cancel", disposition_reason="created_by_mistake").expand(
        order_id=list(range(MAPPED_FIRST, MAPPED_FIRST + MAPPED_ORDERS))
    )


kibo_tenant_budget()
