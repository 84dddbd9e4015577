"""Test DAGs: BulkCancelOrdersOperator in real Airflow; tests/unit/operators/test_bulk_cancel*.py run
them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_kibo_cancel.operators.bulk_cancel import BulkCancelOrdersOperator

MIXED: list[Any] = [
    1001,
    "1002",
    1002,  # duplicate
    {"order_id": 1003, "disposition_reason": "other", "disposition_other_reason": "Duplicate order"},
    "abc",  # invalid
    {"order_id": 1005, "disposition_reason": "Bad Reason"},  # invalid
    424242,  # unknown: failed with 404
    2001,  # canceled already
    {"order_id": 1004},
]


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_bulk_cancel() -> None:
    @task
    def find_orders() -> list[Any]:
        return MIXED

    BulkCancelOrdersOperator(
        task_id="mixed",
        orders=find_orders(),
        disposition_reason="created_by_mistake",
        fail_on_error=False,
    )
    BulkCancelOrdersOperator(
        task_id="from_conf",
        orders="{{ dag_run.conf['orders'] }}",
        disposition_reason="{{ dag_run.conf['reason'] }}",
        include_orders=True,
    )
    BulkCancelOrdersOperator(
        task_id="dry_run",
        orders=[1400, 1401, "x"],
        disposition_reason="other",
        disposition_other_reason="check",
        dry_run=True,
        fail_on_error=False,
    )
    BulkCancelOrdersOperator(
        task_id="fails_at_the_end",
        orders=[1500, 424243, 1501],
        disposition_reason="created_by_mistake",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_bulk_storm() -> None:
    """A 429 storm, in a DAG of its own: its 25 one-second pauses run beside the other DAG runs."""
    BulkCancelOrdersOperator(
        task_id="storm",
        orders=list(range(1100, 1300)),
        disposition_reason="customer_changed_mind",
        max_concurrency=8,
        progress_interval=0.5,
    )


@dag(schedule=None, catchup=False, tags=["test"])
def kibo_bulk_rerun() -> None:
    BulkCancelOrdersOperator(
        task_id="cancel", orders=list(range(1600, 1620)), disposition_reason="created_by_mistake"
    )


kibo_bulk_cancel()
kibo_bulk_storm()
kibo_bulk_rerun()
