"""Test DAG: BulkCancelOrdersOperator's max_orders limit in real Airflow;
tests/unit/operators/test_bulk_cancel_max_orders.py drives it.

Each task cancels its own range of orders, so the emulator's record tells the tasks apart.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator

REASON = "created_by_mistake"
RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
}  # the limit must fail without using them


@dag(
    schedule=None,
    catchup=False,
    tags=["test"],
    params={"limit": Param(1, type="integer", minimum=1)},  # the test triggers with conf {"limit": 5}
)
def kibo_max_orders() -> None:
    BulkCancelOrdersOperator(
        task_id="over_limit",
        orders=[*range(10000, 10011), "bad", 10000],  # 11 to cancel, one invalid, one duplicate
        disposition_reason=REASON,
        max_orders=10,
        **RETRIES,
    )
    BulkCancelOrdersOperator(
        task_id="at_limit", orders=list(range(10100, 10110)), disposition_reason=REASON, max_orders=10
    )
    BulkCancelOrdersOperator(
        task_id="param_at_limit",
        orders=list(range(10200, 10205)),
        disposition_reason=REASON,
        max_orders="{{ params.limit }}",
    )
    BulkCancelOrdersOperator(
        task_id="param_over_limit",
        orders=list(range(10300, 10306)),
        disposition_reason=REASON,
        max_orders="{{ params.limit }}",
        **RETRIES,
    )

    @task
    def count_open_orders() -> dict[str, int]:
        return {"open_orders": 100}  # stands in for a warehouse count of the store's open orders

    # The relative guard the README describes: at most 5 % of the open orders, through the template.
    (
        BulkCancelOrdersOperator(
            task_id="share_over_limit",
            orders=list(range(10400, 10406)),
            disposition_reason=REASON,
            max_orders="{{ (ti.xcom_pull(task_ids='count_open_orders')['open_orders'] * 0.05) | int }}",
            **RETRIES,
        )
        << count_open_orders()
    )
    BulkCancelOrdersOperator(
        task_id="default_limit",  # 2001 orders, one more than the default
        orders=list(range(11000, 13001)),
        disposition_reason=REASON,
        **RETRIES,
    )
    BulkCancelOrdersOperator(
        task_id="no_limit",
        orders=list(range(13001, 15002)),
        disposition_reason=REASON,
        max_orders=None,
        max_concurrency=16,
    )
    BulkCancelOrdersOperator(
        task_id="dry_run_over_limit",
        orders=list(range(10500, 10503)),
        disposition_reason=REASON,
        max_orders=2,
        dry_run=True,
    )
    BulkCancelOrdersOperator(
        task_id="bad_limit",
        orders=list(range(10600, 10603)),
        disposition_reason=REASON,
        max_orders="{{ params.get('missing') }}",  # renders 'None'
        **RETRIES,
    )


kibo_max_orders()
